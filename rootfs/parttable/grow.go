package parttable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// GrowAlign is the boundary GrowLast rounds the new end of the last
// partition down to. Partitions start on 4 MiB boundaries (the erase-block
// size SD cards are optimised for); ending on one too keeps the partition a
// whole number of erase blocks and makes the result depend only on the
// medium size, which is what makes GrowLast idempotent. At most 4 MiB - 512
// bytes at the end of the medium stay unused.
const GrowAlign = 4 << 20

// ReadWriterAt is a whole medium: a block device or a disk image file.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// GrowLast grows the partition that starts last so that it ends at the last
// GrowAlign boundary the medium allows: diskSize for MBR (capped at the
// 2 TiB an MBR can describe), the last usable LBA for GPT (leaving room for
// the backup entry array and header). It never shrinks or moves anything.
// It returns whether it wrote anything and the partition's size afterwards.
//
// It is idempotent: it computes the complete table the medium should carry
// and writes nothing when the medium already carries exactly that, so the
// initramfs can call it on every boot. A GPT whose backup is not at the end
// of the medium is rewritten even when the partition cannot grow, so that a
// repaired or moved header lands where readers look for it.
//
// sync must flush the device's write cache (fsync on the block device);
// nil means no flushing, for tests on memory buffers.
//
// Power-cut safety, assuming a sector write is atomic (SD, eMMC and virtio
// disks guarantee this for 512-byte sectors):
//
// MBR: the whole table is sector 0, rewritten in one write and then synced.
// A cut leaves the old sector or the new one, both valid.
//
// GPT, writes in this order:
//
//  1. backup entry array and backup header at the new end of the medium,
//     then sync. They lie after the old last usable sector, so no partition
//     data is touched; the primary still describes the old, valid table
//     (if the medium grew by fewer than 33 sectors the new backup may
//     overwrite the old one, which only costs the redundancy the primary
//     still provides).
//  2. primary entry array, then the primary header at LBA 1, then sync.
//     Between the two the primary's entry CRC does not match: the primary
//     is invalid, and the new backup, complete since step 1 and in the last
//     sector of the medium, is the valid table. Readers that follow the
//     UEFI specification use it: UEFI firmware, U-Boot's part_efi, Read
//     and GrowLast (which then finishes the job). Linux uses it only with
//     the "gpt" kernel command-line option; without it Linux sees no
//     partitions until GrowLast has run again, so the initramfs must call
//     GrowLast on the whole-disk device before it looks for partitions, or
//     GPT boards must boot with "gpt". GRUB does not check entry CRCs and
//     sees only the last partition's end change.
//  3. protective MBR in sector 0, then sync: one sector; the old and the
//     new one both protect the disk, they differ only in the size field,
//     which Linux ignores and libfdisk merely warns about.
//
// A cut at any point therefore leaves either the old table (valid primary)
// or the new table (valid backup at the last LBA, or both copies), and a
// second GrowLast call converges to the new table.
func GrowLast(dev ReadWriterAt, diskSize int64, sync func() error) (changed bool, newSize int64, err error) {
	if sync == nil {
		sync = func() error { return nil }
	}
	kind, sec0, err := detect(dev, diskSize)
	if err != nil {
		return false, 0, fmt.Errorf("parttable: grow: %w", err)
	}
	if kind == KindMBR {
		changed, newSize, err = growMBR(dev, sec0, diskSize, sync)
	} else {
		changed, newSize, err = growGPT(dev, sec0, diskSize, sync)
	}
	if err != nil {
		return false, 0, fmt.Errorf("parttable: grow %s: %w", kind, err)
	}
	return changed, newSize, nil
}

func lastPartition(parts []Partition) (Partition, error) {
	if len(parts) == 0 {
		return Partition{}, fmt.Errorf("the table has no partitions to grow")
	}
	last := parts[0]
	for _, p := range parts[1:] {
		if p.Start > last.Start {
			last = p
		}
	}
	return last, nil
}

func alignDown(v, a int64) int64 { return v / a * a }

func growMBR(dev ReadWriterAt, sec0 []byte, diskSize int64, sync func() error) (bool, int64, error) {
	t, err := parseMBR(sec0, diskSize)
	if err != nil {
		return false, 0, err
	}
	p, err := lastPartition(t.Partitions)
	if err != nil {
		return false, 0, err
	}
	limit := diskSize
	if limit > mbrMaxSectors*SectorSize {
		limit = mbrMaxSectors * SectorSize
	}
	end := alignDown(limit, GrowAlign)
	if end <= p.End() {
		return false, p.Size, nil
	}
	sec := bytes.Clone(sec0)
	e := sec[mbrEntriesOff+(p.Number-1)*mbrEntrySize:]
	first, sectors := uint64(p.Start/SectorSize), uint64((end-p.Start)/SectorSize)
	binary.LittleEndian.PutUint32(e[12:], uint32(sectors))
	c := chs(first + sectors - 1)
	copy(e[5:8], c[:])
	if _, err := dev.WriteAt(sec, 0); err != nil {
		return false, 0, fmt.Errorf("write sector 0: %w", err)
	}
	if err := sync(); err != nil {
		return false, 0, fmt.Errorf("sync after writing sector 0: %w", err)
	}
	return true, end - p.Start, nil
}

func growGPT(dev ReadWriterAt, sec0 []byte, diskSize int64, sync func() error) (bool, int64, error) {
	st, err := loadGPT(dev, diskSize)
	if err != nil {
		return false, 0, err
	}
	parts, err := gptPartitions(st.hdr, st.entries)
	if err != nil {
		return false, 0, err
	}
	p, err := lastPartition(parts)
	if err != nil {
		return false, 0, err
	}
	l := gptLayout{
		diskGUID: st.hdr.diskGUID, numEntries: st.hdr.numEntries, entrySize: st.hdr.entrySize,
		firstUsable: st.hdr.firstUsable, primaryEntriesLBA: st.primaryEntriesLBA,
	}
	diskSectors := uint64(diskSize / SectorSize)
	if diskSectors < l.firstUsable+l.arraySectors()+2 {
		return false, 0, fmt.Errorf("medium of %d bytes is too small for its own GPT", diskSize)
	}
	lastUsable := l.lastUsable(diskSectors)
	for _, q := range parts {
		if uint64(q.End()/SectorSize)-1 > lastUsable {
			return false, 0, fmt.Errorf("%s ends at byte %d but the medium holds %d bytes: write the image to a medium of at least %d bytes",
				q.label(), q.End(), diskSize, q.End()+int64(l.arraySectors()+1)*SectorSize)
		}
	}
	arr := bytes.Clone(st.entries)
	size := p.Size
	if end := alignDown(int64(lastUsable+1)*SectorSize, GrowAlign); end > p.End() {
		e := arr[uint64(p.Number-1)*uint64(l.entrySize):]
		binary.LittleEndian.PutUint64(e[40:], uint64(end/SectorSize)-1)
		size = end - p.Start
	}
	ws := gptWrites(l, arr, sec0, diskSectors)
	same, err := alreadyWritten(dev, ws)
	if err != nil {
		return false, 0, err
	}
	if same {
		return false, size, nil
	}
	steps := []string{"backup GPT entries", "backup GPT header", "primary GPT entries", "primary GPT header", "protective MBR"}
	for i, w := range ws {
		if _, err := dev.WriteAt(w.Data, w.Off); err != nil {
			return false, 0, fmt.Errorf("write %s at byte %d: %w", steps[i], w.Off, err)
		}
		// Sync points of the argument on GrowLast: after the backup, after
		// the primary, after the protective MBR.
		if i == 1 || i == 3 || i == 4 {
			if err := sync(); err != nil {
				return false, 0, fmt.Errorf("sync after %s: %w", steps[i], err)
			}
		}
	}
	return true, size, nil
}

// alreadyWritten reports whether the medium already holds every write.
func alreadyWritten(r io.ReaderAt, ws []Write) (bool, error) {
	for _, w := range ws {
		cur := make([]byte, len(w.Data))
		if n, err := r.ReadAt(cur, w.Off); n != len(cur) {
			return false, fmt.Errorf("read back %d bytes at %d: %w", len(cur), w.Off, err)
		}
		if !bytes.Equal(cur, w.Data) {
			return false, nil
		}
	}
	return true, nil
}
