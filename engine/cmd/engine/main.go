// Command engine is Bulkhead's container engine: a daemon serving a
// subset of the Docker Engine API on a root-only unix socket, started by
// PID 1 on the device. The same binary, run as `engine shim <config>`, is
// the per-container shim the daemon starts.
//
// This file only parses flags and wires packages together; everything
// else lives in the engine/ packages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/api"
	"github.com/bulkhead-os/bulkhead/engine/apps"
	"github.com/bulkhead-os/bulkhead/engine/daemon"
	"github.com/bulkhead-os/bulkhead/engine/pull"
	"github.com/bulkhead-os/bulkhead/engine/shim"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "shim" {
		os.Exit(runShim(os.Args[2:]))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "engine:", err)
		os.Exit(1)
	}
}

func runShim(args []string) int {
	// One shim runs per container for its whole life: a single OS thread
	// for Go code and a tight heap keep each one small on a Pi Zero.
	goruntime.GOMAXPROCS(1)
	debug.SetGCPercent(20)
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: engine shim <config.json> (started by the engine, not by hand)")
		return 2
	}
	var cfg shim.Config
	data, err := os.ReadFile(args[0])
	if err == nil {
		err = json.Unmarshal(data, &cfg)
	}
	ready := os.NewFile(3, "ready")
	if err != nil {
		fmt.Fprintf(ready, "error shim config %s: %v\n", args[0], err)
		return 1
	}
	if err := shim.Run(&cfg, ready); err != nil {
		return 1
	}
	return 0
}

func defaultRunc() string {
	if p, err := exec.LookPath("runc"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/usr/sbin/runc"
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func run() error {
	var (
		root        = flag.String("root", "/data/engine", "data root: images, containers, volumes (on the data partition)")
		execRoot    = flag.String("exec-root", "/run/bulkhead", "run-time state (runc state, network namespaces, shim sockets) on a tmpfs")
		socket      = flag.String("socket", "/run/bulkhead/engine.sock", "unix socket of the Docker-compatible API (mode 0600, root only)")
		runc        = flag.String("runc", defaultRunc(), "path of the runc binary")
		platform    = flag.String("platform", pull.FormatPlatform(pull.DefaultPlatform()), "platform of pulled images, os/arch[/variant]")
		bridgeCIDR  = flag.String("bridge-cidr", "172.17.0.1/16", "gateway address and prefix of the default bridge")
		bridge      = flag.String("bridge", "bulkhead0", "name of the default bridge device")
		resolv      = flag.String("resolv-conf", "/etc/resolv.conf", "the device's resolver file (may be absent)")
		regConfig   = flag.String("registry-config", "", "docker config.json with registry credentials (default <root>/config.json)")
		logMaxSize  = flag.Int64("log-max-size", 10<<20, "bytes per container log file before rotation")
		logMaxFiles = flag.Int("log-max-files", 3, "container log files kept, current one included")
		appsFile    = flag.String("apps", apps.DefaultPath, "apps file (a Compose subset) the engine runs and keeps running; re-read on SIGHUP; \"\" for none")
		verbose     = flag.Bool("v", false, "log every API call and lifecycle step")
		showVersion = flag.Bool("version", false, "print the version and exit")
		dns         listFlag
		insecure    listFlag
	)
	flag.Var(&dns, "dns", "name servers for containers when the device has no usable one (comma-separated; default 8.8.8.8,8.8.4.4)")
	flag.Var(&insecure, "insecure-registry", "registry host:port reached over plain HTTP (repeatable; loopback and private addresses always are)")
	flag.Parse()
	if *showVersion {
		fmt.Println("engine", version)
		return nil
	}
	// Info: a line at start and one per action the engine takes on its
	// own (apps, restarts at boot); the device has no other way to tell.
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))

	p, err := pull.ParsePlatform(*platform)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary for the shim: %w", err)
	}
	if *regConfig == "" {
		*regConfig = *root + "/config.json"
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	d, err := daemon.New(ctx, daemon.Options{
		Root: *root, ExecRoot: *execRoot, Runc: *runc, Platform: p, BridgeName: *bridge, BridgeCIDR: *bridgeCIDR,
		DNS: dns, ResolvConf: *resolv, RegistryConfig: *regConfig, Insecure: insecure,
		LogMaxSize: *logMaxSize, LogMaxFiles: *logMaxFiles, Exe: exe, Version: version,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	l, err := api.Listen(*socket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api.New(d, version), ReadHeaderTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	slog.Info("engine: serving", "socket", *socket, "root", *root, "platform", *platform)
	// SIGHUP re-reads the apps file (and never kills the engine).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	appsDone := make(chan struct{})
	go func() {
		defer close(appsDone)
		if *appsFile != "" {
			(&apps.Reconciler{Engine: apps.Daemon(d), Path: *appsFile}).Run(ctx, reload)
		}
	}()
	// The reconciler finishes its current step before the daemon lets go
	// of the container records.
	defer func() { cancel(); <-appsDone }()
	select {
	case <-ctx.Done():
		// Containers keep running under their shims; the next engine
		// re-attaches (docker's live-restore, always on).
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
