package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bulkhead-os/bulkhead/builder/compress"
)

// Format is the kind of a kernel boot image.
type Format string

const (
	// FormatARM64Image is an uncompressed arm64 Image, Debian's arm64
	// vmlinuz (about 33 MB for 6.1). U-Boot's booti loads it raw or
	// gzip-compressed.
	FormatARM64Image Format = "arm64-image"
	// FormatGzip is a gzip-compressed image.
	FormatGzip Format = "gzip"
	// FormatZImage is a self-decompressing 32-bit ARM zImage (bootz).
	FormatZImage Format = "arm-zimage"
	// FormatBzImage is a self-decompressing x86 bzImage (GRUB, EFI stub).
	FormatBzImage Format = "x86-bzimage"
	// FormatEFIZboot is an EFI application that decompresses the kernel
	// itself (CONFIG_EFI_ZBOOT).
	FormatEFIZboot Format = "efi-zboot"
)

// DetectFormat classifies a kernel image by its magic numbers.
func DetectFormat(r io.ReaderAt) (Format, error) {
	var h [0x210]byte
	n, err := r.ReadAt(h[:], 0)
	if n < 64 {
		return "", fmt.Errorf("kernel image too short (%d bytes): %v", n, err)
	}
	switch {
	case h[0] == 0x1f && h[1] == 0x8b:
		return FormatGzip, nil
	// Documentation/arch/arm64/booting.rst: magic "ARM\x64" at 0x38. The
	// image also starts with "MZ" (EFI stub), so test this first.
	case bytes.Equal(h[0x38:0x3c], []byte("ARM\x64")):
		return FormatARM64Image, nil
	case bytes.Equal(h[0:2], []byte("MZ")) && bytes.Equal(h[4:8], []byte("zimg")):
		return FormatEFIZboot, nil
	// Documentation/arch/arm/booting.rst: zImage magic at 0x24.
	case binary.LittleEndian.Uint32(h[0x24:0x28]) == 0x016f2818:
		return FormatZImage, nil
	// Documentation/arch/x86/boot.rst: "HdrS" at 0x202.
	case n >= 0x206 && bytes.Equal(h[0x202:0x206], []byte("HdrS")):
		return FormatBzImage, nil
	}
	return "", fmt.Errorf("unrecognised kernel image format (first bytes % x)", h[:8])
}

// ImageFormat returns the format of the kernel's boot image.
func (k *Kernel) ImageFormat() (Format, error) {
	f, err := os.Open(k.Image)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.Version, err)
	}
	defer f.Close()
	format, err := DetectFormat(f)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %s: %w", k.Version, k.Image, err)
	}
	return format, nil
}

// GzipImage writes the kernel's boot image to dst, gzip-compressed and
// deterministic (no file name, zero time), for U-Boot's booti: Debian's
// arm64 vmlinuz is an uncompressed Image of ~33 MB, and reading that from
// an SD card (or QEMU's emulated one, 7-20 s) costs more than booti's
// decompression. An image that is already gzip is copied unchanged. Images
// that decompress themselves (zImage, bzImage, EFI zboot) are refused:
// their bootloaders cannot load a gzip file. dst appears atomically.
func (k *Kernel) GzipImage(dst string) error {
	format, err := k.ImageFormat()
	if err != nil {
		return err
	}
	switch format {
	case FormatARM64Image, FormatGzip:
	default:
		return fmt.Errorf("kernel %s is a %s, which decompresses itself and must boot as it is: remove the kernel compression setting from the board file", k.Version, format)
	}
	in, err := os.Open(k.Image)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", k.Version, err)
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("gzip kernel %s: %w", k.Version, err)
	}
	defer os.Remove(out.Name()) // no-op after the rename
	if format == FormatGzip {
		_, err = io.Copy(out, in)
	} else {
		err = compress.Gzip(out, in)
	}
	if err != nil {
		out.Close()
		return fmt.Errorf("gzip kernel %s to %s: %w", k.Version, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("gzip kernel %s to %s: %w", k.Version, dst, err)
	}
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(out.Name(), dst); err != nil {
		return fmt.Errorf("gzip kernel %s: %w", k.Version, err)
	}
	return nil
}
