// Package updater is the supervisor's update state machine: it installs a
// bundle into the inactive root slot, arms a trial in the boot state, and
// after the reboot into the trial slot runs the health checks and commits
// or rolls back. Every transition is persisted (State, via Store) before
// the next step, and Resume, called on every start, continues or cleans up
// whatever a crash or power cut interrupted.
//
// The rules it enforces (DESIGN.md, invariants 1 and 6):
//   - the committed slot and the running slot are never opened for
//     writing (checkTarget, called before the slot is opened and again
//     before the trial is armed);
//   - a bundle is refused before the first byte is written if its
//     signature, board, architecture, version or size is wrong;
//   - the boot state changes only after every byte of the slot was read
//     back from the medium and matched the signed digest.
//
// It does not talk HTTP, find disks or parse the kernel command line: the
// daemon hands it those as Config.
package updater

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/bootstate"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/health"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
)

// Boot is what the bootloader told this boot (kernel command line) plus the
// kernel's boot ID.
type Boot struct {
	Slot  bootloader.Slot
	Trial bool
	// ID is /proc/sys/kernel/random/boot_id: different on every boot.
	ID string
}

// Config is everything the updater needs from the device.
type Config struct {
	// Store persists the state; usually FileStore{"/data/supervisor/state.json"}.
	Store Store
	// BootState is the boot-state record.
	BootState bootstate.BootState
	// Boot describes the running boot.
	Boot Boot
	// OpenSlot opens a slot's device for writing.
	OpenSlot func(bootloader.Slot) (slot.Device, error)
	// Current is the running release (Name, Version, Board, Arch).
	Current bundle.Manifest
	// Board is the device's board.
	Board string
	// Trusted are the public keys bundles must be signed with.
	Trusted []ed25519.PublicKey
	// Sources turns a source.Spec into bytes.
	Sources source.Options
	// Health runs one round of health checks.
	Health func(ctx context.Context, networkWasUp bool) []health.Result
	// NetworkUp reports reachability before an install; nil means false.
	NetworkUp func(ctx context.Context) bool
	// Reboot asks PID 1 to reboot (it returns; the reboot follows).
	Reboot func() error
	// Tries is the trial budget; default bootloader.DefaultTries.
	Tries int
	// HealthDeadline bounds the health checks of a trial boot; default 5 min.
	HealthDeadline time.Duration
	// HealthInterval is the pause between rounds; default 5 s.
	HealthInterval time.Duration
	// MaxTrialStarts is how many supervisor starts one trial boot may see
	// before the supervisor itself counts as unhealthy; default 3.
	MaxTrialStarts int
	// MaxRestarts is how many times an interrupted download starts over
	// on the next start; default 3.
	MaxRestarts int
	// Now defaults to time.Now.
	Now func() time.Time
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// Errors of the API; test with errors.Is.
var (
	// ErrBusy: another update is in progress.
	ErrBusy = errors.New("an update is in progress")
	// ErrRefused wraps every reason a bundle is refused before writing.
	ErrRefused = errors.New("update refused")
	// ErrCommittedSlot: something asked to write the committed or running
	// slot. It is a bug if it is ever returned.
	ErrCommittedSlot = errors.New("refusing to write the committed or running slot")
	// ErrNotInTrial: mark-good or abandon without a trial.
	ErrNotInTrial = errors.New("no trial is in progress")
)

// Progress of the current phase, in bytes.
type Progress struct {
	BundleBytes int64 `json:"bundle_bytes"`
	BundleSize  int64 `json:"bundle_size"`
	ImageBytes  int64 `json:"image_bytes"`
	ImageSize   int64 `json:"image_size"`
	VerifyBytes int64 `json:"verify_bytes"`
}

// Status is a snapshot for the API.
type Status struct {
	Phase    Phase     `json:"phase"`
	Update   *Update   `json:"update,omitempty"`
	Progress Progress  `json:"progress"`
	History  []Outcome `json:"history,omitempty"`
}

// Request starts an update.
type Request struct {
	Source source.Spec `json:"source"`
	// Force allows a downgrade, the same version or another OS name.
	Force bool `json:"force,omitempty"`
	// NoReboot leaves the device in ready-to-reboot until Reboot.
	NoReboot bool `json:"no_reboot,omitempty"`
}

// Updater runs the state machine. Its methods are safe for concurrent use.
type Updater struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex // guards st and cancel
	st    State
	dirty bool // a Save failed: the on-disk state is behind

	cancel context.CancelFunc // of the running install, if any
	wg     sync.WaitGroup

	prog struct {
		bundleBytes, bundleSize, imageBytes, imageSize, verifyBytes atomic.Int64
	}
}

// New loads the persisted state. Call Resume next.
func New(cfg Config) (*Updater, error) {
	if cfg.Tries <= 0 {
		cfg.Tries = bootloader.DefaultTries
	}
	if cfg.HealthDeadline <= 0 {
		cfg.HealthDeadline = 5 * time.Minute
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 5 * time.Second
	}
	if cfg.MaxTrialStarts <= 0 {
		cfg.MaxTrialStarts = 3
	}
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = 3
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.NetworkUp == nil {
		cfg.NetworkUp = func(context.Context) bool { return false }
	}
	if cfg.Health == nil {
		cfg.Health = func(context.Context, bool) []health.Result { return nil }
	}
	st, err := cfg.Store.Load()
	if err != nil {
		return nil, err
	}
	if st.Phase == "" {
		st.Phase = PhaseIdle
	}
	return &Updater{cfg: cfg, log: cfg.Log, st: st}, nil
}

// Status returns a snapshot.
func (u *Updater) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := Status{Phase: u.st.Phase, History: append([]Outcome(nil), u.st.History...)}
	if u.st.Update != nil {
		c := *u.st.Update
		s.Update = &c
	}
	s.Progress = Progress{
		BundleBytes: u.prog.bundleBytes.Load(), BundleSize: u.prog.bundleSize.Load(),
		ImageBytes: u.prog.imageBytes.Load(), ImageSize: u.prog.imageSize.Load(),
		VerifyBytes: u.prog.verifyBytes.Load(),
	}
	return s
}

// Wait blocks until background work (an install started by Start, the
// trial's health checks) has finished.
func (u *Updater) Wait() { u.wg.Wait() }

// save persists st as the new state. Callers hold no lock.
func (u *Updater) save(st State) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.saveLocked(st)
}

func (u *Updater) saveLocked(st State) error {
	if err := u.cfg.Store.Save(st); err != nil {
		u.dirty = true
		return fmt.Errorf("persist update state (phase %s): %w: is /data writable?", st.Phase, err)
	}
	u.st = st
	u.dirty = false
	return nil
}

// transition moves the current update to phase, persisting it.
func (u *Updater) transition(phase Phase, edit func(*Update)) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.st
	if st.Update == nil {
		return fmt.Errorf("transition to %s without an update", phase)
	}
	upd := *st.Update
	if edit != nil {
		edit(&upd)
	}
	st.Phase, st.Update = phase, &upd
	if err := u.saveLocked(st); err != nil {
		return err
	}
	u.log.Info("update", "phase", phase, "id", upd.ID, "slot", upd.Target, "version", upd.ToVersion())
	return nil
}

// finish ends the current update with an outcome.
func (u *Updater) finish(result, reason string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.st
	o := Outcome{Result: result, Reason: reason, Time: u.cfg.Now().UTC()}
	if upd := st.Update; upd != nil {
		o.ID, o.FromVersion, o.ToVersion, o.Slot, o.Source = upd.ID, upd.FromVersion, upd.ToVersion(), upd.Target, upd.Source.String()
	}
	st.History = append([]Outcome{o}, st.History...)
	if len(st.History) > historyLen {
		st.History = st.History[:historyLen]
	}
	st.Update = nil
	switch result {
	case ResultCommitted:
		st.Phase = PhaseCommitted
	case ResultRolledBack:
		st.Phase = PhaseRolledBack
	default:
		st.Phase = PhaseIdle
	}
	if err := u.saveLocked(st); err != nil {
		return err
	}
	lvl := slog.LevelInfo
	if result != ResultCommitted {
		lvl = slog.LevelWarn
	}
	u.log.Log(context.Background(), lvl, "update finished", "result", result, "reason", reason, "id", o.ID, "version", o.ToVersion, "slot", o.Slot)
	return nil
}

func (u *Updater) current() (Phase, *Update) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Update == nil {
		return u.st.Phase, nil
	}
	c := *u.st.Update
	return u.st.Phase, &c
}

// checkTarget is the assertion behind invariant 1: target must be a slot,
// not the committed slot and not the running slot.
func checkTarget(target bootloader.Slot, bs bootloader.State, boot Boot) error {
	switch {
	case !target.Valid():
		return fmt.Errorf("%w: slot %q", ErrCommittedSlot, target)
	case target == bs.Committed:
		return fmt.Errorf("%w: slot %s is committed", ErrCommittedSlot, target)
	case target == boot.Slot:
		return fmt.Errorf("%w: slot %s is running", ErrCommittedSlot, target)
	}
	return nil
}

// chooseTarget picks the slot to install into: the one that is neither
// committed nor running. It refuses while a trial is pending or when the
// running slot is not the committed one (then both slots are in use).
func (u *Updater) chooseTarget() (bootloader.Slot, error) {
	bs, err := u.cfg.BootState.Status()
	if err != nil {
		return "", fmt.Errorf("read boot state: %w", err)
	}
	if bs.Trial != bootloader.SlotNone {
		return "", fmt.Errorf("%w: a trial of slot %s is pending: mark it good or abandon it first", ErrRefused, bs.Trial)
	}
	if u.cfg.Boot.Slot.Valid() && u.cfg.Boot.Slot != bs.Committed {
		return "", fmt.Errorf("%w: running slot %s but slot %s is committed: reboot first", ErrRefused, u.cfg.Boot.Slot, bs.Committed)
	}
	target := bs.Committed.Other()
	if err := checkTarget(target, bs, u.cfg.Boot); err != nil {
		return "", err
	}
	return target, nil
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// begin persists a new update in phase downloading.
func (u *Updater) begin(ctx context.Context, req Request) (*Update, error) {
	target, err := u.chooseTarget()
	if err != nil {
		return nil, err
	}
	network := u.cfg.NetworkUp(ctx)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Phase.Busy() {
		return nil, fmt.Errorf("%w: %s (update %s)", ErrBusy, u.st.Phase, u.st.Update.ID)
	}
	upd := &Update{
		ID: newID(), Source: req.Source, Force: req.Force, NoReboot: req.NoReboot,
		Started: u.cfg.Now().UTC(), FromVersion: u.cfg.Current.Version, FromSlot: u.cfg.Boot.Slot,
		Target: target, NetworkWasUp: network,
	}
	st := u.st
	st.Phase, st.Update = PhaseDownloading, upd
	u.resetProgress()
	if err := u.saveLocked(st); err != nil {
		return nil, err
	}
	u.log.Info("update", "phase", PhaseDownloading, "id", upd.ID, "source", upd.Source.String(), "slot", target)
	c := *upd
	return &c, nil
}

func (u *Updater) resetProgress() {
	for _, a := range []*atomic.Int64{&u.prog.bundleBytes, &u.prog.bundleSize, &u.prog.imageBytes, &u.prog.imageSize, &u.prog.verifyBytes} {
		a.Store(0)
	}
}

// Start begins an update from a source that can be fetched again (file,
// URL, registry) and runs it in the background; follow it with Status. It
// returns the update ID, or ErrBusy / ErrRefused at once.
func (u *Updater) Start(ctx context.Context, req Request) (string, error) {
	if !req.Source.Refetchable() {
		return "", fmt.Errorf("%w: source %s cannot be started in the background: upload it", ErrRefused, req.Source)
	}
	if _, err := source.New(req.Source, u.cfg.Sources); err != nil {
		return "", fmt.Errorf("%w: %v", ErrRefused, err)
	}
	upd, err := u.begin(ctx, req)
	if err != nil {
		return "", err
	}
	u.goInstall(ctx, upd)
	return upd.ID, nil
}

// goInstall runs the download phase in the background with its own
// cancel function (Cancel).
func (u *Updater) goInstall(ctx context.Context, upd *Update) {
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	u.mu.Lock()
	u.cancel = cancel
	u.mu.Unlock()
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer cancel()
		u.runFetched(ictx, upd)
	}()
}

// runFetched opens the source and installs from it.
func (u *Updater) runFetched(ctx context.Context, upd *Update) error {
	src, err := source.New(upd.Source, u.cfg.Sources)
	if err != nil {
		return u.fail(upd, ResultFailed, err)
	}
	rc, size, err := src.Open(ctx)
	if err != nil {
		return u.fail(upd, ResultFailed, fmt.Errorf("fetch bundle from %s: %w", src, err))
	}
	defer rc.Close()
	return u.install(ctx, upd, rc, size)
}

// Install runs a whole update from r (an upload) in the caller's
// goroutine: it returns when the device is ready to reboot (and the reboot
// was requested, unless NoReboot), or with the reason it failed. size is
// the bundle's length if known, else -1.
func (u *Updater) Install(ctx context.Context, req Request, r io.Reader, size int64) error {
	upd, err := u.begin(ctx, req)
	if err != nil {
		return err
	}
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	u.mu.Lock()
	u.cancel = cancel
	u.mu.Unlock()
	return u.install(ictx, upd, r, size)
}

// Cancel stops an install in the download phase. Later phases are
// decided by the boot state and are left to Abandon.
func (u *Updater) Cancel() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Phase != PhaseDownloading || u.cancel == nil {
		return fmt.Errorf("%w: nothing to cancel in phase %s", ErrNotInTrial, u.st.Phase)
	}
	u.cancel()
	return nil
}

// fail ends upd with result and err's text, unless the state has moved on.
func (u *Updater) fail(upd *Update, result string, err error) error {
	if errors.Is(err, context.Canceled) {
		result = ResultCanceled
	}
	if errors.Is(err, ErrRefused) {
		result = ResultRefused
	}
	if ferr := u.finish(result, err.Error()); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}
