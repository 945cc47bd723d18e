// Package switchroot replaces the initramfs with the real root filesystem
// and executes the real init, as busybox's switch_root does.
//
// The initramfs is the kernel's rootfs (a ramfs or tmpfs) and cannot be
// unmounted; pivot_root does not work on it. The only way out is to delete
// its files to give their RAM back, move the new root's mount over "/",
// chroot into it and exec. The package refuses to delete anything unless "/"
// really is a ramfs or tmpfs, so a mistaken call on a disk-backed system does
// no harm.
package switchroot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Filesystem magic numbers from include/uapi/linux/magic.h.
const (
	ramfsMagic = 0x858458f6
	tmpfsMagic = 0x01021994
)

// Switch makes newRoot, a mount point, the root filesystem and executes
// init inside it with argv and env. It only returns on error; an error after
// the initramfs was emptied leaves a system that can do nothing but reboot,
// which is what the initramfs's fatal path does.
func Switch(newRoot, init string, argv, env []string) error {
	var rootSt, newSt unix.Stat_t
	if err := unix.Stat("/", &rootSt); err != nil {
		return fmt.Errorf("switch root: stat /: %w", err)
	}
	if err := unix.Stat(newRoot, &newSt); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if newSt.Dev == rootSt.Dev {
		return fmt.Errorf("switch root: %s is not a mount point", newRoot)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs("/", &fs); err != nil {
		return fmt.Errorf("switch root: statfs /: %w", err)
	}
	// f_type is a signed word (int32 on 32-bit arm), the magic a 32-bit pattern.
	if magic := uint32(fs.Type); magic != ramfsMagic && magic != tmpfsMagic {
		return fmt.Errorf("switch root: / is not an initramfs (filesystem magic %#x), refusing to empty it", magic)
	}
	// Lstat, not Stat: /sbin/init may be an absolute symlink that only
	// resolves once newRoot is "/".
	if _, err := os.Lstat(filepath.Join(newRoot, init)); err != nil {
		return fmt.Errorf("switch root: no %s in %s: %w", init, newRoot, err)
	}

	if err := DeleteContents("/", rootSt.Dev); err != nil {
		// Leftover files only cost RAM; carry on into the real system.
		fmt.Fprintf(os.Stderr, "bulkhead: switch root: freeing the initramfs: %v\n", err)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("switch root: chdir %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: chdir /: %w", err)
	}
	if err := unix.Exec(init, argv, env); err != nil {
		return fmt.Errorf("switch root: exec %s: %w", init, err)
	}
	return nil // not reached
}

// DeleteContents removes everything below dir that lives on the device dev,
// without following symlinks and without descending into other mounts (the
// new root, /dev, /proc, /sys). dir itself stays.
func DeleteContents(dir string, dev uint64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if uint64(st.Dev) != dev {
			continue // a mount point: not ours to delete
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := DeleteContents(p, dev); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := unix.Rmdir(p); err != nil {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
			}
			continue
		}
		if err := unix.Unlink(p); err != nil {
			errs = append(errs, fmt.Errorf("unlink %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
