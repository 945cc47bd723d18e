package bootloader

import (
	"errors"
	"fmt"
)

// Codec encodes one boot-state copy in a bootloader's native format. There
// are exactly two: UBootEnv and GrubEnv.
type Codec interface {
	// Name is the format's name in bulkhead.bootstate: "uboot" or "grub".
	Name() string
	// Size is the exact length of one copy in bytes.
	Size() int
	// Encode returns exactly Size bytes. It rejects invalid states.
	Encode(st State) ([]byte, error)
	// Decode accepts exactly Size bytes and returns the state only if the
	// copy is valid: intact (CRC or self-check) and within the ranges that
	// State.Validate allows. Errors wrap ErrInvalidCopy.
	Decode(b []byte) (State, error)
}

// ErrInvalidCopy is wrapped by every Decode error: the copy is corrupt, torn,
// blank or was never written.
var ErrInvalidCopy = errors.New("invalid boot-state copy")

// Variable names shared by both formats and both bootloader scripts.
const (
	varCommitted = "bh_committed"
	varTrial     = "bh_trial"
	varTries     = "bh_tries"
	varSeq       = "bh_seq"
	varCheck     = "bh_check" // GRUB only: its env block has no CRC
)

// CodecFor returns the codec named in bulkhead.bootstate.
func CodecFor(name string) (Codec, error) {
	switch name {
	case UBootEnv{}.Name():
		return UBootEnv{}, nil
	case GrubEnv{}.Name():
		return GrubEnv{}, nil
	}
	return nil, fmt.Errorf("boot-state format %q: want uboot or grub", name)
}

// Initial returns the two copies the builder writes into a factory image:
// committed = the given slot (a for every factory image), no trial, and both
// copies valid, copy A with seq 1 and copy B with seq 0, so the first write
// after flashing (Linux or bootloader) lands on copy B and leaves A intact.
func Initial(c Codec, committed Slot) (copyA, copyB []byte, err error) {
	st := State{Committed: committed, Trial: SlotNone}
	st.Seq = 1
	if copyA, err = c.Encode(st); err != nil {
		return nil, nil, fmt.Errorf("initial %s boot state, copy a: %w", c.Name(), err)
	}
	st.Seq = 0
	if copyB, err = c.Encode(st); err != nil {
		return nil, nil, fmt.Errorf("initial %s boot state, copy b: %w", c.Name(), err)
	}
	return copyA, copyB, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidCopy, fmt.Sprintf(format, args...))
}
