// Package dmlog reads the dm-log-writes format: the write log of Linux's
// dm-log-writes target and of QEMU's blklogwrites block driver, which the
// power-cut tests put between a guest and its disk (tests/powercut). It
// owns the format only: what the writes mean is package powercut's.
package dmlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The dm-log-writes format, as Linux's drivers/md/dm-log-writes.c defines it
// and QEMU's block/blklogwrites.c writes it. All fields are little-endian.
//
//	sector 0:   super block  magic u64, version u64, nr_entries u64, sectorsize u32
//	sector 1..: entries, each  sector u64, nr_sectors u64, flags u64, data_len u64
//	            in a sector of its own, followed by its data (nr_sectors
//	            sectors; none for a flush or a discard; data_len bytes
//	            rounded up to sectors for a mark)
//
// QEMU counts sector and nr_sectors in units of the log's sector size (512
// unless log-sector-size says otherwise), writes an entry when the write to
// the disk has completed, and a flush entry when the flush has. It rewrites
// the super block only on a flush and every 4096 entries, so nr_entries may
// lag behind the entries that follow it.
const (
	LogMagic   = 0x6a736677736872
	LogVersion = 1

	FlagFlush    = 1 << 0
	FlagFUA      = 1 << 1
	FlagDiscard  = 1 << 2
	FlagMark     = 1 << 3
	FlagMetadata = 1 << 4

	knownFlags = FlagFlush | FlagFUA | FlagDiscard | FlagMark | FlagMetadata

	superSize = 28
	entrySize = 32

	minLogSector = 512
	maxLogSector = 1 << 16
)

// Errors of ParseLog; test with errors.Is.
var (
	// ErrNotLog: no dm-log-writes super block.
	ErrNotLog = errors.New("not a dm-log-writes log")
	// ErrCorruptLog: an entry the super block counts is malformed or
	// extends past the end of the log.
	ErrCorruptLog = errors.New("corrupt dm-log-writes log")
)

// Entry is one logged request.
type Entry struct {
	// Index is the entry's position in the log, from 0.
	Index int
	// Sector and Sectors locate the write on the disk, in units of the
	// log's sector size.
	Sector, Sectors uint64
	Flags           uint64
	// DataLen is a mark's text length (zero for other entries).
	DataLen uint64
	// Offset is where the entry's header starts in the log; its data (if
	// any) follows one log sector later. End is the offset after it.
	Offset, End int64
}

// IsFlush reports a flush (a cache flush request, possibly without data).
func (e Entry) IsFlush() bool { return e.Flags&FlagFlush != 0 }

// IsFUA reports a forced-unit-access write: durable once logged.
func (e Entry) IsFUA() bool { return e.Flags&FlagFUA != 0 }

// IsDiscard reports a discard (no data in the log).
func (e Entry) IsDiscard() bool { return e.Flags&FlagDiscard != 0 }

// IsMark reports a mark (a label in the log, not a disk write).
func (e Entry) IsMark() bool { return e.Flags&FlagMark != 0 }

// IsWrite reports an entry that changes sectors of the disk with data from
// the log.
func (e Entry) IsWrite() bool { return e.Sectors > 0 && !e.IsDiscard() && !e.IsMark() }

func (e Entry) String() string {
	var kind string
	switch {
	case e.IsMark():
		kind = "mark"
	case e.IsDiscard():
		kind = "discard"
	case e.IsWrite():
		kind = "write"
	default:
		kind = "flush"
	}
	if e.IsFlush() && e.IsWrite() {
		kind = "flush+write"
	}
	if e.IsFUA() {
		kind += "+fua"
	}
	return fmt.Sprintf("#%d %s sector %d +%d", e.Index, kind, e.Sector, e.Sectors)
}

// Log is a parsed write log. The data stays in the log file and is read
// through Data.
type Log struct {
	// SectorSize is the unit of the log and of Entry sectors.
	SectorSize int
	// Counted is nr_entries of the super block; Entries may hold more
	// (see the format comment).
	Counted uint64
	Entries []Entry
	// TornTail says the log ended inside an entry beyond Counted (the
	// recording machine was killed while QEMU wrote it); that entry is
	// not in Entries.
	TornTail bool

	r io.ReaderAt
}

// ParseLog reads the super block and the entry headers of a log of size
// bytes. Entries beyond the super block's count are taken while they are
// well formed and complete, which is what a log looks like when QEMU was
// stopped between two super block updates.
func ParseLog(r io.ReaderAt, size int64) (*Log, error) {
	var sb [superSize]byte
	if size < superSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrNotLog, size)
	}
	if _, err := r.ReadAt(sb[:], 0); err != nil {
		return nil, fmt.Errorf("%w: read super block: %v", ErrNotLog, err)
	}
	if m := binary.LittleEndian.Uint64(sb[0:]); m != LogMagic {
		return nil, fmt.Errorf("%w: magic %#x", ErrNotLog, m)
	}
	if v := binary.LittleEndian.Uint64(sb[8:]); v != LogVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrNotLog, v, LogVersion)
	}
	l := &Log{Counted: binary.LittleEndian.Uint64(sb[16:]), r: r}
	ss := binary.LittleEndian.Uint32(sb[24:])
	if ss < minLogSector || ss > maxLogSector || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("%w: sector size %d", ErrNotLog, ss)
	}
	l.SectorSize = int(ss)
	sector := int64(ss)
	maxSectors := uint64(size / sector)
	off := sector
	var hdr [entrySize]byte
	for i := 0; ; i++ {
		counted := uint64(i) < l.Counted
		if off+sector > size {
			if counted {
				return nil, fmt.Errorf("%w: the super block counts %d entries, the log ends after %d", ErrCorruptLog, l.Counted, i)
			}
			l.TornTail = off < size
			return l, nil
		}
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return nil, fmt.Errorf("read entry %d at byte %d: %w", i, off, err)
		}
		e := Entry{
			Index:   i,
			Sector:  binary.LittleEndian.Uint64(hdr[0:]),
			Sectors: binary.LittleEndian.Uint64(hdr[8:]),
			Flags:   binary.LittleEndian.Uint64(hdr[16:]),
			DataLen: binary.LittleEndian.Uint64(hdr[24:]),
			Offset:  off,
		}
		bad := ""
		switch {
		case e.Flags&^knownFlags != 0:
			bad = fmt.Sprintf("unknown flags %#x", e.Flags)
		case (e.Sectors > maxSectors && e.Flags&FlagDiscard == 0) || e.DataLen > uint64(size):
			bad = fmt.Sprintf("%d sectors, %d data bytes in a log of %d bytes", e.Sectors, e.DataLen, size)
		case e.Sector > ^uint64(0)-e.Sectors:
			bad = fmt.Sprintf("sector %d + %d overflows", e.Sector, e.Sectors)
		case e.Sectors == 0 && e.Flags == 0 && e.DataLen == 0 && e.Sector == 0:
			bad = "empty entry"
		}
		if bad != "" {
			if counted {
				return nil, fmt.Errorf("%w: entry %d at byte %d: %s", ErrCorruptLog, i, off, bad)
			}
			return l, nil // stale bytes after the last entry
		}
		data := uint64(0)
		switch {
		case e.IsDiscard():
		case e.Sectors > 0:
			data = e.Sectors
		default:
			data = (e.DataLen + uint64(ss) - 1) / uint64(ss)
		}
		end := off + sector + int64(data)*sector
		if end > size || end < off {
			if counted {
				return nil, fmt.Errorf("%w: entry %d (%s) ends at byte %d, after the end of the log (%d)", ErrCorruptLog, i, e, end, size)
			}
			l.TornTail = true
			return l, nil
		}
		e.End = end
		l.Entries = append(l.Entries, e)
		off = end
	}
}

// Data returns sectors [from, to) of a write's data.
func (l *Log) Data(e Entry, from, to uint64) ([]byte, error) {
	if !e.IsWrite() || from > to || to > e.Sectors {
		return nil, fmt.Errorf("entry %s: no data sectors [%d, %d)", e, from, to)
	}
	ss := int64(l.SectorSize)
	b := make([]byte, int64(to-from)*ss)
	if _, err := l.r.ReadAt(b, e.Offset+ss+int64(from)*ss); err != nil {
		return nil, fmt.Errorf("entry %s: read data: %w", e, err)
	}
	return b, nil
}

// ReadData reads len(p) bytes of a write's data, from byte off of it.
func (l *Log) ReadData(e Entry, off int64, p []byte) error {
	ss := int64(l.SectorSize)
	if !e.IsWrite() || off < 0 || off+int64(len(p)) > int64(e.Sectors)*ss {
		return fmt.Errorf("entry %s: no data bytes [%d, %d)", e, off, off+int64(len(p)))
	}
	if _, err := l.r.ReadAt(p, e.Offset+ss+off); err != nil {
		return fmt.Errorf("entry %s: read data: %w", e, err)
	}
	return nil
}

// Empty returns a log without entries, for checking a disk as it stands.
func Empty(sectorSize int) *Log { return &Log{SectorSize: sectorSize} }

// Mark returns a mark entry's text.
func (l *Log) Mark(e Entry) (string, error) {
	if !e.IsMark() {
		return "", fmt.Errorf("entry %s is not a mark", e)
	}
	b := make([]byte, e.DataLen)
	if _, err := l.r.ReadAt(b, e.Offset+int64(l.SectorSize)); err != nil {
		return "", fmt.Errorf("entry %s: read mark: %w", e, err)
	}
	return string(b), nil
}
