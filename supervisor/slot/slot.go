// Package slot opens the block device of a root slot for the installer.
//
// It owns the seam between the update code and the disk: Device is the
// small interface the installer writes through (tests and the power-cut
// harness pass a file or a wrapper), and Open is the one real
// implementation. It locates partitions 2 and 3 of the boot disk named by
// bulkhead.disk (through rootfs/blockdev), and it refuses to open a
// partition that is mounted: the kernel's exclusive open (O_EXCL on a block
// device) fails while a filesystem on it is mounted, which makes "never
// write the running root" a property of the kernel, not only of this code.
//
// It does not decide which slot to write; the updater does, and checks
// that decision against the boot state before calling Open.
package slot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/rootfs/blockdev"
	"golang.org/x/sys/unix"
)

// Device is a root slot's storage as the installer sees it.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes every written byte durable.
	Sync() error
	// Size is the capacity in bytes.
	Size() int64
	Close() error
}

// CacheDropper is implemented by devices whose reads can be served from
// the page cache: DropCache flushes [off, off+n) to the medium and evicts
// it, so that later reads come from the medium (the read-back check) and a
// 1 GiB install does not push every other page out of a 512 MiB device's
// memory.
type CacheDropper interface {
	DropCache(off, n int64) error
}

// Partition numbers of the root slots (docs/architecture.md).
const (
	PartitionA = 2
	PartitionB = 3
)

// PartitionNumber returns the partition number of a slot.
func PartitionNumber(s bootloader.Slot) (int, error) {
	switch s {
	case bootloader.SlotA:
		return PartitionA, nil
	case bootloader.SlotB:
		return PartitionB, nil
	}
	return 0, fmt.Errorf("slot %q: want a or b", s)
}

// File is a Device over an *os.File: a partition's block device node or,
// in tests, a regular file.
type File struct {
	f    *os.File
	size int64
}

// ErrInUse is returned by Open for a partition that is mounted or opened
// exclusively by someone else.
var ErrInUse = errors.New("slot device is in use")

// Open opens path for writing. A block device is opened exclusively, so it
// fails with ErrInUse if it is mounted; a regular file (tests) is opened as
// is.
func Open(path string) (*File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open slot: %w", err)
	}
	flags := os.O_RDWR
	block := fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	if block {
		flags |= unix.O_EXCL | unix.O_CLOEXEC
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("open slot %s: %w: it is mounted or being written (is it the running root?)", path, ErrInUse)
		}
		return nil, fmt.Errorf("open slot: %w", err)
	}
	size := fi.Size()
	if block {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open slot %s: size: %w", path, err)
		}
		size = end
	}
	return &File{f: f, size: size}, nil
}

// ReadAt implements io.ReaderAt.
func (d *File) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }

// WriteAt implements io.WriterAt; it refuses writes past Size, which on a
// regular file would silently grow it.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, fmt.Errorf("write %d bytes at %d: beyond the end of the %d-byte slot", len(p), off, d.size)
	}
	return d.f.WriteAt(p, off)
}

// Sync implements Device.
func (d *File) Sync() error { return d.f.Sync() }

// Size implements Device.
func (d *File) Size() int64 { return d.size }

// Close implements Device.
func (d *File) Close() error { return d.f.Close() }

// DropCache implements CacheDropper with sync_file_range and
// POSIX_FADV_DONTNEED.
func (d *File) DropCache(off, n int64) error {
	fd := int(d.f.Fd())
	if err := unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
		return fmt.Errorf("flush slot range: %w", err)
	}
	if err := unix.Fadvise(fd, off, n, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop slot cache: %w", err)
	}
	return nil
}

// Disk is the boot disk and its slot partitions.
type Disk struct {
	// Path is the whole disk's device node (where the boot state lives).
	Path string
	// Slots maps a slot to its partition's device node.
	Slots map[bootloader.Slot]string
	// SlotSizes maps a slot to its partition's size in bytes.
	SlotSizes map[bootloader.Slot]int64
}

// Locate finds the disk whose partition table carries the identity of
// bulkhead.disk (kind "mbr" or "gpt", id as the kernel argument spells it)
// and its root slot partitions, waiting up to timeout for the kernel to
// show them.
func Locate(ctx context.Context, sys blockdev.Sysfs, kind, id string, timeout time.Duration) (Disk, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f := blockdev.Finder{Sysfs: sys, Read: blockdev.ReadParttable}
	found, err := f.Find(ctx, blockdev.Identity{Kind: kind, ID: id}, PartitionA, PartitionB)
	if err != nil {
		return Disk{}, fmt.Errorf("locate boot disk: %w: check bulkhead.disk on the kernel command line", err)
	}
	d := Disk{Path: found.Disk.Path, Slots: map[bootloader.Slot]string{}, SlotSizes: map[bootloader.Slot]int64{}}
	for s, n := range map[bootloader.Slot]int{bootloader.SlotA: PartitionA, bootloader.SlotB: PartitionB} {
		d.Slots[s] = found.Partitions[n].Path
		d.SlotSizes[s] = found.Partitions[n].Size
	}
	return d, nil
}
