// Package disk assembles the factory disk image: the partition table, the
// partition images built by earlier stages, and raw writes such as the two
// boot-state copies, in one sparse file. It also derives the deterministic
// identifiers (disk signature, GUIDs, filesystem UUIDs) that make two builds
// of the same inputs byte-identical.
//
// It owns placement and the invariants of the whole disk: partitions start
// on 4 MiB boundaries, partition images fit their partitions, raw writes
// stay outside partitions and the table, holes stay holes, and the image at
// the output path is either complete or absent. It must not build
// filesystems, choose the layout (the board file does) or compress the
// result.
package disk

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/bulkhead-os/bulkhead/builder/bmap"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

// Align is the boundary every partition starts on: the erase-block size SD
// cards are optimised for, and what parttable.GrowLast keeps.
const Align = 4 << 20

// Assemble writes a disk image of size bytes to out: the table t, then each
// partition image of contents (partition number -> image file; partitions
// without an entry stay holes, e.g. the empty root-b), then the raw writes
// of extra (which must lie outside every partition and the table).
//
// Only the data regions of each partition image are copied, found with
// SEEK_DATA/SEEK_HOLE, so the holes of the images stay holes in the disk
// image and bmap leaves them out. The image is built in out+".tmp", synced
// and renamed, so out is never a half-written image.
func Assemble(out string, t *parttable.Table, size int64, contents map[int]string, extra []parttable.Write) error {
	if err := assemble(out, t, size, contents, extra); err != nil {
		return fmt.Errorf("disk: %s: %w", out, err)
	}
	return nil
}

func assemble(out string, t *parttable.Table, size int64, contents map[int]string, extra []parttable.Write) error {
	table, err := parttable.Encode(t, size)
	if err != nil {
		return err
	}
	parts := map[int]parttable.Partition{}
	for _, p := range t.Partitions {
		if p.Start%Align != 0 {
			return fmt.Errorf("%s starts at byte %d, not on a 4 MiB boundary: align partition starts to 4 MiB in the board file", partName(p), p.Start)
		}
		parts[p.Number] = p
	}
	numbers := make([]int, 0, len(contents))
	for n := range contents {
		numbers = append(numbers, n)
	}
	sort.Ints(numbers)
	for _, n := range numbers {
		p, ok := parts[n]
		if !ok {
			return fmt.Errorf("an image %s is given for partition %d, which the table does not have", contents[n], n)
		}
		fi, err := os.Stat(contents[n])
		if err != nil {
			return fmt.Errorf("%s: %w", partName(p), err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: image %s is not a regular file", partName(p), contents[n])
		}
		if fi.Size() > p.Size {
			return fmt.Errorf("%s: image %s is %d bytes (%d MiB), the partition holds %d bytes (%d MiB): raise the partition size in the board file or make the image smaller",
				partName(p), contents[n], fi.Size(), mibUp(fi.Size()), p.Size, p.Size>>20)
		}
	}
	if err := checkExtra(extra, t.Partitions, table, size); err != nil {
		return err
	}

	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return err
	}
	for _, w := range table {
		if _, err := f.WriteAt(w.Data, w.Off); err != nil {
			return fmt.Errorf("write partition table at byte %d: %w", w.Off, err)
		}
	}
	buf := make([]byte, 1<<20)
	for _, n := range numbers {
		if err := copyImage(f, parts[n], contents[n], buf); err != nil {
			return err
		}
	}
	for _, w := range extra {
		if _, err := f.WriteAt(w.Data, w.Off); err != nil {
			return fmt.Errorf("write %d raw bytes at byte %d: %w", len(w.Data), w.Off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	ok = true
	// Make the rename itself durable.
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func partName(p parttable.Partition) string {
	if p.Name != "" {
		return fmt.Sprintf("partition %d (%s)", p.Number, p.Name)
	}
	return fmt.Sprintf("partition %d", p.Number)
}

func mibUp(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// checkExtra refuses raw writes that would land in a partition, in the
// partition table, outside the disk, or on each other: the boot-state copies
// must live where no filesystem and no table update ever writes.
func checkExtra(extra []parttable.Write, parts []parttable.Partition, table []parttable.Write, size int64) error {
	type span struct {
		from, to int64
		what     string
	}
	var taken []span
	for _, p := range parts {
		taken = append(taken, span{p.Start, p.End(), partName(p)})
	}
	for _, w := range table {
		taken = append(taken, span{w.Off, w.Off + int64(len(w.Data)), "the partition table"})
	}
	for i, w := range extra {
		end := w.Off + int64(len(w.Data))
		if len(w.Data) == 0 || w.Off < 0 || end > size {
			return fmt.Errorf("raw write %d (%d bytes at byte %d) is empty or outside the %d-byte disk", i, len(w.Data), w.Off, size)
		}
		for _, s := range taken {
			if w.Off < s.to && s.from < end {
				return fmt.Errorf("raw write %d (bytes %d-%d) overlaps %s (bytes %d-%d): place it between the table and the first partition", i, w.Off, end, s.what, s.from, s.to)
			}
		}
		taken = append(taken, span{w.Off, end, fmt.Sprintf("raw write %d", i)})
	}
	return nil
}

// copyImage copies the data regions of the image file at path into the
// partition, leaving its holes unwritten.
func copyImage(dst *os.File, p parttable.Partition, path string, buf []byte) error {
	src, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", partName(p), err)
	}
	defer src.Close()
	rs, err := bmap.DataRanges(src)
	if err != nil {
		return fmt.Errorf("%s: %w", partName(p), err)
	}
	for _, r := range rs {
		w := io.NewOffsetWriter(dst, p.Start+r.Offset)
		if _, err := io.CopyBuffer(w, io.NewSectionReader(src, r.Offset, r.Length), buf); err != nil {
			return fmt.Errorf("%s: copy bytes %d-%d of %s: %w", partName(p), r.Offset, r.Offset+r.Length, path, err)
		}
	}
	return nil
}

// digest hashes seed and purpose. The NUL between them keeps ("ab", "c")
// and ("a", "bc") apart.
func digest(seed, purpose string) [32]byte {
	return sha256.Sum256([]byte(seed + "\x00" + purpose))
}

// DeriveUUID returns a GUID derived from seed (the image identity, e.g.
// board + version) and purpose ("disk", "root-a", "root-a-fs", ...): the
// first 16 bytes of SHA-256(seed NUL purpose) with the version (4) and
// variant (RFC 4122) bits set, so that tools treating it as a random UUID
// accept it. Same inputs, same GUID; different purposes never collide in
// practice.
func DeriveUUID(seed, purpose string) string {
	h := digest(seed, purpose)
	b := h[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// DeriveMBRID returns an MBR disk signature derived from seed, as
// "0x1a2b3c4d". Zero is skipped because Windows and some tools treat a zero
// signature as "none" and write their own.
func DeriveMBRID(seed string) string {
	h := digest(seed, "mbr-disk-id")
	for i := 0; i+4 <= len(h); i += 4 {
		if v := binary.BigEndian.Uint32(h[i:]); v != 0 {
			return fmt.Sprintf("0x%08x", v)
		}
	}
	return "0x00000001" // all 32 bytes zero: not a SHA-256 output anyone will see
}
