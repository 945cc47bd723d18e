package updater

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
)

const testSlotSize = 1 << 20

// fixture is a machine running v1 from slot a and a v2 bundle on disk.
type fixture struct {
	m      *machine
	v1, v2 []byte
	bundle string
}

func newFixture(t *testing.T) *fixture {
	_, priv := bundletest.DevKey(t)
	f := &fixture{v1: slotImage("1.0.0", 600<<10), v2: slotImage("2.0.0", 700<<10)}
	f.m = newMachine(t, testSlotSize, f.v1)
	f.bundle = writeBundle(t, t.TempDir(), "2.0.0", f.v2, priv)
	return f
}

func (f *fixture) start(t *testing.T) {
	t.Helper()
	// A simulated crash may hit the very first state write.
	if _, err := f.m.upd.Start(context.Background(), Request{Source: source.Spec{Kind: source.KindFile, Location: f.bundle}}); err != nil && !errors.Is(err, errDead) {
		t.Fatalf("start update: %v", err)
	}
}

func (f *fixture) wantCommittedV2(t *testing.T) {
	t.Helper()
	m := f.m
	st, _ := m.bs.Status()
	if st.Committed != bootloader.SlotB || st.Trial != bootloader.SlotNone {
		t.Fatalf("boot state %s, want committed=b trial=none\n%s", st, m.history())
	}
	if m.boot.Slot != bootloader.SlotB {
		t.Fatalf("running slot %s, want b\n%s", m.boot.Slot, m.history())
	}
	if !bytes.Equal(m.slots[bootloader.SlotB].data[:len(f.v2)], f.v2) {
		t.Fatalf("slot b does not hold the v2 image\n%s", m.history())
	}
	f.wantSlotAIntact(t)
	s := m.upd.Status()
	if s.Phase != PhaseCommitted || len(s.History) == 0 || s.History[0].Result != ResultCommitted {
		t.Fatalf("status %+v, want committed\n%s", s, m.history())
	}
	if s.History[0].ToVersion != "2.0.0" || s.History[0].FromVersion != "1.0.0" {
		t.Errorf("outcome %+v", s.History[0])
	}
}

func (f *fixture) wantSlotAIntact(t *testing.T) {
	t.Helper()
	if !bytes.Equal(f.m.slots[bootloader.SlotA].data[:len(f.v1)], f.v1) || f.m.slots[bootloader.SlotA].writes != 0 {
		t.Fatalf("slot a (committed) was written\n%s", f.m.history())
	}
}

func (f *fixture) wantBackOnV1(t *testing.T, result string) Outcome {
	t.Helper()
	m := f.m
	st, _ := m.bs.Status()
	if st.Committed != bootloader.SlotA || st.Trial != bootloader.SlotNone || m.boot.Slot != bootloader.SlotA {
		t.Fatalf("boot state %s, running %s; want committed=a trial=none running a\n%s", st, m.boot.Slot, m.history())
	}
	f.wantSlotAIntact(t)
	s := m.upd.Status()
	if s.Phase.Busy() || len(s.History) == 0 || s.History[0].Result != result {
		t.Fatalf("status %+v, want outcome %s\n%s", s, result, m.history())
	}
	return s.History[0]
}

func TestUpdateFromFileCommitsWhenHealthy(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	f.m.settle()
	f.wantCommittedV2(t)
	t.Logf("clean run, %d side effects:\n%s", f.m.events, f.m.history())
}

func TestUnhealthyTrialRollsBackAndReboots(t *testing.T) {
	f := newFixture(t)
	f.m.healthy = false
	f.start(t)
	f.m.settle()
	o := f.wantBackOnV1(t, ResultRolledBack)
	if !strings.Contains(o.Reason, "unhealthy") || !strings.Contains(o.Reason, "fake check") {
		t.Errorf("reason %q does not say which check failed", o.Reason)
	}
}

func TestTrialSlotThatNeverBootsIsRolledBackByTheBootloader(t *testing.T) {
	f := newFixture(t)
	f.m.trialHangs = true
	f.start(t)
	f.m.settle()
	o := f.wantBackOnV1(t, ResultRolledBack)
	if !strings.Contains(o.Reason, "bootloader returned to slot a") {
		t.Errorf("reason %q", o.Reason)
	}
	// 1 boot + 3 failed trial boots + the fallback boot.
	if f.m.boots != 1+bootloader.DefaultTries+1 {
		t.Errorf("%d boots", f.m.boots)
	}
}

// TestCrashAfterEveryTransition crashes the supervisor right after each
// side effect of an update (every state-file write and every boot-state
// write) and checks that the restarted supervisor, with the reboots it
// asks for, always ends where an uninterrupted update ends, without ever
// writing the committed slot.
func TestCrashAfterEveryTransition(t *testing.T) {
	for _, healthy := range []bool{true, false} {
		name := "healthy"
		if !healthy {
			name = "unhealthy"
		}
		t.Run(name, func(t *testing.T) {
			clean := newFixture(t)
			clean.m.healthy = healthy
			clean.start(t)
			clean.m.settle()
			n := clean.m.events
			if n < 6 {
				t.Fatalf("only %d side effects in a clean run:\n%s", n, clean.m.history())
			}
			for k := 1; k <= n; k++ {
				f := newFixture(t)
				f.m.healthy = healthy
				f.m.crashAt = k
				f.start(t)
				f.m.settle()
				if healthy {
					f.wantCommittedV2(t)
				} else {
					f.wantBackOnV1(t, ResultRolledBack)
				}
				t.Logf("crash after side effect %d (%s): ok", k, clean.m.log[indexOfEvent(clean.m.log, k)])
			}
		})
	}
}

// indexOfEvent finds the k-th side effect in a machine log (boots and
// restarts are logged too).
func indexOfEvent(log []string, k int) int {
	seen := 0
	for i, l := range log {
		if strings.HasPrefix(l, "state ") || strings.HasPrefix(l, "bootstate ") {
			seen++
			if seen == k {
				return i
			}
		}
	}
	return 0
}

func TestCrashDuringAnUploadCleansUp(t *testing.T) {
	f := newFixture(t)
	b, _ := os.ReadFile(f.bundle)
	f.m.crashAt = 2 // right after the manifest was recorded
	err := f.m.upd.Install(context.Background(), Request{Source: source.Spec{Kind: source.KindUpload}}, bytes.NewReader(b), int64(len(b)))
	if !errors.Is(err, errDead) {
		t.Fatalf("install: %v, want the simulated crash", err)
	}
	f.m.settle()
	o := f.wantBackOnV1(t, ResultFailed)
	if !strings.Contains(o.Reason, "upload the bundle again") {
		t.Errorf("reason %q", o.Reason)
	}
	// The device takes the same upload afterwards.
	if err := f.m.upd.Install(context.Background(), Request{Source: source.Spec{Kind: source.KindUpload}}, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	f.m.settle()
	f.wantCommittedV2(t)
}

func TestRefusalsWriteNothing(t *testing.T) {
	_, devPriv := bundletest.DevKey(t)
	_, otherPriv := bundletest.OtherKey(t)
	tests := []struct {
		name  string
		make  func(t *testing.T, dir string) string
		force bool
		want  error
	}{
		{"a bundle signed by an untrusted key", func(t *testing.T, dir string) string {
			return writeBundle(t, dir, "2.0.0", slotImage("2.0.0", 1000), otherPriv)
		}, false, bundle.ErrUnknownKey},
		{"a bundle whose manifest was altered", func(t *testing.T, dir string) string {
			p := writeBundle(t, dir, "2.0.0", slotImage("2.0.0", 1000), devPriv)
			b, _ := os.ReadFile(p)
			i := bytes.Index(b, []byte(`"2.0.0"`))
			b[i+1] = '9'
			os.WriteFile(p, b, 0o644)
			return p
		}, false, bundle.ErrBadSignature},
		{"a bundle for another board, even forced", func(t *testing.T, dir string) string {
			m := bundletest.Manifest("x86_64", "2.0.0")
			b, _ := bundletest.Make(t, m, slotImage("2.0.0", 1000), devPriv)
			p := dir + "/x.bundle"
			os.WriteFile(p, b, 0o644)
			return p
		}, true, bundle.ErrWrongBoard},
		{"a downgrade", func(t *testing.T, dir string) string {
			return writeBundle(t, dir, "0.9.0", slotImage("0.9.0", 1000), devPriv)
		}, false, bundle.ErrDowngrade},
		{"the same version", func(t *testing.T, dir string) string {
			return writeBundle(t, dir, "1.0.0", slotImage("1.0.0", 1000), devPriv)
		}, false, bundle.ErrSameVersion},
		{"an image larger than the slot", func(t *testing.T, dir string) string {
			return writeBundle(t, dir, "2.0.0", slotImage("2.0.0", testSlotSize+1), devPriv)
		}, false, ErrRefused},
		{"not a bundle at all", func(t *testing.T, dir string) string {
			p := dir + "/junk"
			os.WriteFile(p, []byte("<html>404</html>"), 0o644)
			return p
		}, false, bundle.ErrNotBundle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			p := tc.make(t, t.TempDir())
			before := f.m.bs.Writes
			b, _ := os.ReadFile(p)
			err := f.m.upd.Install(context.Background(), Request{Source: source.Spec{Kind: source.KindUpload}, Force: tc.force}, bytes.NewReader(b), int64(len(b)))
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrRefused) {
				t.Fatalf("install: %v, want %v and ErrRefused", err, tc.want)
			}
			for s, d := range f.m.slots {
				if d.writes != 0 {
					t.Errorf("slot %s was written %d times", s, d.writes)
				}
			}
			if f.m.bs.Writes != before {
				t.Error("the boot state changed")
			}
			f.m.settle()
			f.wantBackOnV1(t, ResultRefused)
		})
	}
}

func TestForcedSameVersionIsReinstalled(t *testing.T) {
	_, priv := bundletest.DevKey(t)
	f := newFixture(t)
	p := writeBundle(t, t.TempDir(), "1.0.0", slotImage("1.0.0", 5000), priv)
	if _, err := f.m.upd.Start(context.Background(), Request{Source: source.Spec{Kind: source.KindFile, Location: p}, Force: true}); err != nil {
		t.Fatal(err)
	}
	f.m.settle()
	st, _ := f.m.bs.Status()
	if st.Committed != bootloader.SlotB {
		t.Fatalf("boot state %s\n%s", st, f.m.history())
	}
}

// flakyDevice loses one byte of every write, as a failing card might.
type flakyDevice struct{ *memDevice }

func (d flakyDevice) WriteAt(p []byte, off int64) (int, error) {
	n, err := d.memDevice.WriteAt(p, off)
	if n > 10 {
		d.data[off+10] ^= 0xff
	}
	return n, err
}

func TestReadBackMismatchArmsNoTrial(t *testing.T) {
	f := newFixture(t)
	// Swap in a flaky slot b for the next process.
	f.m.upd.cfg.OpenSlot = func(s bootloader.Slot) (slot.Device, error) { return flakyDevice{f.m.slots[s]}, nil }
	f.start(t)
	f.m.upd.Wait()
	f.m.settle()
	o := f.wantBackOnV1(t, ResultFailed)
	if !strings.Contains(o.Reason, "reads back") {
		t.Errorf("reason %q", o.Reason)
	}
	if f.m.bs.Writes != 0 {
		t.Errorf("the boot state was written %d times", f.m.bs.Writes)
	}
}

func TestSecondUpdateWhileBusyIsRefused(t *testing.T) {
	f := newFixture(t)
	f.m.upd.cfg.Reboot = func() error { return nil } // stay in ready-to-reboot
	f.start(t)
	f.m.upd.Wait()
	if p := f.m.upd.Status().Phase; p != PhaseReady {
		t.Fatalf("phase %s", p)
	}
	_, err := f.m.upd.Start(context.Background(), Request{Source: source.Spec{Kind: source.KindFile, Location: f.bundle}})
	if !errors.Is(err, ErrRefused) && !errors.Is(err, ErrBusy) {
		t.Fatalf("second start: %v, want ErrBusy or ErrRefused", err)
	}
}

func TestAbandonBeforeRebootDisarmsTheTrial(t *testing.T) {
	f := newFixture(t)
	if _, err := f.m.upd.Start(context.Background(), Request{Source: source.Spec{Kind: source.KindFile, Location: f.bundle}, NoReboot: true}); err != nil {
		t.Fatal(err)
	}
	f.m.upd.Wait()
	if st, _ := f.m.bs.Status(); st.Trial != bootloader.SlotB {
		t.Fatalf("boot state %s, want a trial of b", st)
	}
	if err := f.m.upd.Abandon(); err != nil {
		t.Fatal(err)
	}
	f.m.settle()
	f.wantBackOnV1(t, ResultCanceled)
}

func TestMarkGoodCommitsAtOnce(t *testing.T) {
	f := newFixture(t)
	f.m.healthy = false
	f.m.upd.cfg.HealthDeadline = 0
	f.start(t)
	f.m.upd.Wait()
	// Reboot into the trial by hand with slow health checks, and mark
	// the slot good before they decide.
	f.m.powerOnWith(func(c *Config) { c.HealthDeadline = time.Hour; c.HealthInterval = time.Hour })
	if p := f.m.upd.Status().Phase; p != PhaseTrial {
		t.Fatalf("phase %s\n%s", p, f.m.history())
	}
	if err := f.m.upd.MarkGood(); err != nil {
		t.Fatal(err)
	}
	f.m.cancel()
	f.m.upd.Wait()
	f.wantCommittedV2(t)
}

// TestCrashMidStreamStartsOver cuts the supervisor after each 1 MiB write
// of a 3 MiB image: the next start fetches the bundle again and finishes.
func TestCrashMidStreamStartsOver(t *testing.T) {
	_, priv := bundletest.DevKey(t)
	v1, v2 := slotImage("1.0.0", 100<<10), slotImage("2.0.0", 3<<20)
	p := writeBundle(t, t.TempDir(), "2.0.0", v2, priv)
	for k := 1; k <= 3; k++ {
		m := newMachine(t, 4<<20, v1)
		m.crashAtWrite = k
		if _, err := m.upd.Start(context.Background(), Request{Source: source.Spec{Kind: source.KindFile, Location: p}}); err != nil {
			t.Fatal(err)
		}
		m.settle()
		st, _ := m.bs.Status()
		if st.Committed != bootloader.SlotB || !bytes.Equal(m.slots[bootloader.SlotB].data[:len(v2)], v2) {
			t.Fatalf("crash after write %d: boot state %s\n%s", k, st, m.history())
		}
		if s := m.upd.Status(); s.History[0].Result != ResultCommitted {
			t.Fatalf("outcome %+v", s.History[0])
		}
	}
}

// TestLostCommitIsCommittedAgain: after a commit, the copy of the boot
// state holding it is corrupted on the medium, so the older copy (slot b
// on trial) wins and the bootloader boots b as a trial again. The
// supervisor, which committed b itself, commits it again instead of
// letting the tries run out and the device fall back to v1.
func TestLostCommitIsCommittedAgain(t *testing.T) {
	f := newFixture(t)
	f.start(t)
	f.m.settle()
	f.wantCommittedV2(t)

	st, _ := f.m.bs.Status()
	f.m.cancel()
	f.m.upd.Wait()
	f.m.bs.Set(bootloader.State{Committed: bootloader.SlotA, Trial: bootloader.SlotB, Tries: 2, Seq: st.Seq - 1})
	f.m.powerOn()
	f.m.settle()
	if !f.m.boot.Trial || f.m.boot.Slot != bootloader.SlotB {
		t.Fatalf("boot %+v: the test wants a trial boot of b\n%s", f.m.boot, f.m.history())
	}
	got, _ := f.m.bs.Status()
	if got.Committed != bootloader.SlotB || got.Trial != bootloader.SlotNone {
		t.Errorf("boot state %s after the supervisor started, want b committed again\n%s", got, f.m.history())
	}
	f.wantSlotAIntact(t)

	// An update this supervisor did not commit is not committed for it.
	g := newFixture(t)
	g.m.cancel()
	g.m.upd.Wait()
	g.m.bs.Set(bootloader.State{Committed: bootloader.SlotA, Trial: bootloader.SlotB, Tries: 2, Seq: 5})
	g.m.powerOn()
	g.m.settle()
	if got, _ := g.m.bs.Status(); got.Committed != bootloader.SlotA {
		t.Errorf("boot state %s: a trial nobody started was committed", got)
	}
}
