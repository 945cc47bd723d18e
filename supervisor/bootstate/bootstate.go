// Package bootstate is the supervisor's seam to the boot-state record of
// the bootloader package: the four operations an update needs, as a small
// interface with one real implementation (Disk, over bootloader.Store on
// the boot disk) and one for tests (Memory).
//
// It adds no policy: which slot may be tried, and when to commit, is the
// updater's business. Every operation is one write of one redundant copy
// (bootloader.Store guarantees it; invariant 2 of DESIGN.md).
package bootstate

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"golang.org/x/sys/unix"
)

// BootState reads and changes the boot-state record.
type BootState interface {
	// Status returns the current record.
	Status() (bootloader.State, error)
	// StartTrial makes the bootloader boot slot for at most tries boots.
	StartTrial(slot bootloader.Slot, tries int) error
	// Commit makes the trial slot the committed slot.
	Commit() error
	// AbandonTrial ends the trial; the committed slot boots next.
	AbandonTrial() error
}

// Disk is the boot state on the boot disk, through bootloader.Store.
type Disk struct {
	path  string
	store *bootloader.Store
	f     *os.File
}

// OpenDisk opens the whole-disk device at path (the disk that
// slot.Locate found) with the layout of bulkhead.bootstate, e.g.
// "uboot:1048576:1572864:4096".
func OpenDisk(path, bootstateArg string) (*Disk, error) {
	bs, err := bootloader.ParseBootstateArg(bootstateArg)
	if err != nil {
		return nil, fmt.Errorf("boot state: %w", err)
	}
	codec, err := bs.Codec()
	if err != nil {
		return nil, fmt.Errorf("boot state: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("boot state: %w", err)
	}
	return &Disk{path: path, f: f, store: bootloader.NewStore(f, codec, bs.OffA, bs.OffB)}, nil
}

// locked runs op under an exclusive flock of the disk device, the lock
// every boot-state writer on the device takes, so that two writers never
// interleave their read-modify-write of the two copies.
func (d *Disk) locked(op func() error) error {
	if err := unix.Flock(int(d.f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock boot state on %s: %w", d.path, err)
	}
	defer unix.Flock(int(d.f.Fd()), unix.LOCK_UN)
	return op()
}

// Status implements BootState.
func (d *Disk) Status() (st bootloader.State, err error) {
	err = d.locked(func() error {
		st, _, err = d.store.Status()
		return err
	})
	return st, err
}

// Info returns the record and which copy it came from, for status reports.
func (d *Disk) Info() (st bootloader.State, info bootloader.Info, err error) {
	err = d.locked(func() error {
		st, info, err = d.store.Read()
		return err
	})
	return st, info, err
}

// StartTrial implements BootState.
func (d *Disk) StartTrial(slot bootloader.Slot, tries int) error {
	return d.locked(func() error { _, err := d.store.StartTrial(slot, tries); return err })
}

// Commit implements BootState.
func (d *Disk) Commit() error {
	return d.locked(func() error { _, err := d.store.Commit(); return err })
}

// AbandonTrial implements BootState.
func (d *Disk) AbandonTrial() error {
	return d.locked(func() error { _, err := d.store.AbandonTrial(); return err })
}

// Close releases the device.
func (d *Disk) Close() error { return d.f.Close() }

// Memory is a BootState in memory for tests, with the semantics of
// bootloader.Store (refusals included) and a write counter.
type Memory struct {
	mu sync.Mutex
	st bootloader.State
	// Writes counts successful state changes.
	Writes int
	// Fail, if set, is returned by the next write instead of writing.
	Fail error
}

// NewMemory returns a Memory holding st.
func NewMemory(st bootloader.State) *Memory { return &Memory{st: st} }

// Status implements BootState.
func (m *Memory) Status() (bootloader.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st, nil
}

// Set replaces the state without counting a write (what a bootloader does
// between two boots in a test).
func (m *Memory) Set(st bootloader.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st = st
}

func (m *Memory) write(st bootloader.State) error {
	if err := m.Fail; err != nil {
		m.Fail = nil
		return err
	}
	if err := st.Validate(); err != nil {
		return err
	}
	st.Seq = m.st.Seq + 1
	m.st = st
	m.Writes++
	return nil
}

// StartTrial implements BootState.
func (m *Memory) StartTrial(slot bootloader.Slot, tries int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slot == m.st.Committed {
		return fmt.Errorf("start trial of slot %s: %w", slot, bootloader.ErrSlotCommitted)
	}
	if !slot.Valid() || tries < 1 || tries > bootloader.MaxTries {
		return errors.New("start trial: bad slot or tries")
	}
	return m.write(bootloader.State{Committed: m.st.Committed, Trial: slot, Tries: tries})
}

// Commit implements BootState.
func (m *Memory) Commit() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.Trial == bootloader.SlotNone {
		return fmt.Errorf("commit: %w", bootloader.ErrNoTrial)
	}
	return m.write(bootloader.State{Committed: m.st.Trial, Trial: bootloader.SlotNone})
}

// AbandonTrial implements BootState.
func (m *Memory) AbandonTrial() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.Trial == bootloader.SlotNone {
		return fmt.Errorf("abandon trial: %w", bootloader.ErrNoTrial)
	}
	return m.write(bootloader.State{Committed: m.st.Committed, Trial: bootloader.SlotNone})
}
