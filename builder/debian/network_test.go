package debian

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/cache"
)

// realArchive opens the host-configured mirror (or BULKHEAD_DEBIAN_MIRROR).
// These tests are skipped with -short and when no mirror is configured.
// They use BULKHEAD_CACHE when set, so repeated runs reuse downloads, and a
// throwaway cache otherwise.
func realArchive(t *testing.T) *Archive {
	t.Helper()
	if testing.Short() {
		t.Skip("network test skipped with -short")
	}
	srcs, err := SourcesFor("/", "bookworm", os.Getenv(MirrorEnv))
	if err != nil {
		t.Skipf("no Debian mirror configured on this host: %v", err)
	}
	root := os.Getenv("BULKHEAD_CACHE")
	if root == "" {
		root = t.TempDir()
	}
	c, err := cache.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(context.Background(), Config{Sources: srcs, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var arm64Index struct {
	ix  *Index
	err error
}

func realIndex(t *testing.T) *Index {
	t.Helper()
	a := realArchive(t)
	if arm64Index.ix == nil && arm64Index.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		arm64Index.ix, arm64Index.err = a.Index(ctx, "arm64", []string{"main", "non-free-firmware"})
	}
	if errors.Is(arm64Index.err, ErrUnreachable) {
		t.Skipf("mirror unreachable: %v", arm64Index.err)
	}
	if arm64Index.err != nil {
		t.Fatal(arm64Index.err)
	}
	return arm64Index.ix
}

func TestRealArm64IndexResolvesTheKernelAndRuncClosure(t *testing.T) {
	ix := realIndex(t)
	t.Logf("%d packages from %s", ix.Len(), strings.Join(ix.Searched, "; "))
	k, err := ix.Resolve("linux-image-arm64")
	if err != nil {
		t.Fatal(err)
	}
	if k.Architecture != "arm64" || !strings.Contains(k.Depends, "linux-image-6.1") {
		t.Errorf("linux-image-arm64 = %+v, want an arm64 meta package depending on a 6.1 image", k)
	}
	fw, err := ix.Resolve("raspi-firmware")
	if err != nil {
		t.Fatal(err)
	}
	if fw.Component != "non-free-firmware" {
		t.Errorf("raspi-firmware came from %s, want non-free-firmware", fw.Component)
	}
	pkgs, err := ix.Closure([]string{"runc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pkgs {
		names = append(names, p.Name)
	}
	t.Logf("Closure(runc) = %v", names)
	for _, want := range []string{"runc", "libc6", "libseccomp2", "libgcc-s1", "gcc-12-base"} {
		if !slices.Contains(names, want) {
			t.Errorf("Closure(runc) = %v, missing %s", names, want)
		}
	}
	if len(names) > 12 {
		t.Errorf("Closure(runc) has %d packages, expected a handful: %v", len(names), names)
	}
	if _, err := ix.Resolve("no-such-package-bulkhead"); err == nil || !strings.Contains(err.Error(), "arm64") || !strings.Contains(err.Error(), "bookworm") {
		t.Errorf("unknown package error = %v, want it to name the arch and suites", err)
	}
}

func TestRealFetchAndExtractOfASmallPackage(t *testing.T) {
	ix := realIndex(t)
	p, err := ix.Resolve("libseccomp2")
	if err != nil {
		t.Fatal(err)
	}
	a := realArchive(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deb, err := a.Fetch(ctx, p.Pin())
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := Control(deb)
	if err != nil {
		t.Fatal(err)
	}
	if ctl["Package"] != "libseccomp2" || ctl["Version"] != p.Version {
		t.Errorf("control = %v, want libseccomp2 %s", ctl, p.Version)
	}
	dest := t.TempDir()
	entries, err := Extract(deb, dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		if strings.HasPrefix(e.Path, "usr/lib/aarch64-linux-gnu/libseccomp.so.2") {
			found = true
			if _, err := os.Lstat(filepath.Join(dest, e.Path)); err != nil {
				t.Error(err)
			}
		}
	}
	if !found {
		t.Errorf("no libseccomp.so.2 among %d entries", len(entries))
	}
	if lic := Licenses(dest, "libseccomp2"); len(lic) == 0 {
		t.Errorf("no licenses found in libseccomp2's copyright")
	} else {
		t.Logf("libseccomp2 licenses: %v", lic)
	}
}
