package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

type entry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func tarOf(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return &buf
}

func TestExtractWritesFilesLinksAndModes(t *testing.T) {
	dir := t.TempDir()
	st, err := Extract(tarOf(t,
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/app", typ: tar.TypeReg, mode: 0o4755, body: "binary"},
		entry{name: "bin/sh", typ: tar.TypeSymlink, link: "/bin/app"},
		entry{name: "bin/hard", typ: tar.TypeLink, link: "bin/app"},
		entry{name: "./etc/conf", typ: tar.TypeReg, body: "x=1"},
	), dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != 9 || st.Entries != 5 {
		t.Errorf("stats = %+v, want 9 bytes in 5 entries", st)
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/app"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/app mode = %v, %v; want setuid 0755", fi.Mode(), err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/sh")); l != "/bin/app" {
		t.Errorf("bin/sh -> %q", l)
	}
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(dir, "bin/app"), &a)
	unix.Stat(filepath.Join(dir, "bin/hard"), &b)
	if a.Ino != b.Ino {
		t.Errorf("hardlink does not share the inode")
	}
}

func TestExtractTurnsOCIWhiteoutsIntoOverlayWhiteouts(t *testing.T) {
	dir := t.TempDir()
	_, err := Extract(tarOf(t,
		entry{name: "etc/.wh.removed", typ: tar.TypeReg},
		entry{name: "var/cache/.wh..wh..opq", typ: tar.TypeReg},
	), dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "etc/removed"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout is mode %o rdev %d, want a 0/0 character device", st.Mode, st.Rdev)
	}
	val := make([]byte, 4)
	n, err := unix.Getxattr(filepath.Join(dir, "var/cache"), "trusted.overlay.opaque", val)
	if err != nil || string(val[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", val[:n], err)
	}
}

func TestExtractRefusesLayersThatEscape(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
	}{
		{"a file named with ../ climbing out", []entry{{name: "../../outside/pwned", typ: tar.TypeReg, body: "x"}}},
		{"a ../ hidden in the middle of a path", []entry{{name: "a/../../outside/pwned", typ: tar.TypeReg, body: "x"}}},
		{"a relative symlink pointing above the root", []entry{{name: "link", typ: tar.TypeSymlink, link: "../outside"}}},
		{"a nested symlink climbing further than its depth", []entry{{name: "a/b/link", typ: tar.TypeSymlink, link: "../../../outside"}}},
		{"a hardlink to a path above the root", []entry{{name: "hard", typ: tar.TypeLink, link: "../outside/secret"}}},
		{"a whiteout that climbs out", []entry{{name: "../outside/.wh.secret", typ: tar.TypeReg}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			os.Mkdir(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "secret"), []byte("keep"), 0o644)
			root := filepath.Join(base, "layers", "l1")
			os.MkdirAll(root, 0o755)
			_, err := Extract(tarOf(t, tc.entries...), root)
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("err = %v, want ErrUnsafe", err)
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 {
				t.Errorf("outside dir now holds %d entries, want only the original", len(ents))
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "keep" {
				t.Errorf("outside file changed to %q", b)
			}
		})
	}
}

func TestExtractKeepsWritesThroughAbsoluteSymlinksInside(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o755)
	root := filepath.Join(base, "root")
	os.Mkdir(root, 0o755)
	// An absolute symlink is legal (it resolves in the container's root at
	// run time), but writing "through" it must stay inside the layer.
	_, err := Extract(tarOf(t,
		entry{name: "escape", typ: tar.TypeSymlink, link: outside},
		entry{name: "escape/pwned", typ: tar.TypeReg, body: "x"},
		entry{name: "up", typ: tar.TypeSymlink, link: "/"},
		entry{name: "up/etc/pwned", typ: tar.TypeReg, body: "y"},
	), root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Fatal("a write followed an absolute symlink out of the layer")
	}
	if _, err := os.Stat(filepath.Join(root, outside, "pwned")); err != nil {
		t.Errorf("write through the symlink should land inside the layer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/pwned")); err != nil {
		t.Errorf("write through / should land at the layer root: %v", err)
	}
}

func TestEscapes(t *testing.T) {
	tests := []struct {
		dir, target string
		want        bool
	}{
		{".", "a/b", false},
		{".", "../a", true},
		{"a", "../b", false},
		{"a", "../../b", true},
		{"a/b", "./../../c", false},
		{"a/b", "../../../c", true},
		{".", "/etc/passwd", false},
		{"a", "b/../../..", true},
	}
	for _, tc := range tests {
		if got := escapes(tc.dir, tc.target); got != tc.want {
			t.Errorf("escapes(%q, %q) = %v, want %v", tc.dir, tc.target, got, tc.want)
		}
	}
}

func FuzzExtract(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../x"})
	tw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		os.Mkdir(root, 0o755)
		Extract(bytes.NewReader(data), root)
		ents, _ := os.ReadDir(base)
		if len(ents) != 1 {
			t.Fatalf("extraction created %d entries beside the root", len(ents)-1)
		}
	})
}
