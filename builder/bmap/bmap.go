// Package bmap writes block maps in bmaptool's XML format 2.0 (SHA-256), so
// that `bmaptool copy` flashes a Bulkhead image by writing only the blocks
// that hold data and verifies every one of them.
//
// It owns the knowledge of which regions of an image file are data, found
// with SEEK_DATA/SEEK_HOLE. It deliberately does not look for zeros: a block
// a filesystem writer wrote as zeros (a FAT, a journal) must reach the
// medium, because the medium may hold garbage there. Consequently, the
// stages that build images decide what is mapped by what they write; this
// package must not change an image, compress it, or decide what goes in it.
package bmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// BlockSize is the block size of every map this package writes: the page
// size and the filesystem block size of the images it describes.
const BlockSize = 4096

// Range is a run of bytes of a file that holds data.
type Range struct {
	Offset, Length int64
}

// DataRanges lists the regions of f that are not holes, in ascending order,
// as the filesystem reports them through SEEK_DATA and SEEK_HOLE. On a
// filesystem without hole support the whole file is one range. It moves
// f's file offset.
func DataRanges(f *os.File) ([]Range, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	var out []Range
	for off := int64(0); off < size; {
		data, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil, fmt.Errorf("%s: SEEK_DATA from %d: %w", f.Name(), off, err)
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("%s: SEEK_HOLE from %d: %w", f.Name(), data, err)
		}
		if hole > size {
			hole = size
		}
		if hole <= data {
			return nil, fmt.Errorf("%s: SEEK_HOLE from %d returned %d", f.Name(), data, hole)
		}
		out = append(out, Range{Offset: data, Length: hole - data})
		off = hole
	}
	return out, nil
}

// blockRange is an inclusive range of block numbers.
type blockRange struct{ first, last int64 }

// blockRanges widens byte ranges to whole blocks and merges neighbours.
func blockRanges(rs []Range) []blockRange {
	var out []blockRange
	for _, r := range rs {
		b := blockRange{r.Offset / BlockSize, (r.Offset + r.Length - 1) / BlockSize}
		if n := len(out); n > 0 && b.first <= out[n-1].last+1 {
			out[n-1].last = max(out[n-1].last, b.last)
			continue
		}
		out = append(out, b)
	}
	return out
}

// checksumPlaceholder is what BmapFileChecksum holds while the file's own
// checksum is computed, as bmaptool expects.
var checksumPlaceholder = strings.Repeat("0", sha256.Size*2)

// Write writes the block map of the image file at imagePath to w.
func Write(w io.Writer, imagePath string) error {
	doc, err := build(imagePath)
	if err != nil {
		return fmt.Errorf("bmap: %w", err)
	}
	if _, err := w.Write(doc); err != nil {
		return fmt.Errorf("bmap: write map of %s: %w", imagePath, err)
	}
	return nil
}

func build(imagePath string) ([]byte, error) {
	f, err := os.Open(imagePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size == 0 {
		return nil, fmt.Errorf("%s is empty: build the image first", imagePath)
	}
	rs, err := DataRanges(f)
	if err != nil {
		return nil, err
	}
	brs := blockRanges(rs)
	blocks := (size + BlockSize - 1) / BlockSize
	var mapped int64
	for _, b := range brs {
		mapped += b.last - b.first + 1
	}

	var doc bytes.Buffer
	fmt.Fprintf(&doc, `<?xml version="1.0" ?>
<!-- Block map of a Bulkhead disk image, in bmaptool's format 2.0.
     Only the block ranges under BlockMap hold data; every other block of
     the image is a hole that flashing may skip. Each range carries the
     SHA-256 of its bytes, and BmapFileChecksum is the SHA-256 of this file
     taken while that field held 64 zeros.
     Flash with: bmaptool copy IMAGE.img.xz /dev/DEVICE -->
<bmap version="2.0">
    <!-- Image size in bytes: %s -->
    <ImageSize> %d </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> %d </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> %d </BlocksCount>

    <!-- Count of mapped blocks: %s or %.1f%% -->
    <MappedBlocksCount> %d </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- SHA-256 of this file with the value below replaced by zeros -->
    <BmapFileChecksum> %s </BmapFileChecksum>

    <!-- Mapped block ranges (first-last, or a single block) and the
         SHA-256 of each range's bytes -->
    <BlockMap>
`, humanSize(size), size, BlockSize, blocks, humanSize(mapped*BlockSize), float64(mapped)*100/float64(blocks), mapped, checksumPlaceholder)

	buf := make([]byte, 1<<20)
	for _, b := range brs {
		start, end := b.first*BlockSize, min((b.last+1)*BlockSize, size)
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, start, end-start), buf); err != nil {
			return nil, fmt.Errorf("%s: read blocks %d-%d: %w", imagePath, b.first, b.last, err)
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if b.first == b.last {
			fmt.Fprintf(&doc, "        <Range chksum=\"%s\"> %d </Range>\n", sum, b.first)
		} else {
			fmt.Fprintf(&doc, "        <Range chksum=\"%s\"> %d-%d </Range>\n", sum, b.first, b.last)
		}
	}
	doc.WriteString("    </BlockMap>\n</bmap>\n")

	out := doc.Bytes()
	sum := sha256.Sum256(out)
	i := bytes.Index(out, []byte(checksumPlaceholder))
	copy(out[i:], hex.EncodeToString(sum[:]))
	return out, nil
}

// humanSize formats a byte count for the comments, e.g. "2.6 GiB".
func humanSize(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%.1f %s", v, units[u])
}
