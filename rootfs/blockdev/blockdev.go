// Package blockdev finds block devices through sysfs: the whole disks the
// kernel knows, their partitions and device nodes, and the disk whose
// partition table carries a given identity (bulkhead.disk=).
//
// It reads /sys/block and partition tables; it never writes a device. Disks
// are matched by table identity rather than by name because the same card is
// mmcblk0 on a Pi, vda under QEMU virt and sda in a USB reader.
package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

// Identity is what a partition table says about the disk it is on.
type Identity struct {
	// Kind is "mbr" or "gpt".
	Kind string
	// ID is the MBR disk signature ("0x1a2b3c4d") or the GPT disk GUID.
	ID string
}

func (id Identity) String() string { return id.Kind + ":" + id.ID }

// Matches compares identities the way bulkhead.disk= is meant: hex digits
// in either case.
func (id Identity) Matches(want Identity) bool {
	return id.Kind == want.Kind && strings.EqualFold(id.ID, want.ID)
}

// ReadFunc reads the identity of the partition table on a whole disk of
// size bytes. ReadParttable is the real one.
type ReadFunc func(r io.ReaderAt, size int64) (Identity, error)

// ReadParttable identifies a disk with parttable.Read, which also accepts a
// GPT whose primary copy is damaged (from its backup), so a disk whose table
// rewrite was cut by a power failure is still found and can be repaired.
func ReadParttable(r io.ReaderAt, size int64) (Identity, error) {
	t, err := parttable.Read(r, size)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Kind: t.Kind, ID: t.DiskID}, nil
}

// Sysfs locates the kernel's block device tree and device nodes; the zero
// value means /sys/block and /dev, tests point it elsewhere.
type Sysfs struct {
	Block string // default /sys/block
	Dev   string // default /dev
}

func (s Sysfs) block() string {
	if s.Block == "" {
		return "/sys/block"
	}
	return s.Block
}

func (s Sysfs) dev() string {
	if s.Dev == "" {
		return "/dev"
	}
	return s.Dev
}

// Disk is a whole disk.
type Disk struct {
	// Name is the kernel's name, e.g. mmcblk0, vda, sda, nvme0n1.
	Name string
	// Path is its device node, e.g. /dev/mmcblk0.
	Path string
	// Size in bytes.
	Size int64
}

// Partition is one partition of a disk as the kernel sees it.
type Partition struct {
	// Number as in the partition table (1 = boot, 4 = data).
	Number int
	// Name is the kernel's name: mmcblk0p2, vda2, sda2, nvme0n1p2.
	Name string
	// Path is its device node.
	Path string
	// Start and Size in bytes.
	Start, Size int64
}

// Disks lists the whole disks with a non-zero size (unattached loop devices
// and empty card readers have none), sorted by name.
func (s Sysfs) Disks() ([]Disk, error) {
	entries, err := os.ReadDir(s.block())
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	var disks []Disk
	for _, e := range entries {
		dir := filepath.Join(s.block(), e.Name())
		sectors, err := readInt(filepath.Join(dir, "size"))
		if err != nil || sectors == 0 {
			continue
		}
		disks = append(disks, Disk{Name: e.Name(), Path: s.node(dir, e.Name()), Size: sectors * 512})
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Name < disks[j].Name })
	return disks, nil
}

// Disk returns the disk called name, e.g. "mmcblk0", with its current size.
func (s Sysfs) Disk(name string) (Disk, error) {
	dir := filepath.Join(s.block(), name)
	sectors, err := readInt(filepath.Join(dir, "size"))
	if err != nil {
		return Disk{}, fmt.Errorf("disk %s: %w", name, err)
	}
	return Disk{Name: name, Path: s.node(dir, name), Size: sectors * 512}, nil
}

// Partitions lists the partitions of disk by number. The kernel names them
// inconsistently (mmcblk0p2 but sda2), so the number comes from each
// partition's "partition" attribute, never from its name.
func (s Sysfs) Partitions(disk string) (map[int]Partition, error) {
	dir := filepath.Join(s.block(), disk)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", disk, err)
	}
	parts := map[int]Partition{}
	for _, e := range entries {
		pdir := filepath.Join(dir, e.Name())
		n, err := readInt(filepath.Join(pdir, "partition"))
		if err != nil {
			continue // queue/, holders/, power/ and friends
		}
		start, err1 := readInt(filepath.Join(pdir, "start"))
		size, err2 := readInt(filepath.Join(pdir, "size"))
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("partition %s: %w", e.Name(), err)
		}
		parts[int(n)] = Partition{Number: int(n), Name: e.Name(), Path: s.node(pdir, e.Name()),
			Start: start * 512, Size: size * 512}
	}
	return parts, nil
}

// Partition returns partition n of disk.
func (s Sysfs) Partition(disk string, n int) (Partition, error) {
	parts, err := s.Partitions(disk)
	if err != nil {
		return Partition{}, err
	}
	p, ok := parts[n]
	if !ok {
		return Partition{}, fmt.Errorf("disk %s has no partition %d in %s", disk, n, filepath.Join(s.block(), disk))
	}
	return p, nil
}

// node returns the device node for a sysfs block directory: DEVNAME from its
// uevent (which handles names like cciss!c0d0 -> cciss/c0d0), else the name.
func (s Sysfs) node(sysdir, name string) string {
	if b, err := os.ReadFile(filepath.Join(sysdir, "uevent")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "DEVNAME="); ok && v != "" {
				return filepath.Join(s.dev(), v)
			}
		}
	}
	return filepath.Join(s.dev(), strings.ReplaceAll(name, "!", "/"))
}

// Finder waits for the disk with a given identity to appear.
type Finder struct {
	Sysfs Sysfs
	// Read identifies a disk's partition table.
	Read ReadFunc
	// Interval between scans; default 250 ms.
	Interval time.Duration
	// Tick, if set, runs before every scan; the initramfs pings the
	// watchdog there, so waiting for a slow card is not mistaken for a hang.
	Tick func()
}

// Found is the disk Find returns.
type Found struct {
	Disk       Disk
	Identity   Identity
	Partitions map[int]Partition
}

// Find scans the whole disks until one carries want and shows all the
// partition numbers in need, or until ctx ends. SD cards and USB disks are
// probed asynchronously and may appear seconds after the initramfs starts,
// which is why it rescans instead of looking once. On failure the error
// lists every disk seen in the last scan and what was found on it.
func (f *Finder) Find(ctx context.Context, want Identity, need ...int) (Found, error) {
	interval := f.Interval
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	var seen []string
	for {
		if f.Tick != nil {
			f.Tick()
		}
		var found Found
		var ok bool
		found, ok, seen = f.scan(want, need)
		if ok {
			return found, nil
		}
		select {
		case <-ctx.Done():
			what := "no disks"
			if len(seen) > 0 {
				what = strings.Join(seen, "; ")
			}
			return Found{}, fmt.Errorf("no disk with %s: %w; seen: %s", want, ctx.Err(), what)
		case <-time.After(interval):
		}
	}
}

// WaitPartitions waits until disk shows every partition number in need,
// e.g. right after the table was re-read, and returns all its partitions.
func (f *Finder) WaitPartitions(ctx context.Context, disk string, need ...int) (map[int]Partition, error) {
	interval := f.Interval
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	for {
		if f.Tick != nil {
			f.Tick()
		}
		parts, err := f.Sysfs.Partitions(disk)
		var missing []string
		for _, n := range need {
			if _, ok := parts[n]; !ok {
				missing = append(missing, strconv.Itoa(n))
			}
		}
		if err == nil && len(missing) == 0 {
			return parts, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("the kernel shows no partition %s", strings.Join(missing, ", "))
			}
			return nil, fmt.Errorf("disk %s: %w (%w)", disk, err, ctx.Err())
		case <-time.After(interval):
		}
	}
}

func (f *Finder) scan(want Identity, need []int) (Found, bool, []string) {
	disks, err := f.Sysfs.Disks()
	if err != nil {
		return Found{}, false, []string{err.Error()}
	}
	var seen []string
	for _, d := range disks {
		id, err := f.identify(d)
		if err != nil {
			seen = append(seen, fmt.Sprintf("%s (%d MiB): %v", d.Name, d.Size>>20, err))
			continue
		}
		if !id.Matches(want) {
			seen = append(seen, fmt.Sprintf("%s (%d MiB): %s", d.Name, d.Size>>20, id))
			continue
		}
		parts, err := f.Sysfs.Partitions(d.Name)
		if err != nil {
			seen = append(seen, fmt.Sprintf("%s: %s, %v", d.Name, id, err))
			continue
		}
		var missing []string
		for _, n := range need {
			if _, ok := parts[n]; !ok {
				missing = append(missing, strconv.Itoa(n))
			}
		}
		if len(missing) > 0 {
			// The kernel adds partitions right after the disk; if they stay
			// missing it could not parse the table.
			seen = append(seen, fmt.Sprintf("%s: %s but without partition %s", d.Name, id, strings.Join(missing, ", ")))
			continue
		}
		return Found{Disk: d, Identity: id, Partitions: parts}, true, seen
	}
	return Found{}, false, seen
}

func (f *Finder) identify(d Disk) (Identity, error) {
	dev, err := os.Open(d.Path)
	if err != nil {
		return Identity{}, err
	}
	defer dev.Close()
	return f.Read(dev, d.Size)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
