// Package blkpg tells the kernel about partition changes with the BLKPG
// ioctl on a whole-disk block device, without re-reading the partition table.
//
// BLKRRPART (re-read the whole table) fails with EBUSY while any partition of
// the disk is open or mounted; BLKPG changes one partition and works while
// the others are in use. The package does not touch the on-disk table: that
// is parttable's job, and the kernel's view must be made to match it.
package blkpg

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// From include/uapi/linux/blkpg.h and include/uapi/linux/fs.h:
//
//	BLKPG = _IO(0x12, 105) = 0x1269 (no size or direction bits: the argument
//	        is a pointer the kernel interprets by op)
//	BLKPG_ADD_PARTITION    = 1
//	BLKPG_DEL_PARTITION    = 2
//	BLKPG_RESIZE_PARTITION = 3  (Linux 3.6+; start must equal the current start)
const (
	ioctlBLKPG = 0x1269

	// ioctlBLKRRPART is BLKRRPART = _IO(0x12, 95) = 0x125f: re-read the
	// whole table. It fails with EBUSY while any partition is open.
	ioctlBLKRRPART = 0x125f

	opAdd    = 1
	opDelete = 2
	opResize = 3
)

// ioctlArg mirrors struct blkpg_ioctl_arg { int op; int flags; int datalen;
// void __user *data; }. Data is an unsafe.Pointer, not a uintptr, so that the
// garbage collector keeps (and, for stack objects, updates) what it points to.
type ioctlArg struct {
	Op      int32
	Flags   int32
	Datalen int32
	Data    unsafe.Pointer
}

// partition mirrors struct blkpg_partition { long long start, length; int pno;
// char devname[64], volname[64]; }. C pads it to 152 bytes on every target
// Bulkhead builds for (long long is 8-aligned on arm EABI too); Go aligns
// int64 to 4 on 32-bit arm and would stop at 148, so the padding is explicit
// or the kernel's copy_from_user reads past the end.
type partition struct {
	Start   int64 // bytes
	Length  int64 // bytes
	Pno     int32
	Devname [64]byte
	Volname [64]byte
	_       [4]byte
}

// Resize tells the kernel that partition n of disk now spans length bytes
// from start. start must be the partition's current start.
func Resize(disk *os.File, n int, start, length int64) error {
	return do(disk, opResize, n, start, length, "resize")
}

// Add creates partition n in the kernel's view of disk. Tests use it on loop
// devices of kernels built without partition-table parsers.
func Add(disk *os.File, n int, start, length int64) error {
	return do(disk, opAdd, n, start, length, "add")
}

// Delete removes partition n from the kernel's view of disk; it fails with
// EBUSY while the partition is open.
func Delete(disk *os.File, n int) error {
	return do(disk, opDelete, n, 0, 0, "delete")
}

// Reread makes the kernel drop its partitions of disk and parse the table
// again. It needs every partition closed; the initramfs uses it before
// mounting anything, for the case where the kernel found no usable table at
// probe time (a GPT whose rewrite a power cut interrupted; see
// parttable.GrowLast).
func Reread(disk *os.File) error {
	raw, err := disk.SyscallConn()
	if err != nil {
		return fmt.Errorf("re-read partitions of %s: %w", disk.Name(), err)
	}
	var errno unix.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, ioctlBLKRRPART, 0)
	}); err != nil {
		return fmt.Errorf("re-read partitions of %s: %w", disk.Name(), err)
	}
	if errno != 0 {
		return fmt.Errorf("re-read partitions of %s: %w", disk.Name(), errno)
	}
	return nil
}

func do(disk *os.File, op int32, n int, start, length int64, verb string) error {
	p := partition{Start: start, Length: length, Pno: int32(n)}
	arg := ioctlArg{Op: op, Datalen: int32(unsafe.Sizeof(p)), Data: unsafe.Pointer(&p)}
	raw, err := disk.SyscallConn()
	if err != nil {
		return fmt.Errorf("blkpg %s partition %d on %s: %w", verb, n, disk.Name(), err)
	}
	var errno unix.Errno
	cerr := raw.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, ioctlBLKPG, uintptr(unsafe.Pointer(&arg)))
	})
	if cerr != nil {
		return fmt.Errorf("blkpg %s partition %d on %s: %w", verb, n, disk.Name(), cerr)
	}
	if errno != 0 {
		return fmt.Errorf("blkpg %s partition %d (start %d, %d bytes) on %s: %w",
			verb, n, start, length, disk.Name(), errno)
	}
	return nil
}

// Compile-time checks that the mirrors have the kernel's sizes on every
// GOARCH this is built for: an array length must not be negative.
var (
	_ [unsafe.Sizeof(partition{}) - unsafe.Sizeof(unix.BlkpgPartition{})]byte
	_ [unsafe.Sizeof(unix.BlkpgPartition{}) - unsafe.Sizeof(partition{})]byte
	_ [unsafe.Sizeof(ioctlArg{}) - unsafe.Sizeof(unix.BlkpgIoctlArg{})]byte
	_ [unsafe.Sizeof(unix.BlkpgIoctlArg{}) - unsafe.Sizeof(ioctlArg{})]byte
)
