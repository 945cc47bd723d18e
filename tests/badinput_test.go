package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/ext4"
	"github.com/bulkhead-os/bulkhead/builder/image"
	"github.com/bulkhead-os/bulkhead/builder/lock"
)

// noOutputs fails when a failed build left anything in its deploy directory.
func noOutputs(t *testing.T, cfg image.Config) {
	t.Helper()
	entries, err := os.ReadDir(cfg.OutDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("a failed build left %s in %s", e.Name(), cfg.OutDir)
	}
}

// seededCache makes a private cache holding the board's .debs (hard links to
// the user cache) except those named in skip.
func seededCache(t *testing.T, lf *lock.File, skip string) *cache.Cache {
	t.Helper()
	user := userCache(t)
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lf.Packages {
		if p.Name == skip {
			continue
		}
		src, ok := user.Path(p.SHA256)
		if !ok {
			t.Fatalf("%s is not in the user cache", p.Name)
		}
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Put(p.SHA256, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestBadInputGivesAClearErrorAndNoOutputs(t *testing.T) {
	buildOnce(t, "raspberrypi3") // warms the user cache
	b := loadBoard(t, "raspberrypi3")
	lf, err := lock.Read(filepath.Join(srcDir(t), "boards", "raspberrypi3.lock"))
	if err != nil {
		t.Fatal(err)
	}
	unreachable := []debian.Source{{URI: "http://127.0.0.1:9/debian", Suites: []string{"bookworm"}, Components: []string{"main"}}}

	t.Run("a corrupt cached download", func(t *testing.T) {
		cfg := buildConfig(t, b, t.TempDir(), testVersion)
		cfg.Cache = seededCache(t, lf, "")
		kernel := lf.Packages[0]
		path, _ := cfg.Cache.Path(kernel.SHA256)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("garbage"), 4096)
		f.Close()
		cfg.Sources = unreachable
		_, err = image.Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), kernel.Name) || !strings.Contains(strings.ToLower(err.Error()), "corrupt") {
			t.Fatalf("err = %v, want it to name %s and say the file is corrupt", err, kernel.Name)
		}
		noOutputs(t, cfg)
	})

	t.Run("a download whose checksum does not match the lock file", func(t *testing.T) {
		cfg := buildConfig(t, b, t.TempDir(), testVersion)
		bad := *lf
		bad.Packages = append([]lock.Pin(nil), lf.Packages...)
		var victim string
		for i, p := range bad.Packages {
			if p.Name == "u-boot-rpi" {
				bad.Packages[i].SHA256 = strings.Repeat("ab", 32)
				victim = p.Name
			}
		}
		cfg.LockFile = filepath.Join(t.TempDir(), "raspberrypi3.lock")
		if err := bad.Write(cfg.LockFile); err != nil {
			t.Fatal(err)
		}
		cfg.Cache = seededCache(t, lf, victim)
		_, err := image.Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), victim) || !strings.Contains(strings.ToLower(err.Error()), "sha256") {
			t.Fatalf("err = %v, want a SHA-256 mismatch naming %s", err, victim)
		}
		noOutputs(t, cfg)
		if _, ok := cfg.Cache.Path(bad.Packages[len(bad.Packages)-1].SHA256); ok && victim == bad.Packages[len(bad.Packages)-1].Name {
			t.Error("the mismatching download was kept in the cache")
		}
	})

	t.Run("an unreachable mirror with a cold cache", func(t *testing.T) {
		cfg := buildConfig(t, b, t.TempDir(), testVersion)
		c, err := cache.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Cache = c
		cfg.Sources = unreachable
		_, err = image.Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") || !strings.Contains(strings.ToLower(err.Error()), "reach") {
			t.Fatalf("err = %v, want it to say the mirror cannot be reached", err)
		}
		noOutputs(t, cfg)
	})

	t.Run("a missing host tool", func(t *testing.T) {
		cfg := buildConfig(t, b, t.TempDir(), testVersion)
		// A PATH with Go and the basics but without e2fsprogs.
		bin := t.TempDir()
		for _, tool := range []string{"go", "xz", "cp", "dd"} {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("PATH", bin)
		saved := ext4.ToolDirs
		ext4.ToolDirs = nil
		t.Cleanup(func() { ext4.ToolDirs = saved })
		_, err := image.Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "mke2fs") || !strings.Contains(err.Error(), "e2fsprogs") {
			t.Fatalf("err = %v, want it to name mke2fs and the package e2fsprogs", err)
		}
		noOutputs(t, cfg)
	})

	t.Run("an unknown board", func(t *testing.T) {
		cmd := exec.Command("go", "run", "./builder", "image", "-board", "nonesuch")
		cmd.Dir = srcDir(t)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `unknown board "nonesuch"`) || !strings.Contains(string(out), "raspberrypi3") {
			t.Fatalf("err = %v, output:\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(srcDir(t), "deploy", "nonesuch")); err == nil {
			t.Error("an unknown board created deploy/nonesuch")
		}
	})
}
