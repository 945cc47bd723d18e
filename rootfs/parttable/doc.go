// Package parttable reads, writes and grows the partition tables of Bulkhead
// disks: a DOS/MBR table (Raspberry Pi boards, whose boot ROM reads nothing
// else) and a GUID Partition Table (UEFI PCs and the other boards).
//
// It owns the on-disk byte layout of both formats, their validation, and the
// order in which table sectors must be written so that a power cut cannot
// leave the disk without a usable table. It is used by the host builder and,
// on the device, by the initramfs, so it stays small and free of cgo and of
// any dependency outside the standard library.
//
// It must not open devices, call ioctls, re-read partitions or resize
// filesystems: callers hand it an io.ReaderAt / io.WriterAt and a sync
// function and do the rest themselves. It only knows 512-byte logical
// sectors, which is what SD cards, eMMC, virtio disks and disk image files
// present.
package parttable
