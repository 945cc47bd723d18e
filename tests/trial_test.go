package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// bootTimeout bounds one boot (firmware to PID 1's ready line, or to a
// panic) on a machine shared with other QEMU tests.
const bootTimeout = 5 * time.Minute

// trialBoard is how TestTrialBootsFallBackOrCommit runs on one board.
type trialBoard struct {
	name string
	// api: the machine has a network, so the test reaches the supervisor's
	// TCP API (status, reboot) through a host forward.
	api bool
	// watchdog: the board's watchdog is emulated and armed (the raspi
	// machines run with bulkhead.watchdog=0, see boards/raspberrypi3.yaml).
	watchdog bool
	// panicInit: the panicking slot's /sbin/init exits (a panic after the
	// initramfs ran) instead of its initramfs being garbage (a panic before
	// any module is loaded). A Raspberry Pi has no way to reset itself
	// before bcm2835_wdt is loaded (no PSCI on the Pi 3), see docs/safety.md.
	panicInit bool
}

// TestTrialBootsFallBackOrCommit runs the life of a trial on each
// bootloader through the real firmware, bootloader, kernel, initramfs,
// PID 1 and supervisor, on one machine per board:
//
//  1. a good slot b on trial is committed by the supervisor's health
//     checks, then boots committed across 3 reboots with not one sector of
//     the boot state (or anything else before root slot a) written;
//  2. one corrupted boot-state copy is ignored: slot b still boots and
//     nothing repairs or otherwise writes the boot state;
//  3. slot a on trial with a kernel panic in every boot is given up by the
//     bootloader after its tries, and committed slot b boots;
//  4. (boards with a watchdog) slot a on trial with an init that hangs is
//     reset by the watchdog, counted, and given up the same way.
//
// Throughout, committed slot b is never written (invariant 1).
//
// Step 1's trial starts where an install leaves it (docs/update-protocol.md,
// section 3): slot b holds the image, the supervisor's state file says
// ready-to-reboot, and StartTrial(b, 3) is on disk. The test writes these
// on the host, because streaming and verifying a 1 GiB slot on an emulated
// CPU takes minutes; the supervisor commits only a trial it armed.
func TestTrialBootsFallBackOrCommit(t *testing.T) {
	t.Parallel() // its machines share the CPUs with the other boot-state test
	for _, tb := range []trialBoard{
		{name: "qemu-aarch64", api: true, watchdog: true},
		{name: "x86_64", api: true, watchdog: true},
		{name: "raspberrypi3", panicInit: true},
	} {
		t.Run(tb.name, func(t *testing.T) {
			t.Parallel()
			res := buildOnce(t, tb.name)
			v := newBootVM(t, loadBoard(t, tb.name), res.Image, tb.api)
			d := v.disk

			steps := []struct {
				name string
				run  func(t *testing.T)
			}{
				{"a good slot on trial is committed by the supervisor and stays committed without boot-state writes", func(t *testing.T) {
					v.t = t
					d.writeSlot(t, slotB, res.Slot)
					d.seedSupervisorTrial(t, slotA, slotB)
					armed := startTrial(t, d, slotB, bootloader.DefaultTries)
					v.start()
					v.expectDecision(slotB, true, armed.Seq+1)
					v.ready(slotB, true, bootTimeout)
					committed := v.waitState(func(s bootloader.State) bool { return s.Committed == slotB }, bootTimeout)
					if want := bootState(slotB, noSlot, 0, armed.Seq+2); committed != want {
						t.Fatalf("after the commit the boot state is %s, want %s", committed, want)
					}
					if v.api != "" {
						s := v.apiStatus()
						if s.Update.Phase != updater.PhaseCommitted || len(s.Update.History) == 0 || s.Update.History[0].Result != updater.ResultCommitted {
							t.Fatalf("supervisor status after the trial: phase %s, history %+v; want committed", s.Update.Phase, s.Update.History)
						}
					}
					before := d.snapshot(t)
					for i := 1; i <= 3; i++ {
						v.reboot()
						v.expectDecision(slotB, false, committed.Seq)
						v.ready(slotB, false, bootTimeout)
						v.settle()
						if changed := before.changed(d.snapshot(t)); len(changed) > 0 {
							t.Fatalf("reboot %d of committed slot b wrote %v", i, changed)
						}
					}
					if got, _ := d.read(t); got != committed {
						t.Fatalf("after 3 reboots the boot state is %s, want %s", got, committed)
					}
				}},
				{"a corrupted copy is ignored and nothing repairs it", func(t *testing.T) {
					v.t = t
					v.stop()
					cur, info := d.read(t)
					older := info.Target
					d.writeAt(t, d.copyOffset(older), corruptCopy(t, d.codec, d.readCopy(t, older)))
					before := d.snapshot(t)
					v.start()
					v.wait(regexp.MustCompile(`(?m)^\r?bulkhead: state copy `+older+`: invalid`), bootTimeout)
					v.expectDecision(cur.Committed, false, cur.Seq)
					v.ready(cur.Committed, false, bootTimeout)
					v.settle()
					if changed := before.changed(d.snapshot(t)); len(changed) > 0 {
						t.Fatalf("a boot with copy %s corrupted wrote %v", older, changed)
					}
				}},
				{"a slot whose kernel panics is given up after its tries", func(t *testing.T) {
					v.t = t
					v.stop()
					d.writeSlot(t, slotA, res.Slot)
					if tb.panicInit {
						d.replaceInSlot(t, slotA, "/usr/sbin/init", badInit(t, d.board, "exit"), 0o755)
					} else {
						d.replaceInSlot(t, slotA, "/boot/initrd.img", randomBytes(t, 64<<10), 0o644)
					}
					const tries = 2
					armed := startTrial(t, d, slotA, tries)
					v.start()
					for i := 1; i <= tries; i++ {
						v.expectDecision(slotA, true, armed.Seq+uint32(i))
						if tb.panicInit {
							v.wait(badExitRE, bootTimeout)
						}
						v.wait(panicRE, bootTimeout)
					}
					v.expectDecision(slotB, false, armed.Seq+tries+1)
					v.ready(slotB, false, bootTimeout)
					if got, want := v.stateNow(), bootState(slotB, noSlot, 0, armed.Seq+tries+1); got != want {
						t.Fatalf("after the failed trial the boot state is %s, want %s", got, want)
					}
				}},
				{"a slot whose init hangs is reset by the watchdog and given up", func(t *testing.T) {
					v.t = t
					v.stop()
					d.writeSlot(t, slotA, res.Slot)
					d.replaceInSlot(t, slotA, "/usr/sbin/init", badInit(t, d.board, "hang"), 0o755)
					armed := startTrial(t, d, slotA, 1)
					v.start()
					v.expectDecision(slotA, true, armed.Seq+1)
					v.wait(badHangRE, bootTimeout)
					// The next boot starts without a panic or a reboot by
					// anyone: the watchdog reset the machine.
					v.waitNot(scriptRE, panicRE, bootTimeout)
					v.expectDecision(slotB, false, armed.Seq+2)
					v.ready(slotB, false, bootTimeout)
					if got, want := v.stateNow(), bootState(slotB, noSlot, 0, armed.Seq+2); got != want {
						t.Fatalf("after the hung trial the boot state is %s, want %s", got, want)
					}
				}},
			}
			if !tb.watchdog {
				// QEMU's raspi machines do not emulate the watchdog as a
				// timer; the panic step covers their fallback.
				steps = steps[:3]
			}
			for _, s := range steps {
				if !t.Run(s.name, s.run) {
					return
				}
			}
			v.t = t
			v.stop()
			if diff := diffSlot(t, res.Slot, d, slotB); diff != "" {
				t.Errorf("committed slot b was written: it differs from the slot image in %s", diff)
			}
		})
	}
}

// startTrial arms a trial the way the supervisor does after an install.
func startTrial(t *testing.T, d *stateDisk, s bootloader.Slot, tries int) bootloader.State {
	t.Helper()
	var (
		st  bootloader.State
		err error
	)
	d.withStore(t, func(store *bootloader.Store) { st, err = store.StartTrial(s, tries) })
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// diffSlot describes the 4 KiB blocks in which slot s of the disk differs
// from image (zeros after its end); "" when it holds exactly the image.
func diffSlot(t *testing.T, image string, d *stateDisk, s bootloader.Slot) string {
	t.Helper()
	fa, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	p := d.part(t, slotPart(s))
	var out []string
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < p.Size; off += int64(len(ba)) {
		clear(ba)
		if _, err := fa.ReadAt(ba, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if _, err := fb.ReadAt(bb, p.Start+off); err != nil {
			t.Fatal(err)
		}
		for blk := 0; blk < len(ba) && len(out) < 20; blk += 4096 {
			if !bytes.Equal(ba[blk:blk+4096], bb[blk:blk+4096]) {
				out = append(out, fmt.Sprintf("block %d", (off+int64(blk))/4096))
			}
		}
	}
	return strings.Join(out, ", ")
}

// expectDecision waits for the boot script's decision and checks it.
func (v *bootVM) expectDecision(slot bootloader.Slot, trial bool, seq uint32) {
	v.t.Helper()
	gs, gt, gq := v.decision(bootTimeout)
	if gs != slot || gt != trial || gq != seq {
		v.t.Fatalf("%s: the bootloader chose slot=%s trial=%v seq=%d, want slot=%s trial=%v seq=%d\n--- console ---\n%s",
			v.name, gs, gt, gq, slot, trial, seq, consoleTail(v.m.Log(), 0))
	}
}

// stateNow reads the boot state from the disk.
func (v *bootVM) stateNow() bootloader.State {
	st, _ := v.disk.read(v.t)
	return st
}

// waitState polls the disk (the running guest writes it through its block
// device) until the boot state satisfies ok.
func (v *bootVM) waitState(ok func(bootloader.State) bool, timeout time.Duration) bootloader.State {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := v.stateNow()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("%s: boot state still %s after %s\n--- console ---\n%s", v.name, st, timeout, consoleTail(v.m.Log(), 0))
		}
		time.Sleep(time.Second)
	}
}

func (v *bootVM) client() *client.Client { return client.TCP(v.api, apiToken) }

// apiStatus polls the supervisor's API until it answers.
func (v *bootVM) apiStatus() api.Status {
	v.t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		ctx, cancel := context.WithTimeout(v.ctx, 10*time.Second)
		s, err := v.client().Status(ctx)
		cancel()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("%s: supervisor API at %s: %v\n--- console ---\n%s", v.name, v.api, err, consoleTail(v.m.Log(), 0))
		}
		time.Sleep(time.Second)
	}
}

// reboot restarts the running system: through the supervisor's API where
// the machine has a network (PID 1 shuts down cleanly and reboots), by
// cutting the power elsewhere.
func (v *bootVM) reboot() {
	v.t.Helper()
	if v.api == "" {
		v.stop()
		v.start()
		return
	}
	ctx, cancel := context.WithTimeout(v.ctx, time.Minute)
	defer cancel()
	if _, err := v.client().Reboot(ctx); err != nil {
		v.t.Fatalf("%s: reboot through the API: %v", v.name, err)
	}
	v.wait(scriptRE, bootTimeout)
}

// supervisorUpRE is the supervisor's start line on the console (PID 1
// prefixes service output with the service name); it starts acting on the
// boot state right after it.
var supervisorUpRE = regexp.MustCompile(`supervisor: .*msg="supervisor up" `)

// settle waits until the supervisor of the running system has started and
// had time to act on the boot state: had it anything to write, it would
// have written it by then.
func (v *bootVM) settle() {
	v.t.Helper()
	v.wait(supervisorUpRE, bootTimeout)
	time.Sleep(3 * time.Second)
}
