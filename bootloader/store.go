package bootloader

import (
	"errors"
	"fmt"
	"io"
)

// Device is the block device (or image file) that holds the two copies. An
// *os.File opened on the whole disk fits. Tests wrap it to cut power in the
// middle of a write.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Store reads and writes the boot state on a Device. It is not safe for
// concurrent use, and only one process may write at a time: the device
// command and the supervisor both open the disk with OpenDevice, which holds
// an exclusive flock for that reason.
type Store struct {
	dev   Device
	codec Codec
	off   [2]int64
}

// NewStore returns a Store for the copies at byte offsets offA and offB of
// dev, in codec's format.
func NewStore(dev Device, codec Codec, offA, offB int64) *Store {
	return &Store{dev: dev, codec: codec, off: [2]int64{offA, offB}}
}

// Errors of the Store operations; test with errors.Is.
var (
	// ErrNoTrial: Commit or AbandonTrial without a pending trial.
	ErrNoTrial = errors.New("no trial is pending")
	// ErrSlotCommitted: StartTrial of the committed slot, which would make
	// the bootloader boot a slot that the update just rewrote as if it were
	// known good; install into the other slot.
	ErrSlotCommitted = errors.New("slot is the committed slot")
	// ErrSeqExhausted: the sequence number would pass MaxSeq.
	ErrSeqExhausted = errors.New("boot-state sequence number exhausted")
)

// Copy names of the two copies, as reported in Info.
const (
	CopyA       = "a"
	CopyB       = "b"
	CopyDefault = "default" // Info.Source when neither copy is valid
)

// CopyInfo describes one copy as Read found it.
type CopyInfo struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset"`
	Valid  bool   `json:"valid"`
	State  *State `json:"state,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Info says where the state Read returned came from.
type Info struct {
	// Source is CopyA or CopyB, or CopyDefault when neither copy was valid
	// and Read returned DefaultState.
	Source string      `json:"source"`
	Copies [2]CopyInfo `json:"copies"`
	// Target is the copy the next write will overwrite: the one that is
	// not Source (copy a when neither is valid).
	Target string `json:"target"`
}

// Default reports whether Read fell back to DefaultState.
func (i Info) Default() bool { return i.Source == CopyDefault }

// snapshot is one Read: the winning state, which copy it came from, and the
// copy the next write goes to.
type snapshot struct {
	st     State
	info   Info
	target int
}

// Read returns the current state: the valid copy with the higher seq, copy
// a when both are valid with equal seq (the boot scripts break the tie the
// same way), and DefaultState when neither copy is valid (see DefaultState
// for why that is safe). Only I/O errors are returned as errors; invalid
// copies are reported in Info.
func (s *Store) Read() (State, Info, error) {
	sn, err := s.read()
	if err != nil {
		return State{}, Info{}, err
	}
	return sn.st, sn.info, nil
}

func (s *Store) read() (snapshot, error) {
	var (
		states [2]State
		valid  [2]bool
		info   Info
	)
	for i, name := range []string{CopyA, CopyB} {
		ci := CopyInfo{Name: name, Offset: s.off[i]}
		buf := make([]byte, s.codec.Size())
		if _, err := s.dev.ReadAt(buf, s.off[i]); err != nil {
			return snapshot{}, fmt.Errorf("read %s boot-state copy %s at byte %d: %w", s.codec.Name(), name, s.off[i], err)
		}
		st, err := s.codec.Decode(buf)
		if err == nil {
			states[i], valid[i] = st, true
			ci.Valid = true
			ci.State = &st
		} else {
			ci.Error = err.Error()
		}
		info.Copies[i] = ci
	}
	var sn snapshot
	switch {
	case valid[0] && (!valid[1] || states[0].Seq >= states[1].Seq):
		sn = snapshot{st: states[0], target: 1}
		info.Source = CopyA
	case valid[1]:
		sn = snapshot{st: states[1], target: 0}
		info.Source = CopyB
	default:
		sn = snapshot{st: DefaultState(), target: 0}
		info.Source = CopyDefault
	}
	info.Target = info.Copies[sn.target].Name
	sn.info = info
	return sn, nil
}

// Write stores st as the new state: its Seq is replaced by the current
// seq + 1, it is encoded, and it overwrites the older (or invalid) copy with
// ONE WriteAt followed by Sync. The copy holding the current state is never
// touched, so a write torn by a power cut leaves Read returning either the
// state before the write or st (invariant 2).
func (s *Store) Write(st State) error {
	sn, err := s.read()
	if err != nil {
		return err
	}
	_, err = s.write(sn, st)
	return err
}

func (s *Store) write(sn snapshot, st State) (State, error) {
	if sn.st.Seq >= MaxSeq {
		return State{}, fmt.Errorf("%w: current seq is %d, the largest the bootloaders compare correctly: re-flash the boot state", ErrSeqExhausted, sn.st.Seq)
	}
	st.Seq = sn.st.Seq + 1
	buf, err := s.codec.Encode(st)
	if err != nil {
		return State{}, fmt.Errorf("encode %s boot state: %w", s.codec.Name(), err)
	}
	off := s.off[sn.target]
	n, err := s.dev.WriteAt(buf, off)
	if err == nil && n != len(buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return State{}, fmt.Errorf("write %s boot-state copy %s at byte %d: %w", s.codec.Name(), sn.info.Target, off, err)
	}
	if err := s.dev.Sync(); err != nil {
		return State{}, fmt.Errorf("flush %s boot-state copy %s: %w", s.codec.Name(), sn.info.Target, err)
	}
	return st, nil
}

// Status returns the current state and where it came from; it is Read.
func (s *Store) Status() (State, Info, error) { return s.Read() }

// StartTrial makes the bootloader boot slot for at most tries boots
// (1..MaxTries) after which, unless Commit was called, it boots the
// committed slot again. The caller must have written and verified every byte
// of slot first (invariant 6). It refuses the committed slot. One Write.
func (s *Store) StartTrial(slot Slot, tries int) (State, error) {
	if !slot.Valid() {
		return State{}, fmt.Errorf("start trial: slot %q: want a or b", slot)
	}
	if tries < 1 || tries > MaxTries {
		return State{}, fmt.Errorf("start trial of slot %s: tries %d: want 1..%d", slot, tries, MaxTries)
	}
	sn, err := s.read()
	if err != nil {
		return State{}, fmt.Errorf("start trial of slot %s: %w", slot, err)
	}
	if slot == sn.st.Committed {
		return State{}, fmt.Errorf("start trial of slot %s: %w: install into slot %s instead", slot, ErrSlotCommitted, slot.Other())
	}
	// Headroom: this write, up to tries+1 bootloader writes during the
	// trial, and the Commit or AbandonTrial that ends it.
	if uint64(sn.st.Seq)+uint64(tries)+3 > MaxSeq {
		return State{}, fmt.Errorf("start trial of slot %s: %w: seq %d", slot, ErrSeqExhausted, sn.st.Seq)
	}
	st, err := s.write(sn, State{Committed: sn.st.Committed, Trial: slot, Tries: tries})
	if err != nil {
		return State{}, fmt.Errorf("start trial of slot %s: %w", slot, err)
	}
	return st, nil
}

// Commit makes the trial slot the committed slot and ends the trial. Call it
// only from a boot of the trial slot that passed its health checks
// (CheckCommit tells whether the running boot is one). One Write.
func (s *Store) Commit() (State, error) {
	sn, err := s.read()
	if err != nil {
		return State{}, fmt.Errorf("commit: %w", err)
	}
	if sn.st.Trial == SlotNone {
		return State{}, fmt.Errorf("commit: %w (committed slot is %s)", ErrNoTrial, sn.st.Committed)
	}
	st, err := s.write(sn, State{Committed: sn.st.Trial, Trial: SlotNone})
	if err != nil {
		return State{}, fmt.Errorf("commit slot %s: %w", sn.st.Trial, err)
	}
	return st, nil
}

// AbandonTrial ends a pending trial without committing it: the next boot
// boots the committed slot. One Write.
func (s *Store) AbandonTrial() (State, error) {
	sn, err := s.read()
	if err != nil {
		return State{}, fmt.Errorf("abandon trial: %w", err)
	}
	if sn.st.Trial == SlotNone {
		return State{}, fmt.Errorf("abandon trial: %w (committed slot is %s)", ErrNoTrial, sn.st.Committed)
	}
	st, err := s.write(sn, State{Committed: sn.st.Committed, Trial: SlotNone})
	if err != nil {
		return State{}, fmt.Errorf("abandon trial of slot %s: %w", sn.st.Trial, err)
	}
	return st, nil
}

// ErrNotTrialBoot is returned by CheckCommit.
var ErrNotTrialBoot = errors.New("this boot is not a trial boot of the trial slot")

// CheckCommit reports whether the running boot (the slot and trial flag the
// bootloader put on the kernel command line) may commit st's trial. Only a
// trial boot of the trial slot may: a boot of the committed slot while a
// trial is pending means the bootloader could not record the trial or the
// trial slot's kernel failed to load, and committing then would make an
// untested slot the committed one.
func CheckCommit(st State, booted Slot, trialBoot bool) error {
	if st.Trial == SlotNone {
		return fmt.Errorf("%w (committed slot is %s)", ErrNoTrial, st.Committed)
	}
	if !trialBoot || booted != st.Trial {
		return fmt.Errorf("%w: trial slot is %s, running slot %s with bulkhead.trial=%s",
			ErrNotTrialBoot, st.Trial, booted, boolArg(trialBoot))
	}
	return nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
