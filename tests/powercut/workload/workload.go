// Package workload is the file format of the power-cut tests' data
// workload: an app-like writer (cmd/bh-workload) that, every few
// milliseconds, appends a record to a journal file, rewrites a counter file
// in place and, every FileEvery records, creates a file, fsyncing each
// (and the directory after a create) before it reports the record on the
// console as synced. The checks of package powercut read the same files
// from every crash state and require every record reported before the cut.
//
// It has no dependencies, so the device program stays small.
package workload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Layout inside the data partition (mounted at /data on the device).
const (
	// Dir is the workload's directory relative to the data filesystem's root.
	Dir         = "workload"
	JournalFile = "journal"
	CounterFile = "counter"
	FilesDir    = "files"
	// FileEvery: record n creates FilesDir/<n> when n%FileEvery == 0,
	// and deletes FilesDir/<n-FileEvery*FileWindow>: the directory holds
	// the last FileWindow files.
	FileEvery  = 8
	FileWindow = 32
	// FileSize is the size of each created file.
	FileSize = 4096
	// RecordSize is the size of a journal or counter record.
	RecordSize = 32

	// SyncedPrefix starts the console line the program prints once record
	// n and everything before it is durable: "workload: synced <n>" after
	// PID 1 prefixed the service name.
	SyncedPrefix = "synced "
	// RecoveredPrefix starts the line it prints at start, after reading
	// what the last run left.
	RecoveredPrefix = "recovered "
)

var magic = [8]byte{'b', 'h', 'w', 'l', '0', '0', '0', '1'}

// Record encodes record n: magic, n, ^n, CRC-32 of the rest.
func Record(n uint64) []byte {
	b := make([]byte, RecordSize)
	copy(b, magic[:])
	binary.LittleEndian.PutUint64(b[8:], n)
	binary.LittleEndian.PutUint64(b[16:], ^n)
	binary.LittleEndian.PutUint32(b[28:], crc32.ChecksumIEEE(b[:28]))
	return b
}

// ErrBadRecord is returned for a record that is torn, blank or corrupt.
var ErrBadRecord = errors.New("bad workload record")

// ParseRecord decodes a record.
func ParseRecord(b []byte) (uint64, error) {
	if len(b) != RecordSize {
		return 0, fmt.Errorf("%w: %d bytes", ErrBadRecord, len(b))
	}
	if !bytes.Equal(b[:8], magic[:]) {
		return 0, fmt.Errorf("%w: magic %q", ErrBadRecord, b[:8])
	}
	if crc32.ChecksumIEEE(b[:28]) != binary.LittleEndian.Uint32(b[28:]) {
		return 0, fmt.Errorf("%w: checksum", ErrBadRecord)
	}
	n := binary.LittleEndian.Uint64(b[8:])
	if binary.LittleEndian.Uint64(b[16:]) != ^n {
		return 0, fmt.Errorf("%w: check word", ErrBadRecord)
	}
	return n, nil
}

// JournalValid returns how many records from the start of a journal are
// record 1, 2, 3, ... in order: the records that count.
func JournalValid(b []byte) uint64 {
	var n uint64
	for off := 0; off+RecordSize <= len(b); off += RecordSize {
		v, err := ParseRecord(b[off : off+RecordSize])
		if err != nil || v != n+1 {
			break
		}
		n++
	}
	return n
}

// FileName is the name of record n's file in FilesDir.
func FileName(n uint64) string { return fmt.Sprintf("%08d", n) }

// FileData is the content of record n's file: its record repeated.
func FileData(n uint64) []byte {
	return bytes.Repeat(Record(n), FileSize/RecordSize)
}

// ParseSynced returns n from a console line "...synced <n>".
func ParseSynced(line string) (uint64, bool) {
	i := strings.Index(line, SyncedPrefix)
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(line[i+len(SyncedPrefix):]), 10, 64)
	return n, err == nil
}

// State is what a crash state's workload directory holds.
type State struct {
	// Journal is the number of valid records from the journal's start.
	Journal uint64
	// Counter is the counter file's record, CounterErr why it is not
	// valid (an absent file is a zero counter).
	Counter    uint64
	CounterErr error
	// Files maps every file of FilesDir to its problem ("" when its
	// content is what its name says).
	Files map[string]string
}

// Check returns what is missing or broken if everything up to record
// synced must be there.
func (s State) Check(synced uint64) []string {
	var bad []string
	if s.Journal < synced {
		bad = append(bad, fmt.Sprintf("journal holds %d valid records, %d were fsync'd", s.Journal, synced))
	}
	if s.CounterErr != nil && synced > 0 {
		bad = append(bad, fmt.Sprintf("counter: %v (record %d was fsync'd)", s.CounterErr, synced))
	} else if s.Counter < synced {
		bad = append(bad, fmt.Sprintf("counter is %d, %d was fsync'd", s.Counter, synced))
	}
	if s.CounterErr == nil && s.Counter > s.Journal {
		bad = append(bad, fmt.Sprintf("counter %d is ahead of the journal (%d): the journal was fsync'd first", s.Counter, s.Journal))
	}
	// Files deleted before the cut may be gone, and so may the one the
	// next record (synced+1, not reported yet) deletes; the newer ones
	// must be there.
	first := uint64(FileEvery)
	if gone := synced + 1; gone > FileEvery*FileWindow {
		gone -= FileEvery * FileWindow // the newest file that may be deleted
		first = (gone/FileEvery + 1) * FileEvery
	}
	for n := first; n <= synced; n += FileEvery {
		problem, ok := s.Files[FileName(n)]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("file %s/%s is missing, it was fsync'd with its directory", FilesDir, FileName(n)))
		case problem != "":
			bad = append(bad, fmt.Sprintf("file %s/%s: %s", FilesDir, FileName(n), problem))
		}
	}
	return bad
}

// CheckFile returns the problem of a file's content, "" if none.
func CheckFile(name string, data []byte) string {
	n, err := strconv.ParseUint(name, 10, 64)
	if err != nil {
		return "not a workload file name"
	}
	if !bytes.Equal(data, FileData(n)) {
		if len(data) != FileSize {
			return fmt.Sprintf("%d bytes, want %d", len(data), FileSize)
		}
		return "content differs from what was written"
	}
	return ""
}
