// Command supervisor is Bulkhead's on-device daemon: host-OS updates,
// health checks, commit or rollback, the device API and basic networking.
// PID 1 starts it from /etc/bulkhead/services.json and restarts it if it
// exits. All the work is in package daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead-os/bulkhead/rootfs/blockdev"
	"github.com/bulkhead-os/bulkhead/supervisor/daemon"
)

func main() {
	var (
		verbose   = flag.Bool("v", false, "log debug detail")
		socket    = flag.String("socket", "", "device API socket (default /run/bulkhead/supervisor.sock)")
		stateDir  = flag.String("state-dir", "", "update state directory (default /data/supervisor)")
		noNetwork = flag.Bool("no-network", false, "do not configure the network (lo, hostname, DHCP/static)")
		noClock   = flag.Bool("no-clock", false, "do not move the clock forward to the build time")
		// Paths of a running device; tests and benchmarks point them
		// at loop devices and temporary files.
		release = flag.String("release", "", "release.json (default /etc/bulkhead/release.json)")
		keysDir = flag.String("keys", "", "trusted public keys directory (default /etc/bulkhead/keys)")
		config  = flag.String("config", "", "device config (default /boot/firmware/bulkhead/device.yaml)")
		cmdline = flag.String("cmdline", "", "kernel command line file (default /proc/cmdline)")
		devDir  = flag.String("dev", "", "device node directory (default /dev)")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := daemon.Run(ctx, daemon.Options{
		Socket:       *socket,
		StateDir:     *stateDir,
		Network:      !*noNetwork,
		SetClock:     !*noClock,
		Release:      *release,
		KeysDir:      *keysDir,
		DeviceConfig: *config,
		Cmdline:      *cmdline,
		Sysfs:        blockdev.Sysfs{Dev: *devDir},
		Log:          log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "supervisor:", err)
		os.Exit(1)
	}
}
