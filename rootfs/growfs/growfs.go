// Package growfs grows the data partition to the end of the medium and the
// ext4 filesystem on it to the end of the partition, on the running system
// and without a reboot.
//
// Both steps are idempotent and safe to cut at any instant: the partition
// table is rewritten power-safely by parttable.GrowLast, the kernel is told
// the new size with BLKPG (package blkpg), and ext4's online resize
// (EXT4_IOC_RESIZE_FS) journals each step, so a boot after a power cut finds
// a partition or filesystem that is either still small or partly grown, and
// simply grows it again. The package does not mount or format anything.
package growfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/rootfs/blkpg"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

// GrowFunc rewrites the partition table on dev so that its last partition
// ends at the end of the medium, calling sync to make each step durable, and
// returns whether it changed anything and the partition's size in bytes.
// It is parttable.GrowLast; tests may substitute a fake.
type GrowFunc func(dev parttable.ReadWriterAt, diskSize int64, sync func() error) (changed bool, newSize int64, err error)

// Partition describes the last partition of a disk as the kernel sees it
// (sysfs start and size), which is what BLKPG compares against.
type Partition struct {
	// Disk is the whole-disk device, e.g. /dev/mmcblk0.
	Disk string
	// DiskSize is the size of the medium in bytes.
	DiskSize int64
	// Number is the partition number; it must be the table's last partition.
	Number int
	// Start and Size are the kernel's current view, in bytes. Size 0 means
	// the kernel shows no partition Number at all: it found no valid table
	// at probe time, as after a power cut in the middle of a GPT rewrite
	// (see parttable.GrowLast), which GrowLast repairs.
	Start, Size int64
}

// PartitionResult says what GrowPartition did.
type PartitionResult struct {
	// TableChanged is true when the on-disk table was rewritten.
	TableChanged bool
	// KernelResized is true when the kernel's view was updated with BLKPG.
	KernelResized bool
	// Reread is true when the kernel was made to parse the whole table again.
	Reread bool
	// Size is the partition's size in bytes afterwards.
	Size int64
}

// GrowPartition grows the last partition with grow and makes the kernel see
// its new size. Run it before anything on the disk is mounted: BLKPG works
// while other partitions are in use, but the fallback, re-reading the whole
// table (BLKRRPART), fails with EBUSY while any partition is open.
//
// The kernel is updated whenever its size differs from the table's, not only
// when the table changed, so a power cut between the two steps is repaired
// on the next boot (where the kernel will in fact have read the new table).
func GrowPartition(p Partition, grow GrowFunc) (PartitionResult, error) {
	f, err := os.OpenFile(p.Disk, os.O_RDWR, 0)
	if err != nil {
		return PartitionResult{}, fmt.Errorf("grow partition %d: %w", p.Number, err)
	}
	defer f.Close()
	changed, size, err := grow(f, p.DiskSize, f.Sync)
	if err != nil {
		return PartitionResult{}, fmt.Errorf("grow partition %d on %s: %w", p.Number, p.Disk, err)
	}
	res := PartitionResult{TableChanged: changed, Size: size}
	if p.Size == 0 {
		if err := blkpg.Reread(f); err != nil {
			return res, fmt.Errorf("grow partition %d: kernel has no partition %d: %w", p.Number, p.Number, err)
		}
		res.Reread = true
		return res, nil
	}
	if size < p.Size {
		// A table that shrank the partition under a filesystem would lose
		// data; refuse rather than tell the kernel.
		return res, fmt.Errorf("grow partition %d on %s: table says %d bytes, kernel %d: refusing to shrink",
			p.Number, p.Disk, size, p.Size)
	}
	if size == p.Size {
		return res, nil
	}
	rerr := blkpg.Resize(f, p.Number, p.Start, size)
	if rerr == nil {
		res.KernelResized = true
		return res, nil
	}
	// BLKPG refuses when the kernel's start differs from the table's (a
	// table the kernel never saw); a full re-read still works here.
	if err := blkpg.Reread(f); err != nil {
		return res, fmt.Errorf("grow partition %d: tell the kernel: %w", p.Number, errors.Join(rerr, err))
	}
	res.Reread = true
	return res, nil
}

// ioctlResizeFS is EXT4_IOC_RESIZE_FS from fs/ext4/ext4.h:
// _IOW('f', 16, __u64) = 1<<30 | 8<<16 | 0x66<<8 | 16 = 0x40086610. Its
// argument points to the new size in filesystem blocks. Linux 3.3+.
const ioctlResizeFS = 0x40086610

// FilesystemResult says what GrowFilesystem did, in filesystem blocks.
type FilesystemResult struct {
	From, To  uint64
	BlockSize int64
}

// Grew reports whether the filesystem was enlarged.
func (r FilesystemResult) Grew() bool { return r.To > r.From }

// GrowFilesystem grows the ext4 filesystem mounted read-write at mountpoint
// from the block device dev so that it fills dev. It does nothing when the
// filesystem already fills it.
func GrowFilesystem(mountpoint, dev string) (FilesystemResult, error) {
	f, err := os.Open(dev)
	if err != nil {
		return FilesystemResult{}, fmt.Errorf("grow filesystem: %w", err)
	}
	defer f.Close()
	sb, err := ReadSuperblock(f)
	if err != nil {
		return FilesystemResult{}, fmt.Errorf("grow filesystem on %s: %w", dev, err)
	}
	devSize, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return FilesystemResult{}, fmt.Errorf("grow filesystem: size of %s: %w", dev, err)
	}
	res := FilesystemResult{From: sb.Blocks, To: sb.Blocks, BlockSize: sb.BlockSize}
	want := uint64(devSize / sb.BlockSize)
	if want <= sb.Blocks {
		return res, nil
	}
	if err := resize(mountpoint, want); err != nil {
		return res, fmt.Errorf("grow filesystem on %s from %d to %d blocks of %d bytes: %w",
			dev, sb.Blocks, want, sb.BlockSize, err)
	}
	after, err := ReadSuperblock(f)
	if err != nil {
		return res, fmt.Errorf("grow filesystem on %s: re-read: %w", dev, err)
	}
	res.To = after.Blocks
	if after.Blocks != want {
		return res, fmt.Errorf("grow filesystem on %s: asked for %d blocks, superblock says %d", dev, want, after.Blocks)
	}
	return res, nil
}

func resize(mountpoint string, blocks uint64) error {
	dir, err := os.Open(mountpoint)
	if err != nil {
		return err
	}
	defer dir.Close()
	raw, err := dir.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, ioctlResizeFS, uintptr(unsafe.Pointer(&blocks)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return fmt.Errorf("EXT4_IOC_RESIZE_FS: %w", errno)
	}
	return nil
}

// Superblock holds the ext4 superblock fields that sizing needs.
type Superblock struct {
	BlockSize int64
	Blocks    uint64
}

// Byte offsets inside the superblock (fs/ext4/ext4.h, struct ext4_super_block),
// which itself starts 1024 bytes into the device.
const (
	sbOffset        = 1024
	sbSize          = 1024
	offBlocksLo     = 0x04
	offLogBlockSize = 0x18
	offMagic        = 0x38
	offIncompat     = 0x60
	offBlocksHi     = 0x150
	ext4Magic       = 0xef53
	incompat64Bit   = 0x80
)

// ErrNotExt4 is returned for a device without an ext2/3/4 superblock.
var ErrNotExt4 = errors.New("no ext4 superblock")

// ReadSuperblock reads the primary superblock of the filesystem on r.
func ReadSuperblock(r io.ReaderAt) (Superblock, error) {
	b := make([]byte, sbSize)
	if _, err := r.ReadAt(b, sbOffset); err != nil {
		return Superblock{}, fmt.Errorf("read superblock: %w", err)
	}
	return ParseSuperblock(b)
}

// ParseSuperblock decodes the 1024-byte superblock b.
func ParseSuperblock(b []byte) (Superblock, error) {
	if len(b) < sbSize {
		return Superblock{}, fmt.Errorf("superblock is %d bytes, want %d", len(b), sbSize)
	}
	le := binary.LittleEndian
	if le.Uint16(b[offMagic:]) != ext4Magic {
		return Superblock{}, ErrNotExt4
	}
	logSize := le.Uint32(b[offLogBlockSize:])
	if logSize > 6 { // ext4 blocks are 1 KiB to 64 KiB
		return Superblock{}, fmt.Errorf("superblock: block size 1024<<%d is out of range", logSize)
	}
	blocks := uint64(le.Uint32(b[offBlocksLo:]))
	if le.Uint32(b[offIncompat:])&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(b[offBlocksHi:])) << 32
	}
	return Superblock{BlockSize: 1024 << logSize, Blocks: blocks}, nil
}
