package bootloader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"testing"
)

// Copy offsets of the test device: small, so that the torn-write test can
// copy whole devices, and far enough apart for the larger U-Boot copies.
const (
	offA = 8 * sectorSize
	offB = 24 * sectorSize
)

func putCRC(b []byte) {
	binary.LittleEndian.PutUint32(b, crc32.ChecksumIEEE(b[4:]))
}

// memDevice is an in-memory disk that records writes and syncs, and can cut
// power in the middle of the next write: only the first tearAt bytes land.
type memDevice struct {
	b      []byte
	writes []int64 // offsets of WriteAt calls
	syncs  int
	tearAt int // -1: writes complete
}

var errPowerCut = errors.New("power cut")

func newMemDevice(c Codec, copyA, copyB []byte) *memDevice {
	d := &memDevice{b: make([]byte, offB+UBootEnvSize+sectorSize), tearAt: -1}
	if copyA != nil {
		copy(d.b[offA:], copyA)
	}
	if copyB != nil {
		copy(d.b[offB:], copyB)
	}
	return d
}

func (d *memDevice) ReadAt(p []byte, off int64) (int, error) {
	return copy(p, d.b[off:]), nil
}

func (d *memDevice) WriteAt(p []byte, off int64) (int, error) {
	d.writes = append(d.writes, off)
	if d.tearAt >= 0 {
		n := copy(d.b[off:], p[:d.tearAt])
		d.tearAt = -1
		return n, errPowerCut
	}
	return copy(d.b[off:], p), nil
}

func (d *memDevice) Sync() error { d.syncs++; return nil }

func (d *memDevice) clone() *memDevice {
	c := &memDevice{b: append([]byte(nil), d.b...), tearAt: -1}
	return c
}

func encode(t testing.TB, c Codec, st State) []byte {
	t.Helper()
	b, err := c.Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func garbage(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestReadChoosesTheValidCopyWithTheHigherSeq(t *testing.T) {
	s := func(seq uint32) State { return State{Committed: SlotA, Trial: SlotNone, Seq: seq} }
	for _, c := range codecs {
		for _, tc := range []struct {
			name         string
			a, b         []byte
			want         State
			source, targ string
		}{
			{"a newer", encode(t, c, s(5)), encode(t, c, s(4)), s(5), CopyA, CopyB},
			{"b newer", encode(t, c, s(5)), encode(t, c, s(6)), s(6), CopyB, CopyA},
			{"equal seq: a wins, like the scripts", encode(t, c, State{Committed: SlotB, Trial: SlotNone, Seq: 3}), encode(t, c, s(3)),
				State{Committed: SlotB, Trial: SlotNone, Seq: 3}, CopyA, CopyB},
			{"only a valid", encode(t, c, s(2)), make([]byte, c.Size()), s(2), CopyA, CopyB},
			{"only b valid even though a is garbage", garbage(c.Size(), 1), encode(t, c, s(0)), s(0), CopyB, CopyA},
			{"neither valid", garbage(c.Size(), 2), make([]byte, c.Size()), DefaultState(), CopyDefault, CopyA},
		} {
			t.Run(c.Name()+"/"+tc.name, func(t *testing.T) {
				st, info, err := NewStore(newMemDevice(c, tc.a, tc.b), c, offA, offB).Read()
				if err != nil {
					t.Fatal(err)
				}
				if st != tc.want || info.Source != tc.source || info.Target != tc.targ {
					t.Errorf("Read = %v from %s, target %s; want %v from %s, target %s", st, info.Source, info.Target, tc.want, tc.source, tc.targ)
				}
				if info.Default() != (tc.source == CopyDefault) {
					t.Errorf("Default() = %v", info.Default())
				}
			})
		}
	}
}

func TestWriteTargetsTheOlderCopyAndSyncs(t *testing.T) {
	for _, c := range codecs {
		a, b, err := Initial(c, SlotA)
		if err != nil {
			t.Fatal(err)
		}
		dev := newMemDevice(c, a, b)
		s := NewStore(dev, c, offA, offB)
		// Factory: a has seq 1, so writes alternate b, a, b, ...
		for i := 0; i < 6; i++ {
			before, info, _ := s.Read()
			wantOff := int64(offB)
			if info.Source == CopyB {
				wantOff = offA
			}
			keep := append([]byte(nil), dev.b[offA+offB-wantOff:][:c.Size()]...)
			st := State{Committed: SlotA, Trial: SlotB, Tries: i % 4}
			if err := s.Write(st); err != nil {
				t.Fatal(err)
			}
			if len(dev.writes) != i+1 || dev.writes[i] != wantOff {
				t.Fatalf("%s: write %d went to %v, want offset %d", c.Name(), i, dev.writes, wantOff)
			}
			if dev.syncs != i+1 {
				t.Fatalf("%s: %d syncs after %d writes", c.Name(), dev.syncs, i+1)
			}
			if string(keep) != string(dev.b[offA+offB-wantOff:][:c.Size()]) {
				t.Fatalf("%s: write %d changed the copy holding the current state", c.Name(), i)
			}
			got, _, _ := s.Read()
			st.Seq = before.Seq + 1
			if got != st {
				t.Fatalf("%s: after Write, Read = %v, want %v", c.Name(), got, st)
			}
		}
	}
}

func TestOperations(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			a, b, _ := Initial(c, SlotA)
			dev := newMemDevice(c, a, b)
			s := NewStore(dev, c, offA, offB)

			if _, err := s.Commit(); !errors.Is(err, ErrNoTrial) {
				t.Errorf("Commit without a trial = %v, want ErrNoTrial", err)
			}
			if _, err := s.AbandonTrial(); !errors.Is(err, ErrNoTrial) {
				t.Errorf("AbandonTrial without a trial = %v, want ErrNoTrial", err)
			}
			if _, err := s.StartTrial(SlotA, 3); !errors.Is(err, ErrSlotCommitted) {
				t.Errorf("StartTrial(committed) = %v, want ErrSlotCommitted", err)
			}
			for _, tries := range []int{0, -1, MaxTries + 1} {
				if _, err := s.StartTrial(SlotB, tries); err == nil {
					t.Errorf("StartTrial(b, %d) succeeded", tries)
				}
			}
			if _, err := s.StartTrial(SlotNone, 3); err == nil {
				t.Error("StartTrial(none) succeeded")
			}
			if len(dev.writes) != 0 {
				t.Fatalf("refused operations wrote %v", dev.writes)
			}

			st, err := s.StartTrial(SlotB, 3)
			if want := (State{SlotA, SlotB, 3, 2}); err != nil || st != want {
				t.Fatalf("StartTrial = %v, %v; want %v", st, err, want)
			}
			st, err = s.AbandonTrial()
			if want := (State{SlotA, SlotNone, 0, 3}); err != nil || st != want {
				t.Fatalf("AbandonTrial = %v, %v; want %v", st, err, want)
			}
			if _, err := s.StartTrial(SlotB, 2); err != nil {
				t.Fatal(err)
			}
			st, err = s.Commit()
			if want := (State{SlotB, SlotNone, 0, 5}); err != nil || st != want {
				t.Fatalf("Commit = %v, %v; want %v", st, err, want)
			}
			if _, err := s.StartTrial(SlotB, 3); !errors.Is(err, ErrSlotCommitted) {
				t.Errorf("StartTrial of the newly committed slot = %v, want ErrSlotCommitted", err)
			}
			if len(dev.writes) != 4 {
				t.Errorf("four operations made %d writes, want one each", len(dev.writes))
			}
			got, _, err := s.Status()
			if err != nil || got != st {
				t.Errorf("Status = %v, %v; want %v", got, err, st)
			}
		})
	}
}

func TestSeqNeverPassesMaxSeq(t *testing.T) {
	for _, c := range codecs {
		at := func(seq uint32, trial Slot) *Store {
			st := State{Committed: SlotA, Trial: trial, Seq: seq}
			if trial != SlotNone {
				st.Tries = 1
			}
			return NewStore(newMemDevice(c, encode(t, c, st), nil), c, offA, offB)
		}
		if err := at(MaxSeq, SlotNone).Write(State{Committed: SlotA, Trial: SlotNone}); !errors.Is(err, ErrSeqExhausted) {
			t.Errorf("%s: Write at MaxSeq = %v, want ErrSeqExhausted", c.Name(), err)
		}
		if _, err := at(MaxSeq-3, SlotNone).StartTrial(SlotB, 1); !errors.Is(err, ErrSeqExhausted) {
			t.Errorf("%s: StartTrial without headroom for the trial = %v, want ErrSeqExhausted", c.Name(), err)
		}
		if _, err := at(MaxSeq-4, SlotNone).StartTrial(SlotB, 1); err != nil {
			t.Errorf("%s: StartTrial with exactly enough headroom: %v", c.Name(), err)
		}
		if _, err := at(MaxSeq-1, SlotB).Commit(); err != nil {
			t.Errorf("%s: Commit at MaxSeq-1: %v", c.Name(), err)
		}
	}
}

// transitions are the writes a device makes: the supervisor's operations and
// the bootloader's decrement and rollback.
func transitions() [][2]State {
	return [][2]State{
		{{SlotA, SlotNone, 0, 1}, {SlotA, SlotB, 3, 2}},    // StartTrial
		{{SlotA, SlotB, 3, 2}, {SlotA, SlotB, 2, 3}},       // bootloader decrement
		{{SlotA, SlotB, 0, 5}, {SlotA, SlotNone, 0, 6}},    // bootloader rollback
		{{SlotA, SlotB, 2, 9}, {SlotB, SlotNone, 0, 10}},   // Commit, seq grows a digit
		{{SlotB, SlotA, 9, 99}, {SlotB, SlotNone, 0, 100}}, // AbandonTrial
		{{SlotB, SlotNone, 0, 255}, {SlotB, SlotA, 1, 256}},
	}
}

// TestTornWriteLeavesOldOrNewState cuts power after every byte of the write
// (this covers every 512-byte boundary and every byte of the last sector)
// with the copy being written holding, before the write, its previous
// state, zeros, erased flash or garbage. Read must return the state before
// the write or the state written, never anything else.
func TestTornWriteLeavesOldOrNewState(t *testing.T) {
	for _, c := range codecs {
		for _, tr := range transitions() {
			old, next := tr[0], tr[1]
			prev := old
			prev.Seq--
			if old.Seq == 0 {
				t.Fatal("transitions need seq > 0")
			}
			// The current state is in copy a; the write goes to copy b.
			targets := map[string][]byte{
				"previous state": encode(t, c, State{Committed: old.Committed, Trial: SlotNone, Seq: prev.Seq}),
				"zeros":          make([]byte, c.Size()),
				"erased":         bytesOf(0xff, c.Size()),
				"garbage":        garbage(c.Size(), int64(old.Seq)),
			}
			for tname, target := range targets {
				base := newMemDevice(c, encode(t, c, old), target)
				for cut := 0; cut <= c.Size(); cut++ {
					dev := base.clone()
					if cut < c.Size() {
						dev.tearAt = cut
					}
					s := NewStore(dev, c, offA, offB)
					err := s.Write(State{Committed: next.Committed, Trial: next.Trial, Tries: next.Tries})
					if cut < c.Size() && !errors.Is(err, errPowerCut) || cut == c.Size() && err != nil {
						t.Fatalf("%s %v->%v over %s, cut at %d: Write = %v", c.Name(), old, next, tname, cut, err)
					}
					if len(dev.writes) != 1 || dev.writes[0] != offB {
						t.Fatalf("%s: Write made writes %v, want one at copy b", c.Name(), dev.writes)
					}
					got, _, err := s.Read()
					if err != nil {
						t.Fatal(err)
					}
					if got != old && got != next {
						t.Fatalf("%s %v->%v over %s, cut at byte %d: Read = %v", c.Name(), old, next, tname, cut, got)
					}
					if cut == 0 && got != old {
						t.Fatalf("%s: nothing written but Read = %v", c.Name(), got)
					}
					if cut == c.Size() && got != next {
						t.Fatalf("%s: complete write but Read = %v", c.Name(), got)
					}
				}
			}
		}
	}
}

func bytesOf(v byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v
	}
	return b
}

// bootOnce plays one boot the way the boot scripts do: read, Decide, save
// the next state into the older copy, boot. It returns the booted slot and
// whether it was a trial boot. If the device tears the save, the boot never
// happens (power is gone) and ok is false.
func bootOnce(t *testing.T, s *Store) (boot Slot, trial, ok bool) {
	t.Helper()
	st, _, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	boot, trial, next := Decide(st)
	if next != nil {
		if err := s.Write(*next); err != nil {
			if errors.Is(err, errPowerCut) {
				return "", false, false
			}
			t.Fatal(err)
		}
	}
	return boot, trial, true
}

// TestBootSimulationTrialAndRollback plays the DESIGN scenario: install,
// three failed trial boots (3 -> 2 -> 1 -> 0), rollback, then committed boots
// that never write.
func TestBootSimulationTrialAndRollback(t *testing.T) {
	for _, c := range codecs {
		a, b, _ := Initial(c, SlotA)
		dev := newMemDevice(c, a, b)
		s := NewStore(dev, c, offA, offB)
		if _, err := s.StartTrial(SlotB, 3); err != nil {
			t.Fatal(err)
		}
		var got []string
		for i := 0; i < 8; i++ {
			boot, trial, _ := bootOnce(t, s)
			st, _, _ := s.Read()
			got = append(got, fmt.Sprintf("%s/%v/%d", boot, trial, st.Tries))
		}
		want := "[b/true/2 b/true/1 b/true/0 a/false/0 a/false/0 a/false/0 a/false/0 a/false/0]"
		if fmt.Sprint(got) != want {
			t.Errorf("%s: boots %v, want %s", c.Name(), got, want)
		}
		if len(dev.writes) != 1+4 {
			t.Errorf("%s: %d writes, want StartTrial + 3 decrements + 1 rollback and none after", c.Name(), len(dev.writes))
		}
		st, _, _ := s.Read()
		if st.Committed != SlotA || st.Trial != SlotNone {
			t.Errorf("%s: after rollback %v", c.Name(), st)
		}
	}
}

// TestBootSimulationCommit: a trial boot that passes its checks commits.
func TestBootSimulationCommit(t *testing.T) {
	for _, c := range codecs {
		a, b, _ := Initial(c, SlotA)
		s := NewStore(newMemDevice(c, a, b), c, offA, offB)
		if _, err := s.StartTrial(SlotB, 3); err != nil {
			t.Fatal(err)
		}
		boot, trial, _ := bootOnce(t, s)
		st, _, _ := s.Read()
		if err := CheckCommit(st, boot, trial); err != nil {
			t.Fatalf("%s: trial boot may not commit: %v", c.Name(), err)
		}
		if _, err := s.Commit(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if boot, trial, _ := bootOnce(t, s); boot != SlotB || trial {
				t.Fatalf("%s: after commit booted %s trial=%v", c.Name(), boot, trial)
			}
		}
	}
}

// TestPowerCutsNeverExhaustTheCommittedSlot cuts power at random moments:
// during bootloader saves (torn at a random byte) and right after a boot
// (before any health check). However the cuts fall, the trial slot boots at
// most `tries` times, the committed slot boots ever after, the committed
// slot never changes, and once the trial is over nothing is ever written.
func TestPowerCutsNeverExhaustTheCommittedSlot(t *testing.T) {
	for _, c := range codecs {
		for seed := int64(0); seed < 200; seed++ {
			rng := rand.New(rand.NewSource(seed))
			a, b, _ := Initial(c, SlotA)
			dev := newMemDevice(c, a, b)
			s := NewStore(dev, c, offA, offB)
			tries := 1 + rng.Intn(MaxTries)
			if _, err := s.StartTrial(SlotB, tries); err != nil {
				t.Fatal(err)
			}
			trialBoots, committedBoots := 0, 0
			for boot := 0; boot < 200; boot++ {
				if rng.Intn(3) == 0 {
					dev.tearAt = rng.Intn(c.Size())
				}
				slot, trial, ok := bootOnce(t, s)
				dev.tearAt = -1
				if !ok {
					continue
				}
				if trial {
					trialBoots++
					if slot != SlotB {
						t.Fatalf("%s seed %d: trial boot of %s", c.Name(), seed, slot)
					}
				} else {
					committedBoots++
					if slot != SlotA {
						t.Fatalf("%s seed %d: committed boot of %s", c.Name(), seed, slot)
					}
				}
				st, _, _ := s.Read()
				if st.Committed != SlotA {
					t.Fatalf("%s seed %d: committed slot changed to %s without a commit", c.Name(), seed, st.Committed)
				}
			}
			if trialBoots > tries {
				t.Fatalf("%s seed %d: %d trial boots with %d tries", c.Name(), seed, trialBoots, tries)
			}
			if committedBoots == 0 {
				t.Fatalf("%s seed %d: the committed slot never booted again", c.Name(), seed)
			}
			// The trial is over: further boots write nothing.
			n := len(dev.writes)
			for i := 0; i < 10; i++ {
				bootOnce(t, s)
			}
			if len(dev.writes) != n {
				t.Fatalf("%s seed %d: boots after the trial wrote", c.Name(), seed)
			}
		}
	}
}

func TestCheckCommit(t *testing.T) {
	trial := State{Committed: SlotA, Trial: SlotB, Tries: 1, Seq: 3}
	if err := CheckCommit(trial, SlotB, true); err != nil {
		t.Errorf("trial boot of the trial slot: %v", err)
	}
	for _, tc := range []struct {
		name  string
		st    State
		slot  Slot
		trial bool
		want  error
	}{
		{"a boot of the committed slot during a trial may not commit", trial, SlotA, false, ErrNotTrialBoot},
		{"a fallback boot of the trial slot may not commit", trial, SlotB, false, ErrNotTrialBoot},
		{"nothing to commit without a trial", State{Committed: SlotA, Trial: SlotNone}, SlotA, false, ErrNoTrial},
	} {
		if err := CheckCommit(tc.st, tc.slot, tc.trial); !errors.Is(err, tc.want) {
			t.Errorf("%s: CheckCommit = %v, want %v", tc.name, err, tc.want)
		}
	}
}

type failingDevice struct{ memDevice }

func (failingDevice) ReadAt([]byte, int64) (int, error) { return 0, errors.New("I/O error") }

func TestReadErrorIsNotAnInvalidCopy(t *testing.T) {
	s := NewStore(&failingDevice{}, UBootEnv{}, offA, offB)
	if _, _, err := s.Read(); err == nil {
		t.Error("Read on a failing device succeeded")
	}
	if _, err := s.StartTrial(SlotB, 3); err == nil {
		t.Error("StartTrial on an unreadable device succeeded: it must not write blind")
	}
}
