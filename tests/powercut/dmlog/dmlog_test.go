package dmlog

import (
	"bytes"
	"errors"
	"testing"
)

func sectors(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n*512) }

func parse(t *testing.T, b []byte) *Log {
	t.Helper()
	l, err := ParseLog(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseLogReadsEveryEntryWithItsData(t *testing.T) {
	tl := NewWriter()
	tl.Write(100, sectors(2, 0xaa))
	tl.Flush()
	tl.Write(7, sectors(1, 0xbb))
	tl.Entry(50, 1000, FlagDiscard, nil)
	l := parse(t, tl.Bytes(tl.Entries()))
	if len(l.Entries) != 4 || l.TornTail {
		t.Fatalf("entries %v torn %v, want 4 entries", l.Entries, l.TornTail)
	}
	if e := l.Entries[0]; !e.IsWrite() || e.Sector != 100 || e.Sectors != 2 || e.IsFlush() {
		t.Errorf("entry 0 is %s", e)
	}
	if e := l.Entries[1]; !e.IsFlush() || e.IsWrite() {
		t.Errorf("entry 1 is %s, want a flush", e)
	}
	if e := l.Entries[3]; !e.IsDiscard() || e.IsWrite() {
		t.Errorf("entry 3 is %s, want a discard", e)
	}
	d, err := l.Data(l.Entries[2], 0, 1)
	if err != nil || !bytes.Equal(d, sectors(1, 0xbb)) {
		t.Errorf("data of entry 2: %v, %x...", err, d[:4])
	}
}

func TestParseLogTakesEntriesTheSuperBlockDoesNotCountYet(t *testing.T) {
	tl := NewWriter()
	tl.Write(1, sectors(1, 1))
	tl.Flush()
	tl.Write(2, sectors(1, 2))
	tl.Write(3, sectors(1, 3))
	// QEMU updated the super block at the flush only.
	l := parse(t, tl.Bytes(2))
	if len(l.Entries) != 4 || l.Counted != 2 {
		t.Fatalf("%d entries, counted %d; want 4 and 2", len(l.Entries), l.Counted)
	}
}

func TestParseLogStopsAtATornTailBeyondTheCount(t *testing.T) {
	tl := NewWriter()
	tl.Write(1, sectors(1, 1))
	tl.Write(2, sectors(4, 2))
	b := tl.Bytes(1)
	b = b[:len(b)-512] // the killed QEMU did not finish the last entry's data
	l := parse(t, b)
	if len(l.Entries) != 1 || !l.TornTail {
		t.Fatalf("%d entries, torn %v; want 1 and a torn tail", len(l.Entries), l.TornTail)
	}
}

func TestParseLogStopsAtStaleBytesBeyondTheCount(t *testing.T) {
	tl := NewWriter()
	tl.Write(1, sectors(1, 1))
	b := append(tl.Bytes(1), sectors(3, 0)...) // a file longer than the log
	if l := parse(t, b); len(l.Entries) != 1 {
		t.Fatalf("%d entries, want 1", len(l.Entries))
	}
}

func TestParseLogRefusesWhatIsNotALog(t *testing.T) {
	tl := NewWriter()
	tl.Write(1, sectors(1, 1))
	good := tl.Bytes(1)
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"an empty file", func(b []byte) []byte { return nil }, ErrNotLog},
		{"a wrong magic", func(b []byte) []byte { b[0] ^= 1; return b }, ErrNotLog},
		{"a wrong version", func(b []byte) []byte { b[8] = 2; return b }, ErrNotLog},
		{"a sector size that is no power of two", func(b []byte) []byte { b[24] = 3; return b }, ErrNotLog},
		{"a counted entry with unknown flags", func(b []byte) []byte { b[512+16] = 0x80; return b }, ErrCorruptLog},
		{"a counted entry cut short", func(b []byte) []byte { return b[:len(b)-1] }, ErrCorruptLog},
		{"more counted entries than there are", func(b []byte) []byte { b[16] = 5; return b }, ErrCorruptLog},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(bytes.Clone(good))
			_, err := ParseLog(bytes.NewReader(b), int64(len(b)))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzParseLog(f *testing.F) {
	tl := NewWriter()
	tl.Write(100, sectors(2, 0xaa))
	tl.Flush()
	tl.Entry(0, 0, FlagMark, nil)
	tl.Entry(50, 1<<40, FlagDiscard, nil)
	f.Add(tl.Bytes(2))
	f.Add(tl.Bytes(4))
	f.Add(tl.Bytes(9))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLog(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		prev := int64(l.SectorSize)
		for i, e := range l.Entries {
			if e.Index != i || e.Offset != prev || e.End <= e.Offset || e.End > int64(len(b)) {
				t.Fatalf("entry %d: %+v after offset %d in %d bytes", i, e, prev, len(b))
			}
			if e.IsWrite() {
				if _, err := l.Data(e, 0, e.Sectors); err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
			}
			prev = e.End
		}
		if uint64(len(l.Entries)) < l.Counted {
			t.Fatalf("%d entries, the super block counts %d", len(l.Entries), l.Counted)
		}
	})
}
