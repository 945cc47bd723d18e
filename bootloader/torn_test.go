package bootloader

import (
	"errors"
	"testing"
)

// tearPoints are the cut points of the torn-write tests of issue 3: every
// 512-byte boundary of a copy and every byte of its last sector (a cut at
// size is the complete write).
func tearPoints(size int) []int {
	var pts []int
	for cut := 0; cut < size-sectorSize; cut += sectorSize {
		pts = append(pts, cut)
	}
	for cut := size - sectorSize; cut <= size; cut++ {
		pts = append(pts, cut)
	}
	return pts
}

// TestTwoTornWritesInSequence cuts the power during a write and again
// during the write after it, at every pair of tear points: the second
// write lands on whatever the first one left (a torn copy, or, if the
// first write got far enough to be valid, the other copy). Read must never
// return a state that no write completed, never the default (some copy
// always stays valid), and after the second cut must return the state
// before that write or the state it wrote.
func TestTwoTornWritesInSequence(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			t.Parallel()
			pts := tearPoints(c.Size())
			for _, tr := range transitions() {
				old, x := tr[0], tr[1]
				prev := State{Committed: old.Committed, Trial: SlotNone, Seq: old.Seq - 1}
				// y is a further change after x: a commit or a new trial.
				y := State{Committed: x.Committed, Trial: SlotNone}
				if x.Trial == SlotNone {
					y.Trial, y.Tries = x.Committed.Other(), DefaultTries
				}
				base := newMemDevice(c, encode(t, c, old), encode(t, c, prev))
				for _, cut1 := range pts {
					first := base.clone()
					if cut1 < c.Size() {
						first.tearAt = cut1
					}
					err := NewStore(first, c, offA, offB).Write(State{Committed: x.Committed, Trial: x.Trial, Tries: x.Tries})
					if cut1 < c.Size() && !errors.Is(err, errPowerCut) || cut1 == c.Size() && err != nil {
						t.Fatalf("%v -> %v cut at %d: %v", old, x, cut1, err)
					}
					s1, info1, err := NewStore(first, c, offA, offB).Read()
					if err != nil {
						t.Fatal(err)
					}
					if s1 != old && s1 != x || info1.Default() {
						t.Fatalf("%v -> %v cut at %d: Read = %v (%s)", old, x, cut1, s1, info1.Source)
					}
					wantY := y
					wantY.Seq = s1.Seq + 1
					for _, cut2 := range pts {
						second := first.clone()
						if cut2 < c.Size() {
							second.tearAt = cut2
						}
						NewStore(second, c, offA, offB).Write(y)
						s2, info2, err := NewStore(second, c, offA, offB).Read()
						if err != nil {
							t.Fatal(err)
						}
						if s2 != s1 && s2 != wantY || info2.Default() {
							t.Fatalf("%v -> %v cut at %d (read %v), then -> %v cut at %d: Read = %v (%s)",
								old, x, cut1, s1, y, cut2, s2, info2.Source)
						}
					}
				}
			}
		})
	}
}
