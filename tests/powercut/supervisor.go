package powercut

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/bootstate"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/health"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// ParseUpdateState parses the supervisor's state file strictly: JSON of
// updater.State with a known phase, and an update whenever the phase is
// busy. The supervisor replaces the file atomically (temp file, fsync,
// rename, fsync directory), so no crash state may hold anything else.
// nil data (no file) is the idle state of a device that never updated.
func ParseUpdateState(data []byte) (updater.State, error) {
	if data == nil {
		return updater.State{Version: 1, Phase: updater.PhaseIdle}, nil
	}
	var st updater.State
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("%s does not parse: %w", StatePath, err)
	}
	switch st.Phase {
	case updater.PhaseIdle, updater.PhaseDownloading, updater.PhaseVerifying, updater.PhaseReady,
		updater.PhaseTrial, updater.PhaseCommitted, updater.PhaseRolledBack:
	default:
		return st, fmt.Errorf("%s: unknown phase %q", StatePath, st.Phase)
	}
	if st.Phase.Busy() && st.Update == nil {
		return st, fmt.Errorf("%s: phase %s without an update", StatePath, st.Phase)
	}
	return st, nil
}

// ResumeResult is what the supervisor's own Resume did when started on a
// crash state, with fakes for everything outside the disk.
type ResumeResult struct {
	Before, After updater.Phase
	// Outcome is the outcome Resume recorded, if any.
	Outcome *updater.Outcome
	// Rebooted: Resume asked for a reboot.
	Rebooted bool
	// BootState is the boot state when Resume and its background work
	// were done.
	BootState bootloader.State
	// Opened lists the slots Resume opened (to verify or write).
	Opened []bootloader.Slot
	// Wrote lists slots Resume tried to write (refused offline).
	Wrote []bootloader.Slot
	// Err is Resume's error.
	Err error
	// Stuck: its background work did not end.
	Stuck bool
}

// resumeInput is what Resume depends on.
type resumeInput struct {
	state    []byte           // state.json, nil if absent
	boot     bootloader.State // the boot state Linux finds (after the bootloader's save)
	slot     bootloader.Slot  // the slot the bootloader booted
	trial    bool
	board    string
	current  bundle.Manifest
	openSlot func(bootloader.Slot) (slot.Device, error)
}

// offlineHTTP fails every request at once: a restarted download finds no
// network offline, which ends it as failed, the clean-up path.
type offlineHTTP struct{}

func (offlineHTTP) Do(*http.Request) (*http.Response, error) {
	return nil, errors.New("offline check: no network")
}

// simulateResume runs updater.Resume on a copy of the state file in dir.
func simulateResume(ctx context.Context, in resumeInput, dir string) (ResumeResult, error) {
	tmp, err := os.MkdirTemp(dir, "resume-")
	if err != nil {
		return ResumeResult{}, err
	}
	defer os.RemoveAll(tmp)
	store := updater.FileStore{Path: filepath.Join(tmp, "state.json")}
	if in.state != nil {
		if err := os.WriteFile(store.Path, in.state, 0o600); err != nil {
			return ResumeResult{}, err
		}
	}
	bs := bootstate.NewMemory(in.boot)
	var (
		mu  sync.Mutex
		res ResumeResult
	)
	cfg := updater.Config{
		Store:     store,
		BootState: bs,
		Boot:      updater.Boot{Slot: in.slot, Trial: in.trial, ID: "offline-boot-after-the-cut"},
		OpenSlot: func(s bootloader.Slot) (slot.Device, error) {
			mu.Lock()
			res.Opened = append(res.Opened, s)
			mu.Unlock()
			d, err := in.openSlot(s)
			if err != nil {
				return nil, err
			}
			return &recordingDevice{Device: d, wrote: func() {
				mu.Lock()
				res.Wrote = append(res.Wrote, s)
				mu.Unlock()
			}}, nil
		},
		Current: in.current,
		Board:   in.board,
		Sources: source.Options{HTTP: offlineHTTP{}, Retry: source.Retry{Attempts: 1, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, Stall: time.Second}, Board: in.board},
		Health: func(context.Context, bool) []health.Result {
			return []health.Result{{Name: "offline", OK: true}}
		},
		Reboot: func() error {
			mu.Lock()
			res.Rebooted = true
			mu.Unlock()
			return nil
		},
		HealthInterval: 10 * time.Millisecond,
		Log:            slog.New(slog.DiscardHandler),
	}
	u, err := updater.New(cfg)
	if err != nil {
		return ResumeResult{}, fmt.Errorf("updater.New: %w", err)
	}
	before := u.Status()
	res.Before = before.Phase
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res.Err = u.Resume(rctx)
	done := make(chan struct{})
	go func() { u.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		res.Stuck = true
		cancel()
		<-done
	}
	after := u.Status()
	res.After = after.Phase
	if len(after.History) > len(before.History) {
		o := after.History[0]
		res.Outcome = &o
	}
	res.BootState, _ = bs.Status()
	mu.Lock()
	defer mu.Unlock()
	return res, nil
}

// recordingDevice refuses writes: the offline check only observes.
type recordingDevice struct {
	slot.Device
	wrote func()
}

func (d *recordingDevice) WriteAt(p []byte, off int64) (int, error) {
	d.wrote()
	return 0, errors.New("offline check: the slot is read-only")
}

// readOnlySlot is a slot partition of a crash state.
type readOnlySlot struct {
	r    io.ReaderAt
	size int64
}

func (d readOnlySlot) ReadAt(p []byte, off int64) (int, error) { return d.r.ReadAt(p, off) }
func (d readOnlySlot) WriteAt(p []byte, off int64) (int, error) {
	return 0, errors.New("offline check: the slot is read-only")
}
func (d readOnlySlot) Sync() error  { return nil }
func (d readOnlySlot) Size() int64  { return d.size }
func (d readOnlySlot) Close() error { return nil }
