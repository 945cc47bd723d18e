// Package powercut proves, offline, that a power cut at any instant of
// flash, boot, update and commit leaves a Bulkhead device bootable and
// loses nothing that was fsync'd on its data partition (DESIGN.md,
// invariant 5).
//
// The input is what the guest kernel really sent to its disk during a
// recorded run in QEMU: the disk image before the run and the write log of
// QEMU's blklogwrites driver (dm-log-writes format, package dmlog). From
// them the package rebuilds the disk as it stood after every logged write
// and, between two flushes, as it may have stood after a cut: any subset of
// the writes the device had not yet been told to make durable, and the last
// write torn at a sector boundary (Enumerate). Each such crash state is
// checked without booting (Checker):
//
//   - the partition table still reads, with the slots where the image put
//     them;
//   - the boot state reads to a valid record (one copy at least) and
//     bootloader.Decide picks a slot;
//   - that slot holds, byte for byte, the slot image the build produced (and
//     whose SHA-256 the bundle manifest signs);
//   - the device's kernel (Debian bookworm's Linux 6.1) would mount the data
//     partition: its jbd2 refuses a journal whose commit block is torn,
//     which e2fsck accepts, so the check does what the initramfs does
//     (rootfs/jbd2: Repair drops the torn commit block, then Check);
//   - the data partition, after the journal replay every mount does, passes
//     e2fsck -fn, and every record the test workload fsync'd before the cut
//     is there, intact;
//   - the supervisor's update state file parses with its own package, and
//     the supervisor's own Resume, run against this crash state, finishes,
//     rolls back or cleans up the update.
//
// Besides the crash states, Audit checks the whole log against the
// invariants that are properties of the write sequence: the committed slot
// is never written, the boot partition is written only in the boot-state
// copies, and nothing writes the boot state once the last trial ended.
//
// The package never writes to the recorded disk image or log; scratch
// copies of the data partition go to a directory the caller names. Booting
// crash states in QEMU and the kill loop live in the tests of package tests
// (tests/powercut_test.go), which use this package for their checks.
package powercut
