package powercut

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

func sectors(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n*512) }

func parse(t *testing.T, b []byte) *dmlog.Log {
	t.Helper()
	l, err := dmlog.ParseLog(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return l
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
	tl := dmlog.NewWriter()
	type w struct{ sector, n int }
	var ws []w
	for range 300 {
		s := rng.IntN(disk - 1)
		n := 1 + rng.IntN(min(16, disk-s))
		data := make([]byte, n*512)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		tl.Write(uint64(s), data)
		ws = append(ws, w{s, n})
	}
	b := tl.Bytes(tl.Entries())
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
	tl := dmlog.NewWriter()
	tl.Write(10, sectors(4, 1)) // 0
	tl.Write(20, sectors(1, 2)) // 1
	tl.Write(30, sectors(2, 3)) // 2
	tl.Flush()                  // 3
	tl.Write(40, sectors(1, 4)) // 4
	l := parse(t, tl.Bytes(tl.Entries()))
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
	tl := dmlog.NewWriter()
	for i := range 40 {
		tl.Write(uint64(i*8), sectors(8, byte(i)))
	}
	l := parse(t, tl.Bytes(tl.Entries()))
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
	tl := dmlog.NewWriter()
	tl.Write(2048+4, sectors(8, 0x33)) // over the first extent
	tl.Write(6000, sectors(2, 0x44))   // in a hole
	l := parse(t, tl.Bytes(tl.Entries()))
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
