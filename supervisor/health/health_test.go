package health

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUserChecksDecideByExitStatus(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string, mode os.FileMode) {
		os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), mode)
	}
	script("10-ok", "exit 0", 0o755)
	script("20-fails", "echo starting; echo 'app not ready' >&2; exit 3", 0o755)
	script("30-slow", "sleep 5", 0o755)
	script("40-not-executable", "exit 1", 0o644)
	script(".hidden", "exit 1", 0o755)
	checks, err := UserDir(dir, []string{"BULKHEAD_VERSION=2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != 3 {
		t.Fatalf("%d checks, want the 3 executables", len(checks))
	}
	c := Checker{Checks: checks, Timeout: 500 * time.Millisecond}
	rs := c.Run(context.Background(), false)
	if !rs[0].OK || rs[1].OK || rs[2].OK {
		t.Fatalf("results %+v", rs)
	}
	if !strings.Contains(rs[1].Detail, "app not ready") || !strings.Contains(rs[2].Detail, "in time") {
		t.Errorf("details %q / %q", rs[1].Detail, rs[2].Detail)
	}
	if Healthy(rs) || !strings.Contains(Failing(rs), "user:20-fails") {
		t.Errorf("Failing: %s", Failing(rs))
	}
	if cs, err := UserDir(filepath.Join(dir, "missing"), nil); err != nil || cs != nil {
		t.Errorf("missing directory: %v %v", cs, err)
	}
}

func TestDataWritable(t *testing.T) {
	dir := t.TempDir()
	if err := DataWritable(dir).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %d files behind", len(ents))
	}
	if os.Geteuid() != 0 {
		os.Chmod(dir, 0o500)
		if err := DataWritable(dir).Run(context.Background()); err == nil {
			t.Error("a read-only directory passed")
		}
	}
}

func TestNetworkNeedsADefaultRoute(t *testing.T) {
	dir := t.TempDir()
	hdr := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	without := filepath.Join(dir, "without")
	os.WriteFile(without, []byte(hdr+"eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"), 0o644)
	with := filepath.Join(dir, "with")
	os.WriteFile(with, []byte(hdr+"eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"), 0o644)
	if err := NetworkUp(context.Background(), without, ""); err == nil {
		t.Error("no default route passed")
	}
	if err := NetworkUp(context.Background(), with, ""); err != nil {
		t.Errorf("default route: %v", err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	if err := NetworkUp(context.Background(), with, l.Addr().String()); err != nil {
		t.Errorf("reachable target: %v", err)
	}
	c := Checker{Checks: []Check{Network(without, "")}}
	if rs := c.Run(context.Background(), false); !rs[0].OK {
		t.Error("the network check failed although the network was down before the update")
	}
	if rs := c.Run(context.Background(), true); rs[0].OK {
		t.Error("the network check passed without a route")
	}
}

func TestUnixSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	if err := UnixSocket("x", p).Run(context.Background()); err == nil {
		t.Fatal("a missing socket passed")
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := UnixSocket("x", p).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
