// Package looptest gives rootfs tests real block devices: an image file with
// a partition table written by sfdisk, attached to a loop device with
// partition scanning.
//
// It exists only for tests, which run as root on a Linux host. It makes sure
// the kernel shows the partitions even on kernels built without partition
// table parsers (CONFIG_MSDOS_PARTITION / CONFIG_EFI_PARTITION unset, as on
// some CI virtual machines), by adding the missing ones with BLKPG.
package looptest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-os/bulkhead/rootfs/blkpg"
)

// MiB is a mebibyte, the unit the Bulkhead layout is drawn in.
const MiB = 1 << 20

// Loop is an image file attached to a loop device.
type Loop struct {
	// Image is the backing file.
	Image string
	// Dev is the whole-disk device, e.g. /dev/loop3.
	Dev string
	// Name is the kernel's name for it, e.g. loop3.
	Name string
}

// Require skips the test unless it runs as root with the given tools.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and mounts")
	}
	for _, tool := range append([]string{"losetup", "sfdisk"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("needs loop devices: %v", err)
	}
}

// New creates a sparse image of size bytes in a temporary directory, writes
// the sfdisk script to it, and attaches it. The loop device is detached when
// the test ends.
func New(t testing.TB, size int64, sfdiskScript string) *Loop {
	t.Helper()
	Require(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	Run(t, sfdiskScript, "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", img)
	dev := strings.TrimSpace(Run(t, "", "losetup", "--partscan", "--find", "--show", img))
	l := &Loop{Image: img, Dev: dev, Name: filepath.Base(dev)}
	t.Cleanup(func() {
		// Partitions still mounted by a failed test would keep the device busy.
		exec.Command("losetup", "--detach", dev).Run()
	})
	l.EnsurePartitions(t)
	return l
}

// Grow enlarges the backing file to size bytes and tells the loop driver,
// the way a larger SD card looks to the device after flashing.
func (l *Loop) Grow(t testing.TB, size int64) {
	t.Helper()
	if err := os.Truncate(l.Image, size); err != nil {
		t.Fatal(err)
	}
	Run(t, "", "losetup", "--set-capacity", l.Dev)
}

// Part is one partition as sfdisk reports it.
type Part struct {
	Number      int
	Start, Size int64 // bytes
}

// Parts lists the partitions of the image file (not the kernel's view).
func (l *Loop) Parts(t testing.TB) []Part {
	t.Helper()
	var out struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node  string `json:"node"`
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(Run(t, "", "sfdisk", "--json", l.Image)), &out); err != nil {
		t.Fatalf("sfdisk --json %s: %v", l.Image, err)
	}
	ss := out.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	var parts []Part
	for _, p := range out.PartitionTable.Partitions {
		var n int
		if _, err := fmt.Sscanf(p.Node[len(l.Image):], "%d", &n); err != nil {
			t.Fatalf("partition node %q: %v", p.Node, err)
		}
		parts = append(parts, Part{Number: n, Start: p.Start * ss, Size: p.Size * ss})
	}
	return parts
}

// PartDev returns the device node of partition n, e.g. /dev/loop3p4.
func (l *Loop) PartDev(n int) string { return fmt.Sprintf("%sp%d", l.Dev, n) }

// EnsurePartitions adds every partition of the image that the kernel does
// not show yet.
func (l *Loop) EnsurePartitions(t testing.TB) {
	t.Helper()
	disk, err := os.Open(l.Dev)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	for _, p := range l.Parts(t) {
		sys := fmt.Sprintf("/sys/block/%s/%sp%d", l.Name, l.Name, p.Number)
		if _, err := os.Stat(sys); err == nil {
			continue
		}
		if err := blkpg.Add(disk, p.Number, p.Start, p.Size); err != nil {
			t.Fatalf("add partition %d to %s: %v", p.Number, l.Dev, err)
		}
	}
}

// Run runs a command with stdin and returns its stdout, failing the test
// with the command's output when it fails.
func Run(t testing.TB, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
