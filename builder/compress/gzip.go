// Package compress owns every compressed byte stream the builder writes: the
// gzip kernel Image and initramfs, the optional zstd initramfs, and the .xz
// of the disk image. Each output is a pure function of its input, so two
// builds of the same inputs are byte-identical.
//
// It must not decide what gets compressed or where outputs go (the image
// package does), and it must not embed names, timestamps or host details in
// any header.
package compress

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// NewGzipWriter returns a gzip writer at the best compression level whose
// header carries no file name, no comment and a zero modification time; the
// OS byte is the library's fixed "unknown" (255). Callers must Close it.
//
// The best level is worth its time here: U-Boot copies the kernel from an SD
// card (slow in QEMU and on real boards), and the output is read many times.
func NewGzipWriter(w io.Writer) (*gzip.Writer, error) {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("gzip writer: %w", err)
	}
	// The zero Header is already reproducible; set it explicitly so that a
	// library default change cannot smuggle a time or name into the output.
	zw.Header = gzip.Header{OS: 255}
	return zw, nil
}

// Gzip compresses src into dst deterministically (see NewGzipWriter).
func Gzip(dst io.Writer, src io.Reader) error {
	zw, err := NewGzipWriter(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(zw, src); err != nil {
		zw.Close()
		return fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	return nil
}

// NewZstdWriter returns a deterministic zstd writer for initramfs archives.
// One encoder goroutine keeps the frame layout independent of the host's CPU
// count; the 8 MiB window stays within what the kernel's boot-time
// decompressor allocates comfortably on a 512 MiB board.
func NewZstdWriter(w io.Writer) (*zstd.Encoder, error) {
	zw, err := zstd.NewWriter(w,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(8<<20),
		zstd.WithEncoderCRC(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd writer: %w", err)
	}
	return zw, nil
}
