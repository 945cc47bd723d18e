package image

import (
	"context"
	"os"

	"github.com/bulkhead-os/bulkhead/builder/disk"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

// GPT partition type GUIDs (UEFI spec; Discoverable Partitions Specification).
const (
	gptESP       = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	gptLinuxData = "0fc63daf-8483-4772-8e79-3d69d8477de4"
)

var gptRoot = map[string]string{
	"amd64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
	"arm64": "b921b045-1df0-41c3-af44-4c6f280d3fae",
	"armhf": "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
	"armel": "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
}

// layout returns the partition table of the board's disk and its size.
func (b *Build) layout() (*parttable.Table, int64) {
	t := &parttable.Table{Kind: b.cfg.Board.Table}
	start := Align
	add := func(num int, name, mbrType, gptType string, size int64, bootable bool) {
		p := parttable.Partition{Number: num, Name: name, Start: start, Size: size, Bootable: bootable}
		if t.Kind == "mbr" {
			p.Type = mbrType
		} else {
			p.Type = gptType
			p.UUID = disk.DeriveUUID(b.seed(), "partition-"+name)
		}
		t.Partitions = append(t.Partitions, p)
		start += size
	}
	add(1, "boot", "0c", gptESP, BootSize, true)
	add(2, "root-a", "83", gptRoot[b.cfg.Board.Arch], RootSize, false)
	add(3, "root-b", "83", gptRoot[b.cfg.Board.Arch], RootSize, false)
	add(4, "data", "83", gptLinuxData, DataSize, false)
	size := start
	if t.Kind == "mbr" {
		t.DiskID = disk.DeriveMBRID(b.seed())
	} else {
		t.DiskID = disk.DeriveUUID(b.seed(), "disk")
		size += MiB // backup GPT
	}
	return t, size
}

// diskArg is the bulkhead.disk kernel argument naming this disk.
func (b *Build) diskArg() string {
	t, _ := b.layout()
	return t.Kind + ":" + t.DiskID
}

// disk assembles the whole image: table, boot, slot a, data; slot b stays a
// hole until the first update writes it.
func (b *Build) disk(ctx context.Context) error {
	t, size := b.layout()
	b.diskImage = b.work("disk.img")
	os.Remove(b.diskImage)
	b.cfg.Progress(Event{Phase: "disk", Item: b.diskImage})
	return disk.Assemble(b.diskImage, t, size, map[int]string{
		1: b.bootImage,
		2: b.slotImage,
		4: b.dataImage,
	}, b.rawWrites)
}
