package updater

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/atomicfile"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/health"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
)

// Phase is where an update stands. The persisted phases and their order:
//
//	idle -> downloading -> verifying -> ready-to-reboot -> trial -> committed
//	                                                             \-> rolled-back
//
// A refused or failed install goes back to idle with an outcome; committed
// and rolled-back are final and accept a new update like idle.
type Phase string

// The phases.
const (
	PhaseIdle        Phase = "idle"
	PhaseDownloading Phase = "downloading"
	PhaseVerifying   Phase = "verifying"
	PhaseReady       Phase = "ready-to-reboot"
	PhaseTrial       Phase = "trial"
	PhaseCommitted   Phase = "committed"
	PhaseRolledBack  Phase = "rolled-back"
)

// Busy reports whether an update is in progress in this phase.
func (p Phase) Busy() bool {
	switch p {
	case PhaseDownloading, PhaseVerifying, PhaseReady, PhaseTrial:
		return true
	}
	return false
}

// Results of an Outcome.
const (
	ResultCommitted  = "committed"   // the new slot is committed
	ResultRolledBack = "rolled-back" // the new slot booted (or tried to) and was given up
	ResultFailed     = "failed"      // the install did not complete; nothing changed
	ResultRefused    = "refused"     // the bundle was refused before a byte was written
	ResultCanceled   = "canceled"    // a user stopped it
)

// Update is the update in progress, persisted at every transition.
type Update struct {
	ID       string      `json:"id"`
	Source   source.Spec `json:"source"`
	Force    bool        `json:"force,omitempty"`
	NoReboot bool        `json:"no_reboot,omitempty"`
	Started  time.Time   `json:"started"`
	// FromVersion and FromSlot are the running system when it started.
	FromVersion string          `json:"from_version"`
	FromSlot    bootloader.Slot `json:"from_slot"`
	// Target is the slot being written: never the committed one.
	Target bootloader.Slot `json:"target"`
	// Manifest is set once the bundle's signature verified.
	Manifest *bundle.Manifest `json:"manifest,omitempty"`
	KeyID    string           `json:"key_id,omitempty"`
	// NetworkWasUp records reachability before the install, for the
	// trial's network check.
	NetworkWasUp bool `json:"network_was_up"`
	// Restarts counts how often an interrupted download started over.
	Restarts int `json:"restarts,omitempty"`
	// BootID is the kernel boot ID when the trial was armed
	// (ready-to-reboot) and, in the trial, of the trial boot: a different
	// ID on the next start means the device rebooted since.
	BootID string `json:"boot_id,omitempty"`
	// TrialStarted is when health checks began in the current trial boot.
	TrialStarted time.Time `json:"trial_started,omitzero"`
	// TrialStarts counts supervisor starts in the current trial boot.
	TrialStarts int `json:"trial_starts,omitempty"`
	// Health holds the last round of health check results.
	Health []health.Result `json:"health,omitempty"`
}

// ToVersion is the bundle's version once known.
func (u *Update) ToVersion() string {
	if u.Manifest == nil {
		return ""
	}
	return u.Manifest.Version
}

// Outcome records how an update ended.
type Outcome struct {
	ID          string          `json:"id"`
	Result      string          `json:"result"`
	Reason      string          `json:"reason,omitempty"`
	FromVersion string          `json:"from_version,omitempty"`
	ToVersion   string          `json:"to_version,omitempty"`
	Slot        bootloader.Slot `json:"slot,omitempty"`
	Source      string          `json:"source,omitempty"`
	Time        time.Time       `json:"time"`
}

// State is the supervisor's update state file,
// /data/supervisor/state.json.
type State struct {
	// Version of this file's layout.
	Version int   `json:"version"`
	Phase   Phase `json:"phase"`
	// Update is the update in progress (nil when idle).
	Update *Update `json:"update,omitempty"`
	// History is the last outcomes, newest first.
	History []Outcome `json:"history,omitempty"`
}

// historyLen bounds History so the state file stays a few KiB.
const historyLen = 20

// Store persists State. FileStore is the real one; tests wrap it to
// simulate a crash right after any write.
type Store interface {
	Load() (State, error)
	Save(State) error
}

// FileStore keeps State in a JSON file, replaced atomically.
type FileStore struct{ Path string }

// Load implements Store. A missing file is a fresh idle state. A file that
// does not parse is kept aside as <path>.corrupt and replaced by an idle
// state: the boot state, not this file, decides what boots, so losing the
// update history is the worst a corrupt file can do.
func (s FileStore) Load() (State, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return State{Version: 1, Phase: PhaseIdle}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read update state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil || st.Phase == "" || (st.Phase.Busy() && st.Update == nil) {
		bad := s.Path + ".corrupt"
		_ = os.Rename(s.Path, bad)
		return State{Version: 1, Phase: PhaseIdle, History: []Outcome{{
			Result: ResultFailed, Reason: fmt.Sprintf("update state file did not parse (kept as %s): %v", bad, err), Time: time.Now().UTC(),
		}}}, nil
	}
	return st, nil
}

// Save implements Store.
func (s FileStore) Save(st State) error {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return fmt.Errorf("save update state: %w", err)
	}
	st.Version = 1
	return atomicfile.WriteJSON(s.Path, st, 0o600)
}
