package kmod

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestName(t *testing.T) {
	for path, want := range map[string]string{
		"kernel/drivers/watchdog/i6300esb.ko":    "i6300esb",
		"kernel/fs/nls/nls_cp437.ko.xz":          "nls_cp437",
		"kernel/drivers/char/hw_random/x-y.ko":   "x_y",
		"kernel/drivers/block/virtio_blk.ko.zst": "virtio_blk",
		"crc16.ko.gz":                            "crc16",
	} {
		if got := Name(path); got != want {
			t.Errorf("Name(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestDecompressEachFormatTheBuilderMayShip(t *testing.T) {
	elf := append([]byte("\x7fELF"), bytes.Repeat([]byte("module body "), 1000)...)
	compressors := map[string]func(io.Writer) io.WriteCloser{
		".ko.xz": func(w io.Writer) io.WriteCloser {
			xw, err := xz.NewWriter(w)
			if err != nil {
				t.Fatal(err)
			}
			return xw
		},
		".ko.zst": func(w io.Writer) io.WriteCloser {
			zw, err := zstd.NewWriter(w)
			if err != nil {
				t.Fatal(err)
			}
			return zw
		},
		".ko.gz": func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) },
	}
	for ext, newWriter := range compressors {
		t.Run(ext, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mod"+ext)
			var buf bytes.Buffer
			w := newWriter(&buf)
			w.Write(elf)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := decompress(f, path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, elf) {
				t.Errorf("decompressed %d bytes, want the %d-byte original", len(got), len(elf))
			}
		})
	}
}

func TestLoadReportsTheModuleThatFailed(t *testing.T) {
	// Not a module: the kernel refuses it (ENOEXEC), or has no module support
	// at all (ENOSYS) on hosts like the CI virtual machine. Either way nothing
	// is loaded into the test host.
	path := filepath.Join(t.TempDir(), "not-a-module.ko")
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Load(path, "")
	if err == nil || !strings.Contains(err.Error(), "not_a_module") {
		t.Fatalf("Load(garbage) = %v, want an error naming not_a_module", err)
	}
	if err := Load(filepath.Join(t.TempDir(), "missing.ko"), ""); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}
