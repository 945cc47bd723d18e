package parttable

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
)

// SectorSize is the only logical sector size this package handles. Every
// medium Bulkhead boots from (SD, eMMC, virtio-blk, image files) uses it.
const SectorSize = 512

// Table kinds.
const (
	KindMBR = "mbr"
	KindGPT = "gpt"
)

// Partition types Bulkhead uses. MBR types are one hex byte, GPT types are
// GUIDs in their canonical lowercase text form.
const (
	MBRTypeFAT32LBA = "0c"
	MBRTypeLinux    = "83"

	GPTTypeESP   = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	GPTTypeLinux = "0fc63daf-8483-4772-8e79-3d69d8477de4"
)

// Table is a whole partition table.
type Table struct {
	// Kind is KindMBR or KindGPT.
	Kind string
	// DiskID identifies the medium: for MBR the 32-bit disk signature as
	// "0x1a2b3c4d" (lowercase hex), for GPT the disk GUID in lowercase. It is
	// what Linux derives PARTUUIDs from and what bulkhead.disk= names.
	DiskID string
	// Partitions in any order; Read returns them sorted by Number.
	Partitions []Partition
	// FromBackup is set by Read when the primary GPT was damaged and the
	// table came from the backup GPT at the end of the medium. The caller
	// should repair the primary (GrowLast does) before trusting tools that
	// only read the primary, such as Linux without the "gpt" command-line
	// option. Encode ignores it.
	FromBackup bool
}

// Partition is one table entry.
type Partition struct {
	// Number is the partition number Linux gives it: the MBR slot 1-4, or
	// the GPT entry index + 1 (1-128).
	Number int
	// Name is the GPT partition name (at most 36 UTF-16 code units);
	// ignored for MBR.
	Name string
	// Type is a hex byte such as "0c" or "83" for MBR, a type GUID for GPT.
	Type string
	// UUID is the GPT unique partition GUID. For MBR, Read fills in the
	// PARTUUID Linux derives ("<signature>-<nn>", e.g. "1a2b3c4d-02") and
	// Encode ignores it.
	UUID string
	// Start and Size are in bytes and must be multiples of SectorSize.
	Start, Size int64
	// Bootable is the MBR active flag (0x80), or GPT attribute bit 2
	// ("legacy BIOS bootable").
	Bootable bool
}

// End returns the byte offset just past the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// label names a partition in error messages the way a user recognises it.
func (p Partition) label() string {
	if p.Name != "" {
		return fmt.Sprintf("partition %d (%s)", p.Number, p.Name)
	}
	return fmt.Sprintf("partition %d", p.Number)
}

// Write is one write of table bytes at a byte offset of the medium.
type Write struct {
	Off  int64
	Data []byte
}

// guid is a GUID in its on-disk byte order (the first three fields little
// endian, the rest big endian, as the UEFI specification stores them).
type guid [16]byte

func parseGUID(s string) (guid, error) {
	var g guid
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("%q is not a GUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	raw, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return g, fmt.Errorf("%q is not a GUID: %v", s, err)
	}
	// Text order is big endian throughout; swap the first three fields.
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(raw[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(raw[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(raw[6:8]))
	copy(g[8:], raw[8:])
	return g, nil
}

func (g guid) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%s-%s",
		binary.LittleEndian.Uint32(g[0:4]),
		binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]),
		hex.EncodeToString(g[8:10]),
		hex.EncodeToString(g[10:16]))
}

func (g guid) isZero() bool { return g == guid{} }

// parseMBRID parses "0x1a2b3c4d" (the 0x is optional).
func parseMBRID(s string) (uint32, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 32)
	if err != nil {
		return 0, fmt.Errorf("MBR disk ID %q is not a 32-bit hex number like 0x1a2b3c4d", s)
	}
	return uint32(v), nil
}

func formatMBRID(v uint32) string { return fmt.Sprintf("0x%08x", v) }

// parseMBRType parses "0c", "c", "0x0c" or "0C".
func parseMBRType(s string) (byte, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 8)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("MBR partition type %q is not a non-zero hex byte like \"0c\" or \"83\"", s)
	}
	return byte(v), nil
}

// encodeName converts a GPT partition name to its 72-byte UTF-16LE field.
func encodeName(name string) ([72]byte, error) {
	var out [72]byte
	units := utf16.Encode([]rune(name))
	if len(units) > 36 {
		return out, fmt.Errorf("GPT name %q is %d UTF-16 code units long, the limit is 36", name, len(units))
	}
	for i, u := range units {
		if u == 0 {
			return out, fmt.Errorf("GPT name %q contains a NUL character", name)
		}
		binary.LittleEndian.PutUint16(out[2*i:], u)
	}
	return out, nil
}

func decodeName(b []byte) string {
	units := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u := binary.LittleEndian.Uint16(b[i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	return string(utf16.Decode(units))
}

// bounds is the usable range of a table in sectors, inclusive.
type bounds struct {
	first, last uint64
	maxNumber   int
}

// checkPartitions validates numbers, sector alignment, bounds and overlaps.
// It is shared by Encode and Read so that a table Read accepts is one Encode
// would write.
func checkPartitions(parts []Partition, b bounds) error {
	seen := map[int]bool{}
	for _, p := range parts {
		if p.Number < 1 || p.Number > b.maxNumber {
			return fmt.Errorf("%s: number out of range 1-%d", p.label(), b.maxNumber)
		}
		if seen[p.Number] {
			return fmt.Errorf("partition number %d is used twice", p.Number)
		}
		seen[p.Number] = true
		if p.Start%SectorSize != 0 || p.Size%SectorSize != 0 {
			return fmt.Errorf("%s: start %d and size %d must be multiples of %d bytes", p.label(), p.Start, p.Size, SectorSize)
		}
		if p.Size <= 0 || p.Start < 0 {
			return fmt.Errorf("%s: start %d, size %d: the size must be positive", p.label(), p.Start, p.Size)
		}
		first, last := uint64(p.Start/SectorSize), uint64(p.End()/SectorSize-1)
		if first < b.first {
			return fmt.Errorf("%s starts at sector %d, before the first usable sector %d: move it up", p.label(), first, b.first)
		}
		if last > b.last {
			return fmt.Errorf("%s ends at sector %d, beyond the last usable sector %d: shrink it or use a larger disk", p.label(), last, b.last)
		}
	}
	sorted := append([]Partition(nil), parts...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Start < sorted[i-1].End() {
			return fmt.Errorf("%s (bytes %d-%d) overlaps %s (bytes %d-%d)",
				sorted[i-1].label(), sorted[i-1].Start, sorted[i-1].End(),
				sorted[i].label(), sorted[i].Start, sorted[i].End())
		}
	}
	return nil
}

func checkDiskSize(diskSize int64) error {
	if diskSize <= 0 || diskSize%SectorSize != 0 {
		return fmt.Errorf("disk size %d is not a positive multiple of %d bytes", diskSize, SectorSize)
	}
	return nil
}

// Encode validates t and returns the writes that put it on a medium of
// diskSize bytes. The slice order is the safe write order: for GPT the backup
// entries and header at the end come first, then the primary entries, then
// the primary header at LBA 1, then the protective MBR (see GrowLast for why).
// Encode writes whole sectors; for MBR the boot-code area of sector 0 is
// zeroed (Bulkhead boards boot from firmware, not from MBR code).
func Encode(t *Table, diskSize int64) ([]Write, error) {
	if t == nil {
		return nil, fmt.Errorf("parttable: nil table")
	}
	if err := checkDiskSize(diskSize); err != nil {
		return nil, fmt.Errorf("parttable: %w", err)
	}
	var (
		ws  []Write
		err error
	)
	switch t.Kind {
	case KindMBR:
		ws, err = encodeMBRTable(t, diskSize)
	case KindGPT:
		ws, err = encodeGPTTable(t, diskSize)
	default:
		return nil, fmt.Errorf("parttable: table kind %q is neither %q nor %q", t.Kind, KindMBR, KindGPT)
	}
	if err != nil {
		return nil, fmt.Errorf("parttable: %s table: %w", t.Kind, err)
	}
	return ws, nil
}
