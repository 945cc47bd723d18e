package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/update"
)

// subcommands are the builder commands that parse their own flags,
// registered by the files that implement them (update, publish).
var subcommands = map[string]func(ctx context.Context, args []string) error{}

func init() { subcommands["update"] = updateCmd }

// updateCmd uploads a board's bundle to a device and follows the update
// to its outcome (make update BOARD=<b> DEVICE=<host>):
//
//	builder update -board raspberrypi3 -device 192.168.1.50 [-version v | -bundle f] [-token t] [-force]
//
// The device decides: it verifies, installs, reboots into the trial,
// checks its health and commits or rolls back; this only reports.
func updateCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	board := fs.String("board", os.Getenv("BOARD"), "board whose deploy/<board>/ bundle to send")
	version := fs.String("version", "", "version of the bundle in deploy/<board>/ (default: the newest there)")
	path := fs.String("bundle", "", "bundle file to send instead of deploy/<board>/")
	src := fs.String("src", ".", "root of the Bulkhead source tree")
	device := fs.String("device", os.Getenv("DEVICE"), "device API address: host, host:port (port 7070) or http://host:port")
	token := fs.String("token", os.Getenv("BULKHEAD_TOKEN"), "api.token of the device's device.yaml (default $BULKHEAD_TOKEN)")
	force := fs.Bool("force", false, "allow a downgrade or reinstalling the running version")
	timeout := fs.Duration("timeout", 15*time.Minute, "how long to follow the device (install, reboots, health checks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *device == "" {
		return errors.New("update: no device: pass -device <host> (make update DEVICE=<host>)")
	}
	if *token == "" {
		return errors.New("update: no API token: pass -token or set BULKHEAD_TOKEN to the api.token of the device's bulkhead/device.yaml")
	}
	p, err := deployedBundle(*src, *board, *version, *path)
	if err != nil {
		return err
	}
	o, err := update.Push(ctx, update.Options{Device: *device, Token: *token, Bundle: p, Force: *force, Timeout: *timeout, Out: os.Stdout})
	if err != nil {
		return err
	}
	fmt.Printf("%s now runs %s\n", *device, o.ToVersion)
	return nil
}

// deployedBundle returns path if set, else the bundle of board and version
// in deploy/<board>/, else the newest version there.
func deployedBundle(src, board, version, path string) (string, error) {
	if path != "" {
		return path, nil
	}
	if board == "" {
		return "", errors.New("no board given: use -board (or BOARD=), or -bundle <file>")
	}
	dir := filepath.Join(src, "deploy", board)
	if version != "" {
		p := filepath.Join(dir, fmt.Sprintf("bulkhead-%s-%s.bundle", board, version))
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: build it first (make image BOARD=%s VERSION=%s)", err, board, version)
		}
		return p, nil
	}
	found, _ := filepath.Glob(filepath.Join(dir, "*.bundle"))
	if len(found) == 0 {
		return "", fmt.Errorf("no bundle in %s: build one first (make image BOARD=%s)", dir, board)
	}
	type cand struct {
		path, version string
	}
	var cs []cand
	for _, p := range found {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		m, _, err := bundle.Inspect(f)
		f.Close()
		if err == nil {
			cs = append(cs, cand{p, m.Version})
		}
	}
	if len(cs) == 0 {
		return "", fmt.Errorf("no readable bundle in %s", dir)
	}
	sort.SliceStable(cs, func(i, j int) bool {
		c, err := bundle.CompareVersions(cs[i].version, cs[j].version)
		if err != nil {
			return strings.Compare(cs[i].version, cs[j].version) > 0
		}
		return c > 0
	})
	return cs[0].path, nil
}
