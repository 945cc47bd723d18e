package blockdev_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/rootfs/blkpg"
	"github.com/bulkhead-os/bulkhead/rootfs/blockdev"
	"github.com/bulkhead-os/bulkhead/rootfs/internal/looptest"
)

// layout is a Bulkhead disk in miniature; %s is its signature, random per
// test so that loop devices of tests running concurrently never match.
const layout = "label: dos\nlabel-id: %s\n" +
	"start=2048, size=16384, type=c\n" +
	"start=18432, size=16384, type=83\n" +
	"start=34816, size=16384, type=83\n" +
	"start=51200, type=83\n"

func randomSignature() string { return fmt.Sprintf("0x%08x", rand.Uint32()|1) }

func TestFindLocatesTheLoopDiskByItsMBRSignature(t *testing.T) {
	sig := randomSignature()
	l := looptest.New(t, 64*looptest.MiB, fmt.Sprintf(layout, sig))
	f := &blockdev.Finder{Read: blockdev.ReadParttable, Interval: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ticks := 0
	f.Tick = func() { ticks++ }

	// Upper-case hex on the command line still matches.
	got, err := f.Find(ctx, blockdev.Identity{Kind: "mbr", ID: strings.ToUpper(sig)}, 1, 2, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got.Disk.Path != l.Dev || got.Disk.Size != 64*looptest.MiB {
		t.Errorf("found %+v, want %s of 64 MiB", got.Disk, l.Dev)
	}
	if ticks == 0 {
		t.Error("Tick was never called")
	}
	for n, start := range map[int]int64{1: 2048, 2: 18432, 3: 34816, 4: 51200} {
		p := got.Partitions[n]
		if p.Path != l.PartDev(n) || p.Start != start*512 {
			t.Errorf("partition %d = %+v, want %s starting at sector %d", n, p, l.PartDev(n), start)
		}
		if _, err := os.Stat(p.Path); err != nil {
			t.Errorf("partition %d has no device node: %v", n, err)
		}
	}
	if p := got.Partitions[4]; p.Size != 64*looptest.MiB-51200*512 {
		t.Errorf("partition 4 is %d bytes", p.Size)
	}

	parts, err := f.WaitPartitions(ctx, got.Disk.Name, 1, 4)
	if err != nil || len(parts) != 4 {
		t.Errorf("WaitPartitions = %v, %v", parts, err)
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := f.WaitPartitions(short, got.Disk.Name, 5); err == nil || !strings.Contains(err.Error(), "no partition 5") {
		t.Errorf("WaitPartitions for a missing partition = %v", err)
	}
}

func TestFindGivesUpAndSaysWhatItSaw(t *testing.T) {
	sig := randomSignature()
	l := looptest.New(t, 64*looptest.MiB, fmt.Sprintf(layout, sig))
	f := &blockdev.Finder{Read: blockdev.ReadParttable, Interval: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := f.Find(ctx, blockdev.Identity{Kind: "mbr", ID: "0xdeadbeef"})
	if err == nil {
		t.Fatal("found a disk that does not exist")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), l.Name+" (64 MiB): mbr:"+sig) {
		t.Errorf("error does not report what was seen: %v", err)
	}
}

func TestFindWaitsForALateDisk(t *testing.T) {
	looptest.Require(t)
	img := filepath.Join(t.TempDir(), "late.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64*looptest.MiB); err != nil {
		t.Fatal(err)
	}
	sig := randomSignature()
	looptest.Run(t, fmt.Sprintf(layout, sig), "sfdisk", "--quiet", img)

	// Attach the card only after Find has started scanning, like an SD card
	// that the host controller probes late.
	attached := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		attached <- attachWithPartitions(img)
	}()
	t.Cleanup(func() {
		// Only this test's device: other packages' tests run concurrently.
		out, _ := exec.Command("losetup", "--associated", img, "--output", "NAME", "--noheadings").Output()
		for _, dev := range strings.Fields(string(out)) {
			exec.Command("losetup", "--detach", dev).Run()
		}
	})

	f := &blockdev.Finder{Read: blockdev.ReadParttable, Interval: 20 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := f.Find(ctx, blockdev.Identity{Kind: "mbr", ID: sig}, 1, 2, 4)
	if aerr := <-attached; aerr != nil {
		t.Fatal(aerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got.Identity != (blockdev.Identity{Kind: "mbr", ID: sig}) {
		t.Errorf("found %+v", got)
	}
}

func TestPartitionNamesComeFromSysfsNotFromNaming(t *testing.T) {
	sys := t.TempDir()
	// The four naming schemes the kernel uses, as sysfs shows them.
	for disk, part := range map[string]string{
		"mmcblk0": "mmcblk0p2", "vda": "vda2", "sda": "sda2", "nvme0n1": "nvme0n1p2",
	} {
		write(t, filepath.Join(sys, disk, "size"), "1000")
		write(t, filepath.Join(sys, disk, "queue", "nr_requests"), "64")
		write(t, filepath.Join(sys, disk, part, "partition"), "2")
		write(t, filepath.Join(sys, disk, part, "start"), "100")
		write(t, filepath.Join(sys, disk, part, "size"), "200")
		write(t, filepath.Join(sys, disk, part, "uevent"), "MAJOR=1\nDEVNAME="+part+"\n")
	}
	write(t, filepath.Join(sys, "loop7", "size"), "0")

	s := blockdev.Sysfs{Block: sys, Dev: "/dev"}
	disks, err := s.Disks()
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 4 {
		t.Errorf("Disks = %+v, want 4 (the empty loop7 skipped)", disks)
	}
	for _, d := range disks {
		p, err := s.Partition(d.Name, 2)
		if err != nil {
			t.Fatal(err)
		}
		if p.Start != 100*512 || p.Size != 200*512 || !strings.HasPrefix(p.Path, "/dev/"+d.Name) {
			t.Errorf("%s partition 2 = %+v", d.Name, p)
		}
	}
	if _, err := s.Partition("sda", 4); err == nil {
		t.Error("found a partition 4 that sysfs does not have")
	}
}

func attachWithPartitions(img string) error {
	out, err := exec.Command("losetup", "--partscan", "--find", "--show", img).Output()
	if err != nil {
		return fmt.Errorf("losetup: %w", err)
	}
	dev := strings.TrimSpace(string(out))
	name := filepath.Base(dev)
	disk, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer disk.Close()
	for n, start := range map[int]int64{1: 2048, 2: 18432, 3: 34816, 4: 51200} {
		if _, err := os.Stat(fmt.Sprintf("/sys/block/%s/%sp%d", name, name, n)); err == nil {
			continue
		}
		size := int64(16384)
		if n == 4 {
			size = 64*looptest.MiB/512 - start
		}
		if err := blkpg.Add(disk, n, start*512, size*512); err != nil {
			return err
		}
	}
	return nil
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
