package parttable

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// Byte offsets inside sector 0.
const (
	mbrDiskSigOff  = 0x1b8
	mbrEntriesOff  = 0x1be
	mbrEntrySize   = 16
	mbrSigOff      = 0x1fe
	mbrMaxSectors  = 1 << 32 // 32-bit LBA fields: an MBR describes at most 2 TiB
	mbrTypeGPT     = 0xee
	mbrBootFlag    = 0x80
	chsHeads       = 255
	chsSectors     = 63
	chsMaxCylinder = 1023
)

// chs converts an LBA to the 3-byte CHS field with the geometry every tool
// since the 1990s assumes (255 heads, 63 sectors per track). Addresses beyond
// 1024 cylinders cannot be expressed and get the conventional 1023/254/63
// (bytes fe ff ff), which tells readers to use the LBA fields instead.
func chs(lba uint64) [3]byte {
	c := lba / (chsHeads * chsSectors)
	if c > chsMaxCylinder {
		return [3]byte{0xfe, 0xff, 0xff}
	}
	h := (lba / chsSectors) % chsHeads
	s := lba%chsSectors + 1
	return [3]byte{byte(h), byte(s) | byte(c>>2)&0xc0, byte(c)}
}

func mbrBounds(diskSize int64) bounds {
	last := uint64(diskSize/SectorSize) - 1
	if last > mbrMaxSectors-1 {
		last = mbrMaxSectors - 1
	}
	return bounds{first: 1, last: last, maxNumber: 4}
}

// putMBREntry fills one 16-byte partition record.
func putMBREntry(e []byte, bootable bool, typ byte, first, sectors uint64) {
	for i := range e[:mbrEntrySize] {
		e[i] = 0
	}
	if bootable {
		e[0] = mbrBootFlag
	}
	s, end := chs(first), chs(first+sectors-1)
	copy(e[1:4], s[:])
	e[4] = typ
	copy(e[5:8], end[:])
	binary.LittleEndian.PutUint32(e[8:], uint32(first))
	binary.LittleEndian.PutUint32(e[12:], uint32(sectors))
}

func encodeMBRTable(t *Table, diskSize int64) ([]Write, error) {
	sig, err := parseMBRID(t.DiskID)
	if err != nil {
		return nil, err
	}
	if len(t.Partitions) > 4 {
		return nil, fmt.Errorf("%d partitions, an MBR holds 4 primary partitions (no extended partitions)", len(t.Partitions))
	}
	if err := checkPartitions(t.Partitions, mbrBounds(diskSize)); err != nil {
		return nil, err
	}
	sec := make([]byte, SectorSize)
	binary.LittleEndian.PutUint32(sec[mbrDiskSigOff:], sig)
	for _, p := range t.Partitions {
		typ, err := parseMBRType(p.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.label(), err)
		}
		if isExtended(typ) || typ == mbrTypeGPT {
			return nil, fmt.Errorf("%s: type %02x is reserved for extended or GPT-protective entries", p.label(), typ)
		}
		off := mbrEntriesOff + (p.Number-1)*mbrEntrySize
		putMBREntry(sec[off:], p.Bootable, typ, uint64(p.Start/SectorSize), uint64(p.Size/SectorSize))
	}
	sec[mbrSigOff], sec[mbrSigOff+1] = 0x55, 0xaa
	return []Write{{Off: 0, Data: sec}}, nil
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

func hasBootSignature(sec []byte) bool { return sec[mbrSigOff] == 0x55 && sec[mbrSigOff+1] == 0xaa }

// isProtective reports whether sector 0 announces a GPT (an 0xee entry).
func isProtective(sec []byte) bool {
	for i := 0; i < 4; i++ {
		if sec[mbrEntriesOff+i*mbrEntrySize+4] == mbrTypeGPT {
			return true
		}
	}
	return false
}

// parseMBR decodes sector 0 of a DOS-labelled disk.
func parseMBR(sec []byte, diskSize int64) (*Table, error) {
	sig := binary.LittleEndian.Uint32(sec[mbrDiskSigOff:])
	t := &Table{Kind: KindMBR, DiskID: formatMBRID(sig)}
	for i := 0; i < 4; i++ {
		e := sec[mbrEntriesOff+i*mbrEntrySize:][:mbrEntrySize]
		if e[0] != 0 && e[0] != mbrBootFlag {
			return nil, fmt.Errorf("MBR entry %d has boot indicator %#02x (want 0x00 or 0x80): sector 0 is not a partition table", i+1, e[0])
		}
		typ := e[4]
		first := binary.LittleEndian.Uint32(e[8:])
		sectors := binary.LittleEndian.Uint32(e[12:])
		if typ == 0 {
			continue
		}
		if isExtended(typ) {
			return nil, fmt.Errorf("partition %d is an extended partition (type %02x): logical partitions are not supported", i+1, typ)
		}
		if sectors == 0 {
			return nil, fmt.Errorf("partition %d (type %02x) has zero sectors", i+1, typ)
		}
		t.Partitions = append(t.Partitions, Partition{
			Number:   i + 1,
			Type:     fmt.Sprintf("%02x", typ),
			UUID:     fmt.Sprintf("%08x-%02x", sig, i+1),
			Start:    int64(first) * SectorSize,
			Size:     int64(sectors) * SectorSize,
			Bootable: e[0] == mbrBootFlag,
		})
	}
	if err := checkPartitions(t.Partitions, mbrBounds(diskSize)); err != nil {
		return nil, err
	}
	sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Number < t.Partitions[j].Number })
	return t, nil
}
