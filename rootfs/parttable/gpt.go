package parttable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
)

const (
	gptSignature      = "EFI PART"
	gptRevision       = 0x00010000
	gptHeaderSize     = 92
	gptEntrySize      = 128
	gptNumEntries     = 128
	gptEntriesLBA     = 2
	gptAttrLegacyBoot = 1 << 2
	// gptMaxArray bounds the entry array Read accepts (the standard one is
	// 16 KiB), so a corrupt header cannot make the initramfs allocate
	// gigabytes.
	gptMaxArray = 1 << 20
)

// gptHeader holds the fields of a GPT header this package uses.
type gptHeader struct {
	myLBA, altLBA           uint64
	firstUsable, lastUsable uint64
	diskGUID                guid
	entriesLBA              uint64
	numEntries, entrySize   uint32
	entriesCRC              uint32
}

func (h *gptHeader) arraySectors() uint64 {
	return (uint64(h.numEntries)*uint64(h.entrySize) + SectorSize - 1) / SectorSize
}

// marshal returns the header as a full sector with its CRC filled in.
func (h *gptHeader) marshal() []byte {
	b := make([]byte, SectorSize)
	copy(b, gptSignature)
	le := binary.LittleEndian
	le.PutUint32(b[8:], gptRevision)
	le.PutUint32(b[12:], gptHeaderSize)
	le.PutUint64(b[24:], h.myLBA)
	le.PutUint64(b[32:], h.altLBA)
	le.PutUint64(b[40:], h.firstUsable)
	le.PutUint64(b[48:], h.lastUsable)
	copy(b[56:72], h.diskGUID[:])
	le.PutUint64(b[72:], h.entriesLBA)
	le.PutUint32(b[80:], h.numEntries)
	le.PutUint32(b[84:], h.entrySize)
	le.PutUint32(b[88:], h.entriesCRC)
	le.PutUint32(b[16:], crc32.ChecksumIEEE(b[:gptHeaderSize]))
	return b
}

// parseGPTHeader checks signature, revision, size and CRC of a header sector.
func parseGPTHeader(b []byte) (*gptHeader, error) {
	if string(b[:8]) != gptSignature {
		return nil, errors.New("no \"EFI PART\" signature")
	}
	le := binary.LittleEndian
	if rev := le.Uint32(b[8:]); rev>>16 != 1 {
		return nil, fmt.Errorf("unsupported header revision %#08x", rev)
	}
	size := le.Uint32(b[12:])
	if size < gptHeaderSize || size > SectorSize {
		return nil, fmt.Errorf("header size %d outside %d-%d", size, gptHeaderSize, SectorSize)
	}
	c := make([]byte, size)
	copy(c, b[:size])
	le.PutUint32(c[16:], 0)
	if got, want := crc32.ChecksumIEEE(c), le.Uint32(b[16:]); got != want {
		return nil, fmt.Errorf("header CRC32 %#08x, computed %#08x", want, got)
	}
	h := &gptHeader{
		myLBA:       le.Uint64(b[24:]),
		altLBA:      le.Uint64(b[32:]),
		firstUsable: le.Uint64(b[40:]),
		lastUsable:  le.Uint64(b[48:]),
		entriesLBA:  le.Uint64(b[72:]),
		numEntries:  le.Uint32(b[80:]),
		entrySize:   le.Uint32(b[84:]),
		entriesCRC:  le.Uint32(b[88:]),
	}
	copy(h.diskGUID[:], b[56:72])
	if h.entrySize < gptEntrySize || h.entrySize%8 != 0 {
		return nil, fmt.Errorf("entry size %d is not a multiple of 8 of at least %d", h.entrySize, gptEntrySize)
	}
	if h.numEntries == 0 || uint64(h.numEntries)*uint64(h.entrySize) > gptMaxArray {
		return nil, fmt.Errorf("entry array of %d x %d bytes is empty or larger than %d bytes", h.numEntries, h.entrySize, gptMaxArray)
	}
	return h, nil
}

// readSectors reads n sectors at lba.
func readSectors(r io.ReaderAt, lba, n uint64) ([]byte, error) {
	b := make([]byte, n*SectorSize)
	// io.ReaderAt may report io.EOF along with a complete read that ends at
	// the end of the medium; only a short read is an error.
	if got, err := r.ReadAt(b, int64(lba*SectorSize)); got != len(b) {
		return nil, fmt.Errorf("read sectors %d-%d: %w", lba, lba+n-1, err)
	}
	return b, nil
}

// readGPTCopy reads and fully verifies the header at lba and its entry array.
// The entry array returned is padded to whole sectors.
func readGPTCopy(r io.ReaderAt, lba, diskSectors uint64) (*gptHeader, []byte, error) {
	if lba >= diskSectors {
		return nil, nil, fmt.Errorf("LBA %d is beyond the medium (%d sectors)", lba, diskSectors)
	}
	sec, err := readSectors(r, lba, 1)
	if err != nil {
		return nil, nil, err
	}
	h, err := parseGPTHeader(sec)
	if err != nil {
		return nil, nil, err
	}
	if h.myLBA != lba {
		return nil, nil, fmt.Errorf("header at LBA %d says it lives at LBA %d", lba, h.myLBA)
	}
	n := h.arraySectors()
	// Comparisons are arranged so that no sum can overflow on garbage input.
	switch {
	case h.lastUsable >= diskSectors || h.firstUsable > h.lastUsable+1:
		return nil, nil, fmt.Errorf("usable range %d-%d does not fit the medium (%d sectors)", h.firstUsable, h.lastUsable, diskSectors)
	case h.entriesLBA < 2 || h.entriesLBA > diskSectors || n > diskSectors-h.entriesLBA:
		return nil, nil, fmt.Errorf("entry array at LBA %d (%d sectors) is outside the medium", h.entriesLBA, n)
	case h.entriesLBA <= h.lastUsable && h.entriesLBA+n > h.firstUsable:
		return nil, nil, fmt.Errorf("entry array at LBA %d overlaps the usable range %d-%d", h.entriesLBA, h.firstUsable, h.lastUsable)
	case h.entriesLBA <= lba && lba < h.entriesLBA+n:
		return nil, nil, fmt.Errorf("entry array at LBA %d covers its own header", h.entriesLBA)
	// The usable range must leave room for the other copy's entry array,
	// or no tool could keep both copies without overwriting partitions.
	case lba == 1 && h.lastUsable+n >= h.altLBA:
		return nil, nil, fmt.Errorf("usable range %d-%d runs into the backup entry array before LBA %d", h.firstUsable, h.lastUsable, h.altLBA)
	case lba != 1 && h.firstUsable < gptEntriesLBA+n:
		return nil, nil, fmt.Errorf("usable range starts at LBA %d, inside the primary entry array (LBA %d-%d)", h.firstUsable, gptEntriesLBA, gptEntriesLBA+n-1)
	}
	arr, err := readSectors(r, h.entriesLBA, n)
	if err != nil {
		return nil, nil, err
	}
	if got := crc32.ChecksumIEEE(arr[:uint64(h.numEntries)*uint64(h.entrySize)]); got != h.entriesCRC {
		return nil, nil, fmt.Errorf("entry array CRC32 %#08x, computed %#08x", h.entriesCRC, got)
	}
	return h, arr, nil
}

// gptState is what GrowLast and Read learn from a GPT disk.
type gptState struct {
	hdr        *gptHeader // the copy in use
	entries    []byte     // its entry array, padded to whole sectors
	fromBackup bool
	// primaryEntriesLBA is where the primary entry array belongs: the
	// primary header's value when that header is intact, else the
	// standard LBA 2.
	primaryEntriesLBA uint64
}

// loadGPT finds a valid GPT: the primary at LBA 1, else the backup at the
// last LBA, else the backup the (CRC-valid) primary header points at.
func loadGPT(r io.ReaderAt, diskSize int64) (*gptState, error) {
	diskSectors := uint64(diskSize / SectorSize)
	if diskSectors < 3 {
		return nil, fmt.Errorf("medium of %d bytes is too small for a GPT", diskSize)
	}
	h, arr, perr := readGPTCopy(r, 1, diskSectors)
	if perr == nil {
		return &gptState{hdr: h, entries: arr, primaryEntriesLBA: h.entriesLBA}, nil
	}
	st := &gptState{fromBackup: true, primaryEntriesLBA: gptEntriesLBA}
	candidates := []uint64{diskSectors - 1}
	var primary *gptHeader
	if sec, err := readSectors(r, 1, 1); err == nil {
		if ph, err := parseGPTHeader(sec); err == nil {
			primary = ph
			st.primaryEntriesLBA = ph.entriesLBA
			if ph.altLBA != diskSectors-1 {
				candidates = append(candidates, ph.altLBA)
			}
		}
	}
	msgs := []string{"primary GPT: " + perr.Error()}
	for _, lba := range candidates {
		h, arr, err := readGPTCopy(r, lba, diskSectors)
		if err == nil {
			st.hdr, st.entries = h, arr
			return st, nil
		}
		msgs = append(msgs, fmt.Sprintf("backup GPT at LBA %d: %v", lba, err))
	}
	if primary != nil && primary.altLBA >= diskSectors {
		// The usual way to get here: an image written to a smaller medium.
		return nil, fmt.Errorf("the GPT describes a medium of %d bytes but this one holds %d bytes: write the image to a medium of at least that size",
			int64(primary.altLBA+1)*SectorSize, int64(diskSectors)*SectorSize)
	}
	return nil, fmt.Errorf("%s: the disk has no intact GPT, write the image again", strings.Join(msgs, "; "))
}

// gptPartitions decodes the used entries of an array.
func gptPartitions(h *gptHeader, arr []byte) ([]Partition, error) {
	var parts []Partition
	for i := uint32(0); i < h.numEntries; i++ {
		e := arr[uint64(i)*uint64(h.entrySize):][:gptEntrySize]
		var typ, id guid
		copy(typ[:], e[0:16])
		if typ.isZero() {
			continue
		}
		copy(id[:], e[16:32])
		first := binary.LittleEndian.Uint64(e[32:])
		last := binary.LittleEndian.Uint64(e[40:])
		attrs := binary.LittleEndian.Uint64(e[48:])
		if last < first || last >= 1<<54 {
			return nil, fmt.Errorf("entry %d: sectors %d-%d are not a valid range", i+1, first, last)
		}
		parts = append(parts, Partition{
			Number:   int(i) + 1,
			Name:     decodeName(e[56:128]),
			Type:     typ.String(),
			UUID:     id.String(),
			Start:    int64(first) * SectorSize,
			Size:     int64(last-first+1) * SectorSize,
			Bootable: attrs&gptAttrLegacyBoot != 0,
		})
	}
	err := checkPartitions(parts, bounds{first: h.firstUsable, last: h.lastUsable, maxNumber: int(h.numEntries)})
	return parts, err
}

func (st *gptState) table() (*Table, error) {
	parts, err := gptPartitions(st.hdr, st.entries)
	if err != nil {
		return nil, err
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Number < parts[j].Number })
	return &Table{Kind: KindGPT, DiskID: st.hdr.diskGUID.String(), Partitions: parts, FromBackup: st.fromBackup}, nil
}

// gptLayout computes where everything goes on a medium of diskSectors.
type gptLayout struct {
	diskGUID          guid
	numEntries        uint32
	entrySize         uint32
	firstUsable       uint64
	primaryEntriesLBA uint64
}

func (l gptLayout) arraySectors() uint64 {
	return (uint64(l.numEntries)*uint64(l.entrySize) + SectorSize - 1) / SectorSize
}

// lastUsable is the last sector partitions may use: everything after it is
// the backup entry array and the backup header in the last sector.
func (l gptLayout) lastUsable(diskSectors uint64) uint64 {
	return diskSectors - 1 - l.arraySectors() - 1
}

// gptWrites renders a GPT for a medium of diskSectors. pmbrBase is the old
// sector 0 whose boot code is kept (nil for a fresh disk). The order is the
// safe write order documented on GrowLast.
func gptWrites(l gptLayout, arr []byte, pmbrBase []byte, diskSectors uint64) []Write {
	last := diskSectors - 1
	n := l.arraySectors()
	padded := make([]byte, n*SectorSize)
	copy(padded, arr[:uint64(l.numEntries)*uint64(l.entrySize)])
	crc := crc32.ChecksumIEEE(padded[:uint64(l.numEntries)*uint64(l.entrySize)])
	primary := gptHeader{
		myLBA: 1, altLBA: last,
		firstUsable: l.firstUsable, lastUsable: l.lastUsable(diskSectors),
		diskGUID: l.diskGUID, entriesLBA: l.primaryEntriesLBA,
		numEntries: l.numEntries, entrySize: l.entrySize, entriesCRC: crc,
	}
	backup := primary
	backup.myLBA, backup.altLBA, backup.entriesLBA = last, 1, last-n
	return []Write{
		{Off: int64(last-n) * SectorSize, Data: padded},
		{Off: int64(last) * SectorSize, Data: backup.marshal()},
		{Off: int64(l.primaryEntriesLBA) * SectorSize, Data: bytes.Clone(padded)},
		{Off: SectorSize, Data: primary.marshal()},
		{Off: 0, Data: protectiveMBR(pmbrBase, diskSectors)},
	}
}

// protectiveMBR builds sector 0 of a GPT disk: one 0xee entry covering the
// whole medium (capped at 2^32-1 sectors), as the UEFI specification asks.
func protectiveMBR(base []byte, diskSectors uint64) []byte {
	sec := make([]byte, SectorSize)
	if base != nil {
		copy(sec[:mbrEntriesOff], base[:mbrEntriesOff])
	}
	size := diskSectors - 1
	if size > mbrMaxSectors-1 {
		size = mbrMaxSectors - 1
	}
	e := sec[mbrEntriesOff:]
	e[1], e[2], e[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	e[4] = mbrTypeGPT
	end := chs(size)
	if end == [3]byte{0xfe, 0xff, 0xff} {
		// The UEFI specification asks for ff ff ff when the end cannot be
		// expressed in CHS.
		end = [3]byte{0xff, 0xff, 0xff}
	}
	copy(e[5:8], end[:])
	binary.LittleEndian.PutUint32(e[8:], 1)
	binary.LittleEndian.PutUint32(e[12:], uint32(size))
	sec[mbrSigOff], sec[mbrSigOff+1] = 0x55, 0xaa
	return sec
}

func encodeGPTTable(t *Table, diskSize int64) ([]Write, error) {
	diskGUID, err := parseGUID(t.DiskID)
	if err != nil {
		return nil, fmt.Errorf("disk ID: %w", err)
	}
	if diskGUID.isZero() {
		return nil, errors.New("disk GUID must not be all zeros")
	}
	l := gptLayout{
		diskGUID: diskGUID, numEntries: gptNumEntries, entrySize: gptEntrySize,
		firstUsable: gptEntriesLBA + gptNumEntries*gptEntrySize/SectorSize, primaryEntriesLBA: gptEntriesLBA,
	}
	diskSectors := uint64(diskSize / SectorSize)
	if diskSectors < l.firstUsable+l.arraySectors()+2 {
		return nil, fmt.Errorf("disk of %d bytes is too small for a GPT", diskSize)
	}
	if err := checkPartitions(t.Partitions, bounds{first: l.firstUsable, last: l.lastUsable(diskSectors), maxNumber: gptNumEntries}); err != nil {
		return nil, err
	}
	arr := make([]byte, gptNumEntries*gptEntrySize)
	ids := map[guid]int{}
	for _, p := range t.Partitions {
		typ, err := parseGUID(p.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: type: %w", p.label(), err)
		}
		if typ.isZero() {
			return nil, fmt.Errorf("%s: the all-zero type GUID marks an unused entry", p.label())
		}
		id, err := parseGUID(p.UUID)
		if err != nil {
			return nil, fmt.Errorf("%s: UUID: %w", p.label(), err)
		}
		if id.isZero() {
			return nil, fmt.Errorf("%s: partition GUID must not be all zeros", p.label())
		}
		if other, dup := ids[id]; dup {
			return nil, fmt.Errorf("partitions %d and %d share the GUID %s", other, p.Number, p.UUID)
		}
		ids[id] = p.Number
		name, err := encodeName(p.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.label(), err)
		}
		e := arr[(p.Number-1)*gptEntrySize:][:gptEntrySize]
		copy(e[0:16], typ[:])
		copy(e[16:32], id[:])
		binary.LittleEndian.PutUint64(e[32:], uint64(p.Start/SectorSize))
		binary.LittleEndian.PutUint64(e[40:], uint64(p.End()/SectorSize-1))
		if p.Bootable {
			binary.LittleEndian.PutUint64(e[48:], gptAttrLegacyBoot)
		}
		copy(e[56:128], name[:])
	}
	return gptWrites(l, arr, nil, diskSectors), nil
}
