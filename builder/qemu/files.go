package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"

	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

// Partition numbers of the fixed layout (docs/architecture.md).
const (
	PartBoot  = 1
	PartRootA = 2
	PartRootB = 3
	PartData  = 4
)

// Partition returns the byte offset and size of partition n of the
// machine's disk, read from its partition table.
func (m *Machine) Partition(n int) (off, size int64, err error) {
	f, err := os.Open(m.Disk)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	t, err := parttable.Read(f, fi.Size())
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", m.Disk, err)
	}
	for _, p := range t.Partitions {
		if p.Number == n {
			return p.Start, p.Size, nil
		}
	}
	return 0, 0, fmt.Errorf("%s: no partition %d", m.Disk, n)
}

// WriteBootFile writes data as name (e.g. "bulkhead/device.yaml") on the
// FAT boot partition of the machine's disk, creating its directories, the
// way a user edits a flashed card on a PC. Call it before Start (mtools
// must not write under a running guest).
func (m *Machine) WriteBootFile(ctx context.Context, name string, data []byte) error {
	off, _, err := m.Partition(PartBoot)
	if err != nil {
		return err
	}
	img := fmt.Sprintf("%s@@%d", m.Disk, off)
	tmp, err := os.CreateTemp("", "bootfile-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	dir := ""
	for _, d := range strings.Split(path.Dir(strings.Trim(name, "/")), "/") {
		if d == "." || d == "" {
			continue
		}
		dir += "/" + d
		// mmd fails when the directory exists; that is fine.
		exec.CommandContext(ctx, "mmd", "-i", img, "::"+dir).Run()
	}
	out, err := exec.CommandContext(ctx, "mcopy", "-o", "-i", img, tmp.Name(), "::/"+strings.Trim(name, "/")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("write %s into the boot partition of %s (mtools): %v: %s", name, m.Disk, err, out)
	}
	return nil
}

// WriteDataFile copies the host file src to name (e.g.
// "supervisor/inbox/os.bundle") on the ext4 data partition of the
// machine's disk with debugfs, creating its directories. Call it before
// Start or after the machine stopped cleanly: debugfs does not replay a
// journal.
func (m *Machine) WriteDataFile(ctx context.Context, name, src string) error {
	off, _, err := m.Partition(PartData)
	if err != nil {
		return err
	}
	fs := fmt.Sprintf("%s?offset=%d", m.Disk, off)
	name = strings.Trim(path.Clean("/"+name), "/")
	var script strings.Builder
	dir := ""
	for _, d := range strings.Split(path.Dir(name), "/") {
		if d == "." || d == "" {
			continue
		}
		dir += "/" + d
		fmt.Fprintf(&script, "mkdir %s\n", dir)
	}
	fmt.Fprintf(&script, "cd /%s\nwrite %s %s\n", strings.TrimPrefix(dir, "/"), src, path.Base(name))
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", fs)
	cmd.Stdin = strings.NewReader(script.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("write %s into the data partition of %s (debugfs): %v: %s", name, m.Disk, err, out)
	}
	// debugfs reports most failures on its output with exit status 0.
	if s := string(out); strings.Contains(s, "write: ") || strings.Contains(s, "Could not allocate") {
		return fmt.Errorf("write %s into the data partition of %s (debugfs): %s", name, m.Disk, s)
	}
	return nil
}
