package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func openTemp(t *testing.T) *Cache {
	t.Helper()
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leftovers lists every file under the cache that is not a published entry.
func leftovers(t *testing.T, c *Cache) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(c.Root(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestDefaultRootFollowsEnvironmentPrecedence(t *testing.T) {
	t.Setenv("BULKHEAD_CACHE", "/x/bulk")
	t.Setenv("XDG_CACHE_HOME", "/x/xdg")
	t.Setenv("HOME", "/x/home")
	if got := DefaultRoot(); got != "/x/bulk" {
		t.Errorf("with BULKHEAD_CACHE: got %q", got)
	}
	t.Setenv("BULKHEAD_CACHE", "")
	if got := DefaultRoot(); got != "/x/xdg/bulkhead" {
		t.Errorf("with XDG_CACHE_HOME: got %q", got)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	if got := DefaultRoot(); got != "/x/home/.cache/bulkhead" {
		t.Errorf("with only HOME: got %q", got)
	}
}

func TestPutThenPathReturnsTheContent(t *testing.T) {
	c := openTemp(t)
	data := []byte("a Debian package, more or less")
	d := digestOf(data)
	if _, ok := c.Path(d); ok {
		t.Fatal("empty cache claims to hold the entry")
	}
	p, err := c.Put(d, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	p2, ok := c.Path(d)
	if !ok || p2 != p {
		t.Fatalf("Path after Put = %q, %v; want %q, true", p2, ok, p)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, data) {
		t.Fatalf("stored %q, want %q", got, data)
	}
	if err := c.Verify(d); err != nil {
		t.Fatalf("Verify of a good entry: %v", err)
	}
	if l := leftovers(t, c); len(l) != 0 {
		t.Fatalf("temporary files left behind: %v", l)
	}
}

func TestPutRefusesContentThatDoesNotMatchTheDigest(t *testing.T) {
	c := openTemp(t)
	want := digestOf([]byte("expected"))
	_, err := c.Put(want, strings.NewReader("something else"))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if _, ok := c.Path(want); ok {
		t.Fatal("mismatching content was stored")
	}
	if l := leftovers(t, c); len(l) != 0 {
		t.Fatalf("temporary files left behind: %v", l)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

func TestPutLeavesNothingWhenTheReaderFails(t *testing.T) {
	c := openTemp(t)
	d := digestOf([]byte("whatever"))
	_, err := c.Put(d, &failingReader{n: 100})
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v, want the reader's error", err)
	}
	if _, ok := c.Path(d); ok {
		t.Fatal("partial content was stored")
	}
	if l := leftovers(t, c); len(l) != 0 {
		t.Fatalf("temporary files left behind: %v", l)
	}
}

func TestDigestsThatAreNotPathSafeAreRefused(t *testing.T) {
	c := openTemp(t)
	for _, d := range []string{"", "abc", "../../../../etc/passwd", strings.Repeat("A", 64), strings.Repeat("g", 64)} {
		if _, ok := c.Path(d); ok {
			t.Errorf("Path(%q) claims presence", d)
		}
		if _, err := c.Put(d, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) succeeded", d)
		}
	}
}

func TestVerifyDeletesACorruptEntry(t *testing.T) {
	c := openTemp(t)
	data := []byte("original bytes")
	d := digestOf(data)
	p, err := c.Put(d, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("flipped bytes!"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = c.Verify(d)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("Verify = %v, want a corrupt error that says the entry was deleted", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("corrupt entry still present: %v", err)
	}
	if err := c.Verify(d); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Verify of a missing entry = %v, want fs.ErrNotExist", err)
	}
}

func TestEmptyFileIsNotAHit(t *testing.T) {
	c := openTemp(t)
	d := digestOf([]byte("x"))
	p := c.blobPath(d)
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, nil, 0o644)
	if _, ok := c.Path(d); ok {
		t.Fatal("a zero-length file counts as present")
	}
}

func TestConcurrentPutsOfTheSameContentAllSucceed(t *testing.T) {
	c := openTemp(t)
	data := bytes.Repeat([]byte("bulkhead"), 1<<16)
	d := digestOf(data)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Put(d, bytes.NewReader(data))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Verify(d); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, c); len(l) != 0 {
		t.Fatalf("temporary files left behind: %v", l)
	}
}

func TestPutDirPublishesACompleteTree(t *testing.T) {
	c := openTemp(t)
	if _, ok := c.Dir("deb", "k1"); ok {
		t.Fatal("empty cache claims to hold a tree")
	}
	p, err := c.PutDir("deb", "k1", func(tmp string) error {
		if err := os.MkdirAll(filepath.Join(tmp, "usr", "bin"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, "usr", "bin", "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			return err
		}
		// Read-only directories are normal in extracted packages.
		return os.Chmod(filepath.Join(tmp, "usr", "bin"), 0o555)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(p, "usr", "bin"), 0o755) })
	p2, ok := c.Dir("deb", "k1")
	if !ok || p2 != p {
		t.Fatalf("Dir = %q, %v; want %q, true", p2, ok, p)
	}
	if _, err := os.Stat(filepath.Join(p, "usr", "bin", "tool")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	if _, err := c.PutDir("deb", "k1", func(string) error { calls++; return nil }); err != nil || calls != 0 {
		t.Fatalf("PutDir of a present tree: err=%v, build called %d times; want no rebuild", err, calls)
	}
}

func TestPutDirStoresNothingWhenBuildFails(t *testing.T) {
	c := openTemp(t)
	_, err := c.PutDir("deb", "k2", func(tmp string) error {
		os.MkdirAll(filepath.Join(tmp, "ro"), 0o755)
		os.WriteFile(filepath.Join(tmp, "ro", "f"), []byte("x"), 0o644)
		os.Chmod(filepath.Join(tmp, "ro"), 0o555)
		return fmt.Errorf("truncated archive")
	})
	if err == nil || !strings.Contains(err.Error(), "truncated archive") {
		t.Fatalf("err = %v, want the build error", err)
	}
	if _, ok := c.Dir("deb", "k2"); ok {
		t.Fatal("failed build was published")
	}
	if l := leftovers(t, c); len(l) != 0 {
		t.Fatalf("temporary trees left behind: %v", l)
	}
}

func TestConcurrentPutDirOfTheSameKeyKeepsOneTree(t *testing.T) {
	c := openTemp(t)
	var wg sync.WaitGroup
	start := make(chan struct{})
	paths := make([]string, 8)
	errs := make([]error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = c.PutDir("deb", "same", func(tmp string) error {
				<-start // make every builder reach the rename together
				return os.WriteFile(filepath.Join(tmp, "who"), []byte(fmt.Sprint(i)), 0o644)
			})
		}()
	}
	close(start)
	wg.Wait()
	for i := range 8 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if paths[i] != paths[0] {
			t.Fatalf("builders got different trees: %q vs %q", paths[i], paths[0])
		}
	}
	if l := leftovers(t, c); len(l) != 0 {
		t.Fatalf("temporary trees left behind: %v", l)
	}
}

func TestTreeNamesMustBeSinglePathComponents(t *testing.T) {
	c := openTemp(t)
	for _, kv := range [][2]string{{"", "k"}, {"deb", ""}, {"..", "k"}, {"deb", "a/b"}, {"deb", ".tmp-x"}} {
		if _, err := c.PutDir(kv[0], kv[1], func(string) error { return nil }); err == nil {
			t.Errorf("PutDir(%q, %q) succeeded", kv[0], kv[1])
		}
		if _, ok := c.Dir(kv[0], kv[1]); ok {
			t.Errorf("Dir(%q, %q) claims presence", kv[0], kv[1])
		}
	}
}

var _ io.Reader = (*failingReader)(nil)
