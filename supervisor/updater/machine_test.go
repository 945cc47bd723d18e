package updater

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/bootstate"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/supervisor/health"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
)

// errDead is what every side effect returns once the simulated process has
// crashed: nothing it does after the crash point reaches the machine.
var errDead = errors.New("process is dead (simulated crash)")

// machine simulates a device: two slots, a boot state, a state file, a
// bootloader that applies bootloader.Decide at every boot, and one
// supervisor process at a time that can be made to crash right after its
// k-th side effect (a state-file write or a boot-state write).
type machine struct {
	t   *testing.T
	mu  sync.Mutex
	dir string

	slots map[bootloader.Slot]*memDevice
	bs    *bootstate.Memory
	boot  Boot
	boots int

	dead    bool
	events  int
	crashAt int
	// crashAtWrite crashes the process right after its n-th slot write.
	crashAtWrite int
	slotWrites   int
	log          []string

	rebootRequested bool
	// trialHangs makes every boot of the trial slot fail before the
	// supervisor starts (a kernel panic), as many times as it is tried.
	trialHangs bool
	healthy    bool

	trusted  []ed25519.PublicKey
	current  bundle.Manifest
	upd      *Updater
	cancel   context.CancelFunc
	slotSize int64
	// tweak, if set, adjusts the next process's Config.
	tweak func(*Config)
}

func newMachine(t *testing.T, slotSize int64, v1 []byte) *machine {
	pub, _ := bundletest.DevKey(t)
	m := &machine{
		t: t, dir: t.TempDir(), slotSize: slotSize,
		slots:   map[bootloader.Slot]*memDevice{},
		bs:      bootstate.NewMemory(bootloader.State{Committed: bootloader.SlotA, Trial: bootloader.SlotNone, Seq: 1}),
		healthy: true,
		trusted: []ed25519.PublicKey{pub},
		current: bundle.Manifest{Name: "bulkhead", Version: "1.0.0", Board: "raspberrypi3", Arch: "arm64"},
	}
	for _, s := range []bootloader.Slot{bootloader.SlotA, bootloader.SlotB} {
		m.slots[s] = &memDevice{m: m, slot: s, data: make([]byte, slotSize)}
	}
	copy(m.slots[bootloader.SlotA].data, v1)
	m.powerOn()
	return m
}

// event counts a side effect and crashes the process right after the
// crashAt-th one.
func (m *machine) event(what string) {
	m.events++
	m.log = append(m.log, what)
	if m.crashAt > 0 && m.events == m.crashAt {
		m.dead = true
	}
}

func (m *machine) alive() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return errDead
	}
	return nil
}

// powerOn runs the bootloader and starts a supervisor process.
func (m *machine) powerOn() {
	m.mu.Lock()
	for {
		st, _ := m.bs.Status()
		slot, trial, next := bootloader.Decide(st)
		if next != nil {
			m.bs.Set(*next)
		}
		m.boots++
		m.boot = Boot{Slot: slot, Trial: trial, ID: fmt.Sprintf("boot-%d", m.boots)}
		m.log = append(m.log, fmt.Sprintf("boot %d: slot %s trial %v", m.boots, slot, trial))
		if trial && m.trialHangs {
			continue // the kernel panics; the watchdog resets the board
		}
		break
	}
	m.dead = false
	m.rebootRequested = false
	m.mu.Unlock()
	m.start()
}

// powerOnWith is powerOn with a Config adjustment for the new process.
func (m *machine) powerOnWith(tweak func(*Config)) {
	m.tweak = tweak
	m.powerOn()
}

// start starts a supervisor process on the running boot.
func (m *machine) start() {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	cfg := Config{
		Store:     &crashStore{m: m, fs: FileStore{Path: filepath.Join(m.dir, "state.json")}},
		BootState: &crashBootState{m: m},
		Boot:      m.boot,
		OpenSlot: func(s bootloader.Slot) (slot.Device, error) {
			if err := m.alive(); err != nil {
				return nil, err
			}
			return m.slots[s], nil
		},
		Current: m.currentRelease(),
		Board:   "raspberrypi3",
		Trusted: m.trusted,
		Sources: source.Options{Board: "raspberrypi3"},
		Health: func(ctx context.Context, networkWasUp bool) []health.Result {
			return []health.Result{{Name: "fake", OK: m.healthy, Detail: "fake check"}}
		},
		Reboot: func() error {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.dead {
				return errDead
			}
			m.rebootRequested = true
			return nil
		},
		HealthDeadline: 100 * time.Millisecond,
		HealthInterval: 10 * time.Millisecond,
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if m.tweak != nil {
		m.tweak(&cfg)
		m.tweak = nil
	}
	u, err := New(cfg)
	if err != nil {
		m.t.Fatalf("start supervisor: %v", err)
	}
	m.upd = u
	if err := u.Resume(ctx); err != nil && !errors.Is(err, errDead) {
		m.t.Logf("resume: %v", err)
	}
}

// currentRelease is release.json of the running slot: the version the
// slot's image carries.
func (m *machine) currentRelease() bundle.Manifest {
	r := m.current
	if v, ok := versionOf(m.slots[m.boot.Slot].data); ok {
		r.Version = v
	}
	return r
}

// settle reboots and restarts crashed processes until the machine rests.
func (m *machine) settle() {
	for i := 0; i < 20; i++ {
		m.upd.Wait()
		m.mu.Lock()
		dead, reboot := m.dead, m.rebootRequested
		m.mu.Unlock()
		switch {
		case reboot:
			m.cancel()
			m.upd.Wait()
			m.powerOn()
		case dead:
			// The process crashed; PID 1 restarts it in the same boot.
			m.cancel()
			m.upd.Wait()
			m.mu.Lock()
			m.dead, m.crashAt = false, 0
			m.mu.Unlock()
			m.log = append(m.log, "restart supervisor")
			m.start()
		default:
			return
		}
	}
	m.t.Fatalf("the machine did not settle:\n%s", m.history())
}

func (m *machine) history() string {
	var b bytes.Buffer
	for _, l := range m.log {
		fmt.Fprintln(&b, "  ", l)
	}
	return b.String()
}

// crashStore is FileStore with a crash after the write.
type crashStore struct {
	m  *machine
	fs FileStore
}

func (s *crashStore) Load() (State, error) { return s.fs.Load() }
func (s *crashStore) Save(st State) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.m.dead {
		return errDead
	}
	if err := s.fs.Save(st); err != nil {
		return err
	}
	s.m.event("state " + string(st.Phase))
	if s.m.dead {
		return errDead
	}
	return nil
}

// crashBootState is the boot state with a crash after each write.
type crashBootState struct{ m *machine }

func (b *crashBootState) Status() (bootloader.State, error) {
	if err := b.m.alive(); err != nil {
		return bootloader.State{}, err
	}
	return b.m.bs.Status()
}

func (b *crashBootState) do(what string, op func() error) error {
	b.m.mu.Lock()
	defer b.m.mu.Unlock()
	if b.m.dead {
		return errDead
	}
	if err := op(); err != nil {
		return err
	}
	b.m.event("bootstate " + what)
	if b.m.dead {
		return errDead
	}
	return nil
}

func (b *crashBootState) StartTrial(s bootloader.Slot, tries int) error {
	return b.do("start-trial", func() error { return b.m.bs.StartTrial(s, tries) })
}
func (b *crashBootState) Commit() error { return b.do("commit", b.m.bs.Commit) }
func (b *crashBootState) AbandonTrial() error {
	return b.do("abandon", b.m.bs.AbandonTrial)
}

// memDevice is a slot in memory that fails the test if it is written
// while its slot is committed or running (invariant 1).
type memDevice struct {
	m      *machine
	slot   bootloader.Slot
	data   []byte
	writes int
}

func (d *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := d.m.alive(); err != nil {
		return 0, err
	}
	st, _ := d.m.bs.Status()
	if st.Committed == d.slot || d.m.boot.Slot == d.slot {
		d.m.t.Errorf("INVARIANT 1 VIOLATED: slot %s written while committed=%s running=%s", d.slot, st.Committed, d.m.boot.Slot)
	}
	if off+int64(len(p)) > int64(len(d.data)) {
		return 0, errors.New("write beyond the slot")
	}
	d.writes++
	n := copy(d.data[off:], p)
	d.m.mu.Lock()
	d.m.slotWrites++
	if d.m.crashAtWrite > 0 && d.m.slotWrites == d.m.crashAtWrite {
		d.m.dead = true
		d.m.log = append(d.m.log, fmt.Sprintf("crash after slot write %d", d.m.slotWrites))
	}
	d.m.mu.Unlock()
	return n, nil
}

func (d *memDevice) Sync() error  { return d.m.alive() }
func (d *memDevice) Size() int64  { return int64(len(d.data)) }
func (d *memDevice) Close() error { return nil }

// slotImage makes an image whose first bytes say its version, so that
// the machine knows which release a slot runs.
func slotImage(version string, n int) []byte {
	img := bundletest.Image(n, byte(len(version)))
	copy(img, fmt.Sprintf("VERSION=%-16s\n", version))
	return img
}

func versionOf(data []byte) (string, bool) {
	var v string
	if _, err := fmt.Sscanf(string(data[:26]), "VERSION=%s\n", &v); err != nil {
		return "", false
	}
	return v, true
}

func writeBundle(t *testing.T, dir, version string, image []byte, key ed25519.PrivateKey) string {
	t.Helper()
	b, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", version), image, key)
	p := filepath.Join(dir, version+".bundle")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
