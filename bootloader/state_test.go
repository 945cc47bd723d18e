package bootloader

import (
	"errors"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   State
		ok   bool
	}{
		{"a committed without a trial is valid", State{Committed: SlotA, Trial: SlotNone}, true},
		{"b committed with a trial of a is valid", State{Committed: SlotB, Trial: SlotA, Tries: 3, Seq: 7}, true},
		{"the largest seq is valid", State{Committed: SlotA, Trial: SlotNone, Seq: MaxSeq}, true},
		{"MaxTries is valid", State{Committed: SlotA, Trial: SlotB, Tries: MaxTries}, true},
		{"stale tries without a trial are tolerated", State{Committed: SlotA, Trial: SlotNone, Tries: 2}, true},
		{"no committed slot is invalid", State{Committed: SlotNone, Trial: SlotNone}, false},
		{"an unknown committed slot is invalid", State{Committed: "c", Trial: SlotNone}, false},
		{"an empty trial is invalid", State{Committed: SlotA}, false},
		{"a trial of the committed slot is invalid", State{Committed: SlotA, Trial: SlotA, Tries: 1}, false},
		{"negative tries are invalid", State{Committed: SlotA, Trial: SlotB, Tries: -1}, false},
		{"ten tries are invalid", State{Committed: SlotA, Trial: SlotB, Tries: MaxTries + 1}, false},
		{"seq past MaxSeq is invalid", State{Committed: SlotA, Trial: SlotNone, Seq: MaxSeq + 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.st.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate(%+v) = %v, want nil", tc.st, err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidState) {
				t.Fatalf("Validate(%+v) = %v, want ErrInvalidState", tc.st, err)
			}
		})
	}
}

func TestSlot(t *testing.T) {
	if SlotA.Other() != SlotB || SlotB.Other() != SlotA || SlotNone.Other() != SlotNone {
		t.Error("Other is wrong")
	}
	if _, err := ParseSlot("none"); err == nil {
		t.Error(`ParseSlot("none") succeeded`)
	}
	if s, err := ParseSlot("b"); err != nil || s != SlotB {
		t.Errorf(`ParseSlot("b") = %q, %v`, s, err)
	}
}

func TestDecide(t *testing.T) {
	st := func(c, tr Slot, tries int, seq uint32) State {
		return State{Committed: c, Trial: tr, Tries: tries, Seq: seq}
	}
	for _, tc := range []struct {
		name  string
		in    State
		boot  Slot
		trial bool
		next  *State
	}{
		{"no trial boots committed without a write", st(SlotA, SlotNone, 0, 4), SlotA, false, nil},
		{"no trial with stale tries boots committed without a write", st(SlotB, SlotNone, 2, 4), SlotB, false, nil},
		{"a trial with tries left boots the trial slot and spends one try", st(SlotA, SlotB, 3, 4), SlotB, true, &State{SlotA, SlotB, 2, 5}},
		{"the last try boots the trial slot", st(SlotA, SlotB, 1, 6), SlotB, true, &State{SlotA, SlotB, 0, 7}},
		{"a trial without tries rolls back to the committed slot", st(SlotA, SlotB, 0, 7), SlotA, false, &State{SlotA, SlotNone, 0, 8}},
		{"a trial of a with b committed works the same", st(SlotB, SlotA, 1, 0), SlotA, true, &State{SlotB, SlotA, 0, 1}},
		{"the default state boots slot a without a write", DefaultState(), SlotA, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot, trial, next := Decide(tc.in)
			if boot != tc.boot || trial != tc.trial {
				t.Errorf("Decide(%v) boots %s trial=%v, want %s trial=%v", tc.in, boot, trial, tc.boot, tc.trial)
			}
			switch {
			case next == nil && tc.next != nil, next != nil && tc.next == nil:
				t.Errorf("Decide(%v) next = %v, want %v", tc.in, next, tc.next)
			case next != nil && *next != *tc.next:
				t.Errorf("Decide(%v) next = %v, want %v", tc.in, *next, *tc.next)
			}
			if next != nil {
				if err := next.Validate(); err != nil {
					t.Errorf("Decide(%v) next state is invalid: %v", tc.in, err)
				}
			}
		})
	}
}

// TestDecideTrialSequence follows a trial of three tries to its rollback
// and checks that nothing is written once the trial is over.
func TestDecideTrialSequence(t *testing.T) {
	st := State{Committed: SlotA, Trial: SlotB, Tries: 3, Seq: 10}
	var boots []Slot
	var tries []int
	for i := 0; i < 10; i++ {
		boot, _, next := Decide(st)
		boots = append(boots, boot)
		if next != nil {
			st = *next
		}
		tries = append(tries, st.Tries)
	}
	want := []Slot{SlotB, SlotB, SlotB, SlotA, SlotA, SlotA, SlotA, SlotA, SlotA, SlotA}
	for i := range want {
		if boots[i] != want[i] {
			t.Fatalf("boots = %v, want %v", boots, want)
		}
	}
	if tries[0] != 2 || tries[1] != 1 || tries[2] != 0 {
		t.Errorf("tries after each boot = %v, want 2, 1, 0, ...", tries)
	}
	if st.Trial != SlotNone || st.Seq != 14 {
		t.Errorf("final state %v, want no trial and seq 14 (three decrements and one rollback)", st)
	}
}
