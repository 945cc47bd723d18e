package powercut

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// testLog writes logs in the format QEMU's blklogwrites writes.
type testLog struct {
	buf     bytes.Buffer
	entries uint64
}

func newTestLog() *testLog {
	l := &testLog{}
	l.buf.Write(make([]byte, 512))
	return l
}

func (l *testLog) entry(sector, sectors, flags uint64, data []byte) {
	hdr := make([]byte, 512)
	binary.LittleEndian.PutUint64(hdr[0:], sector)
	binary.LittleEndian.PutUint64(hdr[8:], sectors)
	binary.LittleEndian.PutUint64(hdr[16:], flags)
	l.buf.Write(hdr)
	l.buf.Write(data)
	l.entries++
}

func (l *testLog) write(sector uint64, data []byte) { l.entry(sector, uint64(len(data)/512), 0, data) }
func (l *testLog) flush()                           { l.entry(0, 0, FlagFlush, nil) }

// bytes returns the log with a super block that counts counted entries.
func (l *testLog) bytes(counted uint64) []byte {
	b := bytes.Clone(l.buf.Bytes())
	binary.LittleEndian.PutUint64(b[0:], LogMagic)
	binary.LittleEndian.PutUint64(b[8:], LogVersion)
	binary.LittleEndian.PutUint64(b[16:], counted)
	binary.LittleEndian.PutUint32(b[24:], 512)
	return b
}

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
	tl := newTestLog()
	tl.write(100, sectors(2, 0xaa))
	tl.flush()
	tl.write(7, sectors(1, 0xbb))
	tl.entry(50, 1000, FlagDiscard, nil)
	l := parse(t, tl.bytes(tl.entries))
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
	tl := newTestLog()
	tl.write(1, sectors(1, 1))
	tl.flush()
	tl.write(2, sectors(1, 2))
	tl.write(3, sectors(1, 3))
	// QEMU updated the super block at the flush only.
	l := parse(t, tl.bytes(2))
	if len(l.Entries) != 4 || l.Counted != 2 {
		t.Fatalf("%d entries, counted %d; want 4 and 2", len(l.Entries), l.Counted)
	}
}

func TestParseLogStopsAtATornTailBeyondTheCount(t *testing.T) {
	tl := newTestLog()
	tl.write(1, sectors(1, 1))
	tl.write(2, sectors(4, 2))
	b := tl.bytes(1)
	b = b[:len(b)-512] // the killed QEMU did not finish the last entry's data
	l := parse(t, b)
	if len(l.Entries) != 1 || !l.TornTail {
		t.Fatalf("%d entries, torn %v; want 1 and a torn tail", len(l.Entries), l.TornTail)
	}
}

func TestParseLogStopsAtStaleBytesBeyondTheCount(t *testing.T) {
	tl := newTestLog()
	tl.write(1, sectors(1, 1))
	b := append(tl.bytes(1), sectors(3, 0)...) // a file longer than the log
	if l := parse(t, b); len(l.Entries) != 1 {
		t.Fatalf("%d entries, want 1", len(l.Entries))
	}
}

func TestParseLogRefusesWhatIsNotALog(t *testing.T) {
	tl := newTestLog()
	tl.write(1, sectors(1, 1))
	good := tl.bytes(1)
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

// TestViewIsTheDiskAfterTheWritesInOrder compares the overlay with a disk
// that had the writes applied one by one.
func TestViewIsTheDiskAfterTheWritesInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const disk = 256
	base := make([]byte, disk*512)
	for i := range base {
		base[i] = byte(rng.IntN(256))
	}
	tl := newTestLog()
	type w struct{ sector, n int }
	var ws []w
	for range 300 {
		s := rng.IntN(disk - 1)
		n := 1 + rng.IntN(min(16, disk-s))
		data := make([]byte, n*512)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		tl.write(uint64(s), data)
		ws = append(ws, w{s, n})
	}
	b := tl.bytes(tl.entries)
	l := parse(t, b)
	want := bytes.Clone(base)
	o := &overlay{}
	for i, e := range l.Entries {
		torn := uint64(0)
		if i%7 == 0 && e.Sectors > 1 {
			torn = 1 + uint64(rng.IntN(int(e.Sectors-1)))
		}
		n := e.Sectors
		if torn > 0 {
			n = torn
		}
		d, _ := l.Data(e, 0, n)
		copy(want[e.Sector*512:], d)
		o.apply(e, n)
		for k := 1; k < len(o.ext); k++ {
			if o.ext[k-1].end > o.ext[k].start || o.ext[k].start >= o.ext[k].end {
				t.Fatalf("after entry %d the extents overlap or are empty: %v", i, o.ext[k-1:k+1])
			}
		}
	}
	v := &View{log: l, base: bytes.NewReader(base), size: int64(len(base)), layers: []*overlay{o}}
	got := make([]byte, len(base))
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the view differs from the disk the writes produce")
	}
	// Unaligned reads too.
	for range 100 {
		off := rng.IntN(len(base) - 1)
		n := 1 + rng.IntN(len(base)-off)
		p := make([]byte, n)
		if _, err := v.ReadAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, want[off:off+n]) {
			t.Fatalf("read of %d bytes at %d differs", n, off)
		}
	}
}

func TestEnumerateCoversPrefixesSubsetsAndTornWrites(t *testing.T) {
	tl := newTestLog()
	tl.write(10, sectors(4, 1)) // 0
	tl.write(20, sectors(1, 2)) // 1
	tl.write(30, sectors(2, 3)) // 2
	tl.flush()                  // 3
	tl.write(40, sectors(1, 4)) // 4
	l := parse(t, tl.bytes(tl.entries))
	states := Enumerate(l, EnumOptions{Exhaustive: 8, TearAll: 64})
	count := map[Kind]int{}
	for _, s := range states {
		count[s.Kind]++
	}
	// The disk before any write, and after each of the 4 writes.
	if count[KindPrefix] != 5 {
		t.Errorf("%d prefix states, want 5", count[KindPrefix])
	}
	// Entry 0 torn at 3 boundaries, entry 2 at 1.
	if count[KindTorn] != 4 {
		t.Errorf("%d torn states, want 4", count[KindTorn])
	}
	// Subsets of {0,1,2} that are neither empty nor a prefix: 7 - 3.
	if count[KindSubset] != 4 {
		t.Errorf("%d subset states, want 4", count[KindSubset])
	}
	for _, s := range states {
		if s.Cut >= 3 && s.Durable != 4 {
			t.Errorf("state %s after the flush has durable %d, want 4", s.Name(), s.Durable)
		}
	}
	for i := 1; i < len(states); i++ {
		if states[i].Durable < states[i-1].Durable {
			t.Fatalf("states are not in log order at %s", states[i].Name())
		}
	}
}

func TestEnumerateSamplesLargeEpochs(t *testing.T) {
	tl := newTestLog()
	for i := range 40 {
		tl.write(uint64(i*8), sectors(8, byte(i)))
	}
	l := parse(t, tl.bytes(tl.entries))
	o := EnumOptions{Exhaustive: 8, Sampled: 10, TearAll: 4, TearSampled: 3, Seed: 7}
	a, b := Enumerate(l, o), Enumerate(l, o)
	if len(a) != len(b) {
		t.Fatal("the same seed gave different states")
	}
	subsets := 0
	for _, s := range a {
		if s.Kind == KindSubset {
			subsets++
		}
		if s.Kind == KindTorn && (s.TornSectors == 0 || s.TornSectors >= 8) {
			t.Errorf("torn state %s tears outside the write", s.Name())
		}
	}
	if subsets == 0 || subsets > 20 {
		t.Errorf("%d subset states, want 1..20", subsets)
	}
}

func FuzzParseLog(f *testing.F) {
	tl := newTestLog()
	tl.write(100, sectors(2, 0xaa))
	tl.flush()
	tl.entry(0, 0, FlagMark, nil)
	tl.entry(50, 1<<40, FlagDiscard, nil)
	f.Add(tl.bytes(2))
	f.Add(tl.bytes(4))
	f.Add(tl.bytes(9))
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
		Enumerate(l, EnumOptions{Exhaustive: 3, Sampled: 2, TearAll: 2, TearSampled: 2})
	})
}

// TestCopyRangeCopiesTheViewOfASparseBase compares a copy of a view over a
// sparse base file with the view itself.
func TestCopyRangeCopiesTheViewOfASparseBase(t *testing.T) {
	dir := t.TempDir()
	base, err := os.Create(filepath.Join(dir, "base"))
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	const size = 8 << 20
	base.Truncate(size)
	base.WriteAt(sectors(8, 0x11), 1<<20)       // a data extent
	base.WriteAt(sectors(3, 0x22), 5<<20+512*5) // another, unaligned
	tl := newTestLog()
	tl.write(2048+4, sectors(8, 0x33)) // over the first extent
	tl.write(6000, sectors(2, 0x44))   // in a hole
	l := parse(t, tl.bytes(tl.entries))
	o := &overlay{}
	for _, e := range l.Entries {
		o.apply(e, e.Sectors)
	}
	v := &View{log: l, base: base, size: size, layers: []*overlay{o}}
	for _, r := range []struct{ off, n int64 }{{0, size}, {1<<20 + 512, 3 << 20}, {3000 * 512, 4 << 20}} {
		want := make([]byte, r.n)
		if _, err := v.ReadAt(want, r.off); err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dir, "out"))
		if err != nil {
			t.Fatal(err)
		}
		out.Truncate(r.n)
		if err := v.CopyRange(out, 0, r.off, r.n); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, r.n)
		out.ReadAt(got, 0)
		out.Close()
		if !bytes.Equal(got, want) {
			t.Errorf("copy of [%d, +%d) differs from the view", r.off, r.n)
		}
	}
}
