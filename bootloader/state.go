package bootloader

import (
	"errors"
	"fmt"
)

// Slot names a root slot. The string values are the ones written on disk and
// passed to Linux as bulkhead.slot, so they never change.
type Slot string

// The slots. Root slot a is partition 2 and b is partition 3
// (docs/architecture.md); SlotNone only appears as State.Trial.
const (
	SlotNone Slot = "none"
	SlotA    Slot = "a"
	SlotB    Slot = "b"
)

// Valid reports whether s names a root slot (a or b).
func (s Slot) Valid() bool { return s == SlotA || s == SlotB }

// Other returns the other root slot: b for a, a for b, SlotNone otherwise.
func (s Slot) Other() Slot {
	switch s {
	case SlotA:
		return SlotB
	case SlotB:
		return SlotA
	}
	return SlotNone
}

// ParseSlot parses "a" or "b".
func ParseSlot(s string) (Slot, error) {
	if sl := Slot(s); sl.Valid() {
		return sl, nil
	}
	return "", fmt.Errorf("slot %q: want a or b", s)
}

const (
	// MaxTries is the largest trial budget. One decimal digit keeps the
	// value identical in U-Boot's hex (setexpr prints %lx) and GRUB's
	// decimal, and lets grub.cfg decrement it with a nine-step if-chain
	// because GRUB script has no arithmetic.
	MaxTries = 9

	// DefaultTries is the trial budget the supervisor uses after an install
	// (DESIGN.md: "trial = inactive, tries = 3").
	DefaultTries = 3

	// MaxSeq is the largest sequence number any writer may store. U-Boot's
	// itest compares its operands as a C long (cmd/itest.c arithcomp), which
	// is 32 bits and signed on the ARMv6/ARMv7 boards, so a seq of 2^31 or
	// more would compare as negative there. Writers refuse to go past it
	// (ErrSeqExhausted) instead of wrapping; at one write per boot that is
	// millions of years away, far beyond the endurance of any flash sector.
	MaxSeq = 1<<31 - 1
)

// State is the boot-state record (DESIGN.md, "Boot state").
//
// Committed is the slot known to be good; Trial is the slot being tried
// (SlotNone when no trial is pending); Tries is the number of trial boots
// left; Seq orders the two on-disk copies: the valid copy with the higher Seq
// is the current state.
type State struct {
	Committed Slot   `json:"committed"`
	Trial     Slot   `json:"trial"`
	Tries     int    `json:"tries"`
	Seq       uint32 `json:"seq"`
}

// ErrInvalidState is wrapped by every error that rejects a State's fields.
var ErrInvalidState = errors.New("invalid boot state")

// Validate checks the fields. It accepts exactly what both bootloader
// scripts accept, so Go and the bootloader never disagree about which copy
// is valid: a trial of the committed slot is rejected, but a positive Tries
// without a trial is tolerated (it means nothing; writers store 0).
func (st State) Validate() error {
	if !st.Committed.Valid() {
		return fmt.Errorf("%w: committed slot %q: want a or b", ErrInvalidState, st.Committed)
	}
	if st.Trial != SlotNone && !st.Trial.Valid() {
		return fmt.Errorf("%w: trial slot %q: want none, a or b", ErrInvalidState, st.Trial)
	}
	if st.Trial == st.Committed {
		return fmt.Errorf("%w: trial slot %s is the committed slot", ErrInvalidState, st.Trial)
	}
	if st.Tries < 0 || st.Tries > MaxTries {
		return fmt.Errorf("%w: tries %d: want 0..%d", ErrInvalidState, st.Tries, MaxTries)
	}
	if st.Seq > MaxSeq {
		return fmt.Errorf("%w: seq %d: larger than %d", ErrInvalidState, st.Seq, MaxSeq)
	}
	return nil
}

// String formats the state the way the boot scripts echo it.
func (st State) String() string {
	return fmt.Sprintf("committed=%s trial=%s tries=%d seq=%d", st.Committed, st.Trial, st.Tries, st.Seq)
}

// DefaultState is what every reader assumes when neither copy is valid.
//
// Both copies can only be invalid through outside corruption: every writer
// (Store.Write, the U-Boot script, grub.cfg) rewrites one copy at a time and
// never the last valid one. Slot a is the factory slot, the only slot the
// flashed image populates, and a default without a trial never boots the
// slot an interrupted update may have half-written unless slot a's kernel
// fails to load, in which case the boot scripts try the other slot anyway.
// Readers also never write on a boot from the default state (no trial is
// pending), so the corrupted copies stay as evidence until Linux rewrites one.
func DefaultState() State {
	return State{Committed: SlotA, Trial: SlotNone}
}

// Decide is the per-boot algorithm of DESIGN.md, the single definition that
// the U-Boot script and grub.cfg mirror line by line:
//
//	trial != none and tries > 0  -> tries -= 1; save; boot the trial slot
//	trial != none and tries == 0 -> trial = none; save; boot committed
//	otherwise                    -> boot committed, no write
//
// It returns the slot to boot, whether that boot is a trial boot, and the
// state to save before booting (nil: no write, invariant 3). next.Seq is
// st.Seq+1. The bootloader boots the trial slot only after the save
// succeeded; if the save fails it boots the committed slot, because a trial
// whose decrement cannot be recorded would not be bounded (invariant 4).
//
// There is no counter for the committed slot at all: power cuts during
// committed boots change nothing on disk, so they can never exhaust it.
func Decide(st State) (boot Slot, trial bool, next *State) {
	if st.Trial == SlotNone {
		return st.Committed, false, nil
	}
	n := st
	n.Seq = st.Seq + 1
	if st.Tries > 0 {
		n.Tries = st.Tries - 1
		return st.Trial, true, &n
	}
	n.Trial = SlotNone
	n.Tries = 0
	return st.Committed, false, &n
}
