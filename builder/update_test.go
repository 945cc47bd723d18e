package main

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/google/go-containerregistry/pkg/registry"
)

// deployDir writes bundles of board x86_64 for versions into src/deploy.
func deployDir(t *testing.T, versions ...string) string {
	t.Helper()
	src := t.TempDir()
	dir := filepath.Join(src, "deploy", "x86_64")
	os.MkdirAll(dir, 0o755)
	_, priv := bundletest.DevKey(t)
	for _, v := range versions {
		m := bundletest.Manifest("x86_64", v)
		m.Arch = "amd64"
		b, _ := bundletest.Make(t, m, bundletest.Image(8<<10, 1), priv)
		if err := os.WriteFile(filepath.Join(dir, "bulkhead-x86_64-"+v+".bundle"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

func TestDeployedBundleIsTheVersionAskedForOrTheNewest(t *testing.T) {
	src := deployDir(t, "1.9.0", "1.10.0", "1.10.0-rc.1")
	p, err := deployedBundle(src, "x86_64", "", "")
	if err != nil || filepath.Base(p) != "bulkhead-x86_64-1.10.0.bundle" {
		t.Fatalf("newest: %s, %v; want 1.10.0", p, err)
	}
	p, err = deployedBundle(src, "x86_64", "1.9.0", "")
	if err != nil || filepath.Base(p) != "bulkhead-x86_64-1.9.0.bundle" {
		t.Fatalf("version 1.9.0: %s, %v", p, err)
	}
	if _, err := deployedBundle(src, "x86_64", "2.0.0", ""); err == nil || !strings.Contains(err.Error(), "make image BOARD=x86_64 VERSION=2.0.0") {
		t.Fatalf("missing version: %v, want a hint to build it", err)
	}
	if _, err := deployedBundle(src, "raspberrypi3", "", ""); err == nil {
		t.Fatal("a board without bundles gave one")
	}
	if p, _ := deployedBundle(src, "", "", "/x.bundle"); p != "/x.bundle" {
		t.Fatalf("-bundle not used: %s", p)
	}
}

func TestPublishPushesTheBoardsEntry(t *testing.T) {
	src := deployDir(t, "2.0.0")
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref := strings.TrimPrefix(reg.URL, "http://") + "/fleet/os:stable"
	if err := run(context.Background(), []string{"publish", "-src", src, "-board", "x86_64", "-ref", ref}); err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.Resolve(context.Background(), ref, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if pub.Manifest.Version != "2.0.0" || pub.Manifest.Board != "x86_64" {
		t.Fatalf("published %+v", pub.Manifest)
	}
}

func TestUpdateNeedsADeviceAndAToken(t *testing.T) {
	t.Setenv("DEVICE", "")
	t.Setenv("BULKHEAD_TOKEN", "")
	if err := run(context.Background(), []string{"update", "-board", "x86_64"}); err == nil || !strings.Contains(err.Error(), "-device") {
		t.Fatalf("without a device: %v", err)
	}
	if err := run(context.Background(), []string{"update", "-board", "x86_64", "-device", "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "BULKHEAD_TOKEN") {
		t.Fatalf("without a token: %v", err)
	}
}
