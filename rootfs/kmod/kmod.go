// Package kmod loads Linux kernel modules from files, the one thing the
// initramfs needs from modprobe.
//
// It does not resolve dependencies: the builder writes the initramfs module
// list already in load order (dependencies first), from the modules' .modinfo,
// so no modules.dep is needed at boot. Compressed modules (.ko.xz, .ko.zst,
// .ko.gz) are handed to the kernel to decompress when it can
// (MODULE_INIT_COMPRESSED_FILE, Linux 5.17+ with CONFIG_MODULE_DECOMPRESS
// for the kernel's own compression format), else decompressed here.
package kmod

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// moduleInitCompressedFile is MODULE_INIT_COMPRESSED_FILE from
// include/uapi/linux/module.h: finit_module decompresses the file itself.
const moduleInitCompressedFile = 4

// Name returns the kernel's name for the module file at path: the base name
// without .ko and compression suffix, with '-' spelled '_' as the kernel does
// (i6300esb.ko -> i6300esb, nls_cp437.ko.xz -> nls_cp437, virtio-rng.ko ->
// virtio_rng).
func Name(path string) string {
	base := filepath.Base(path)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

// Load loads the module file at path with parameters params (may be empty).
// A module that is already loaded is not an error: the kernel answers EEXIST
// and Load returns nil, so reloading a list is harmless.
func Load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module %s: %w", Name(path), err)
	}
	defer f.Close()

	compressed := isCompressed(path)
	flags := 0
	if compressed {
		flags = moduleInitCompressedFile
	}
	err = unix.FinitModule(int(f.Fd()), params, flags)
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	if !compressed {
		return fmt.Errorf("load module %s from %s: %w", Name(path), path, err)
	}
	// The kernel either predates the flag (EINVAL), was built without
	// in-kernel decompression (EOPNOTSUPP), or uses another format; its own
	// copy of the bytes is the fallback that always works.
	image, derr := decompress(f, path)
	if derr != nil {
		return fmt.Errorf("load module %s: kernel could not decompress it (%v) and neither could we: %w", Name(path), err, derr)
	}
	if err := unix.InitModule(image, params); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s from %s: %w", Name(path), path, err)
	}
	return nil
}

func isCompressed(path string) bool {
	return strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz")
}

func decompress(f *os.File, path string) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("unknown compression of %s", path)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
