package bootloader

import (
	"errors"
	"testing"
)

// distinctCuts returns the points at which cutting the power during write
// leaves distinct disks: after 0 bytes, and after each byte that the write
// changes. A cut after any other byte (every 512-byte boundary, every byte
// of the last sector, ...) leaves the same disk as the nearest of these
// before it, so checking these checks every cut point.
func distinctCuts(t *testing.T, c Codec, dev *memDevice, write func(*Store) error) []int {
	t.Helper()
	probe := dev.clone()
	if err := write(NewStore(probe, c, offA, offB)); err != nil {
		t.Fatal(err)
	}
	if len(probe.writes) != 1 {
		t.Fatalf("%d writes, want 1", len(probe.writes))
	}
	off := probe.writes[0]
	cuts := []int{0}
	for i := 0; i < c.Size(); i++ {
		if probe.b[off+int64(i)] != dev.b[off+int64(i)] {
			cuts = append(cuts, i+1)
		}
	}
	return cuts
}

// tear runs write on a copy of dev with the power cut after cut bytes
// (cut = the copy's size: the write completes).
func tear(t *testing.T, c Codec, dev *memDevice, cut int, write func(*Store) error) *memDevice {
	t.Helper()
	d := dev.clone()
	if cut < c.Size() {
		d.tearAt = cut
	}
	err := write(NewStore(d, c, offA, offB))
	if cut < c.Size() && !errors.Is(err, errPowerCut) || cut == c.Size() && err != nil {
		t.Fatalf("cut after %d bytes: Write = %v", cut, err)
	}
	return d
}

// TestTwoTornWritesInSequence cuts the power during a write and again
// during the write after it, at every pair of cut points: the second write
// lands on whatever the first one left (a torn copy, or, if the first
// write got far enough to be valid, the other copy). Read never returns the
// default (some copy always stays valid), after the first cut returns the
// state before it or the state written, and after the second cut the state
// the first left or the one the second wrote.
func TestTwoTornWritesInSequence(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			for _, tr := range transitions() {
				old, x := tr[0], tr[1]
				prev := State{Committed: old.Committed, Trial: SlotNone, Seq: old.Seq - 1}
				// y is a further change after x: a commit or a new trial.
				y := State{Committed: x.Committed, Trial: SlotNone}
				if x.Trial == SlotNone {
					y.Trial, y.Tries = x.Committed.Other(), DefaultTries
				}
				writeX := func(s *Store) error { return s.Write(State{Committed: x.Committed, Trial: x.Trial, Tries: x.Tries}) }
				writeY := func(s *Store) error { return s.Write(y) }

				base := newMemDevice(c, encode(t, c, old), encode(t, c, prev))
				for _, cut1 := range distinctCuts(t, c, base, writeX) {
					first := tear(t, c, base, cut1, writeX)
					s1, info1, err := NewStore(first, c, offA, offB).Read()
					if err != nil {
						t.Fatal(err)
					}
					if s1 != old && s1 != x || info1.Default() {
						t.Fatalf("%v -> %v cut at %d: Read = %v (%s)", old, x, cut1, s1, info1.Source)
					}
					wantY := y
					wantY.Seq = s1.Seq + 1
					for _, cut2 := range distinctCuts(t, c, first, writeY) {
						second := tear(t, c, first, cut2, writeY)
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
