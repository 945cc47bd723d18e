package dmlog

import (
	"bytes"
	"encoding/binary"
)

// Writer makes logs in the format QEMU's blklogwrites writes, for tests
// and fuzz seeds.
type Writer struct {
	buf     bytes.Buffer
	entries uint64
}

// NewWriter returns a Writer with 512-byte sectors.
func NewWriter() *Writer {
	w := &Writer{}
	w.buf.Write(make([]byte, 512))
	return w
}

// Entry appends an entry with its data (a whole number of sectors).
func (w *Writer) Entry(sector, sectors, flags uint64, data []byte) {
	hdr := make([]byte, 512)
	binary.LittleEndian.PutUint64(hdr[0:], sector)
	binary.LittleEndian.PutUint64(hdr[8:], sectors)
	binary.LittleEndian.PutUint64(hdr[16:], flags)
	w.buf.Write(hdr)
	w.buf.Write(data)
	w.entries++
}

// Write appends a write of data at sector.
func (w *Writer) Write(sector uint64, data []byte) { w.Entry(sector, uint64(len(data)/512), 0, data) }

// Flush appends a flush.
func (w *Writer) Flush() { w.Entry(0, 0, FlagFlush, nil) }

// Entries is the number of entries so far.
func (w *Writer) Entries() uint64 { return w.entries }

// Bytes returns the log with a super block that counts counted entries.
func (w *Writer) Bytes(counted uint64) []byte {
	b := bytes.Clone(w.buf.Bytes())
	binary.LittleEndian.PutUint64(b[0:], LogMagic)
	binary.LittleEndian.PutUint64(b[8:], LogVersion)
	binary.LittleEndian.PutUint64(b[16:], counted)
	binary.LittleEndian.PutUint32(b[24:], 512)
	return b
}
