package tests

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
)

// copySpec is what the test writes into one boot-state copy.
type copySpec struct {
	st bootloader.State
	// damage: "" intact, "byte" one byte changed (CRC or bh_check fails),
	// "signature" the first byte changed (for GRUB the signature line,
	// which save_env also refuses to overwrite).
	damage string
}

func bootState(committed, trial bootloader.Slot, tries int, seq uint32) bootloader.State {
	return bootloader.State{Committed: committed, Trial: trial, Tries: tries, Seq: seq}
}

const (
	slotA  = bootloader.SlotA
	slotB  = bootloader.SlotB
	noSlot = bootloader.SlotNone
)

// scriptCases are the on-disk states of TestBootScriptsDecideLikeTheModel.
// The seq values also exercise the scripts' arithmetic: hex carries for
// U-Boot's setexpr (0x270f -> 0x2710, 0x1f -> 0x20), decimal carries for
// grub.cfg's regexp loop (9 -> 10, 9999 -> 10000) and the largest seq.
var scriptCases = []struct {
	name string
	a, b copySpec
}{
	{"the factory state boots slot a and writes nothing",
		copySpec{st: bootState(slotA, noSlot, 0, 1)}, copySpec{st: bootState(slotA, noSlot, 0, 0)}},
	{"a trial with 3 tries boots the trial slot and saves tries 2 into the older copy",
		copySpec{st: bootState(slotA, slotB, 3, 9999)}, copySpec{st: bootState(slotA, noSlot, 0, 9998)}},
	{"a trial with 1 try left boots the trial slot a last time",
		copySpec{st: bootState(slotA, noSlot, 0, 7)}, copySpec{st: bootState(slotA, slotB, 1, 8)}},
	{"a trial with no tries left is abandoned and the committed slot boots",
		copySpec{st: bootState(slotA, slotB, 0, 9)}, copySpec{st: bootState(slotA, slotB, 1, 8)}},
	{"committed slot b with a trial of slot a boots slot a",
		copySpec{st: bootState(slotB, slotA, 2, 0x1f)}, copySpec{st: bootState(slotB, noSlot, 0, 0x1e)}},
	{"committed slot b without a trial boots slot b and writes nothing",
		copySpec{st: bootState(slotA, slotB, 2, 41)}, copySpec{st: bootState(slotB, noSlot, 0, 42)}},
	{"an invalid copy a is ignored and is the copy the save overwrites",
		copySpec{st: bootState(slotB, noSlot, 0, 100), damage: "byte"}, copySpec{st: bootState(slotA, slotB, 2, 50)}},
	{"an invalid copy b with a committed state in copy a writes nothing",
		copySpec{st: bootState(slotB, noSlot, 0, 12)}, copySpec{st: bootState(slotA, slotB, 3, 13), damage: "byte"}},
	{"two invalid copies boot slot a without a trial and write nothing",
		copySpec{st: bootState(slotB, noSlot, 0, 5), damage: "byte"}, copySpec{st: bootState(slotB, slotA, 3, 6), damage: "byte"}},
	{"equal seq: copy a wins",
		copySpec{st: bootState(slotA, noSlot, 0, 3)}, copySpec{st: bootState(slotA, slotB, 3, 3)}},
	{"the newest copy wins over an older trial",
		copySpec{st: bootState(slotA, slotB, 3, 20)}, copySpec{st: bootState(slotA, noSlot, 0, 21)}},
	{"the largest seq is reached, not wrapped",
		copySpec{st: bootState(slotA, slotB, 1, bootloader.MaxSeq-1)}, copySpec{st: bootState(slotA, noSlot, 0, bootloader.MaxSeq-2)}},
	{"a copy to overwrite with a broken first line",
		copySpec{st: bootState(slotA, slotB, 2, 30)}, copySpec{st: bootState(slotA, noSlot, 0, 29), damage: "signature"}},
}

// TestBootScriptsDecideLikeTheModel writes each state of scriptCases into
// the two boot-state copies of a test disk whose root slots hold no
// filesystem, boots it through the real firmware and bootloader (U-Boot's
// boot.scr on qemu-aarch64, GRUB's grub.cfg on x86_64), and compares what
// the script printed and wrote with bootloader.Decide applied to what
// bootloader.Store reads from the same bytes: the slot, the trial flag, the
// seq, the copy it saved (the model's next state, byte-identical to Go's
// encoding when the copy it overwrote was intact), and that no other sector
// before root slot a changed. With no kernel to
// load, every boot stops after its decision ("neither slot booted").
//
// The one documented difference: grub.cfg's save_env refuses to overwrite a
// copy whose signature line is damaged, and GRUB then boots the committed
// slot without a trial and writes nothing (docs/boot-state.md).
func TestBootScriptsDecideLikeTheModel(t *testing.T) {
	t.Parallel() // its machines share the CPUs with the other boot-state test
	for _, name := range []string{"qemu-aarch64", "x86_64"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := buildOnce(t, name)
			v := newBootVM(t, loadBoard(t, name), res.Image, false)
			d := v.disk
			// No filesystem in either slot: the kernel load fails at once.
			d.writeSlot(t, slotA, "/dev/null")
			d.writeSlot(t, slotB, "/dev/null")
			for _, c := range scriptCases {
				t.Run(c.name, func(t *testing.T) {
					v.t = t
					for i, cs := range []copySpec{c.a, c.b} {
						enc, err := d.codec.Encode(cs.st)
						if err != nil {
							t.Fatal(err)
						}
						switch cs.damage {
						case "byte":
							enc = corruptCopy(t, d.codec, enc)
						case "signature":
							enc[0] ^= 0x01
						}
						d.writeAt(t, []int64{d.bs.OffA, d.bs.OffB}[i], enc)
					}
					// The model, on the same bytes.
					cur, info := d.read(t)
					boot, trial, next := bootloader.Decide(cur)
					seq := cur.Seq
					if next != nil {
						seq = next.Seq
					}
					target := c.a
					if info.Target == bootloader.CopyB {
						target = c.b
					}
					saveFails := next != nil && d.codec.Name() == "grub" && target.damage == "signature"
					if saveFails {
						boot, trial = cur.Committed, false
					}
					before := d.snapshot(t)

					v.start()
					gotSlot, gotTrial, gotSeq := v.decision(3 * time.Minute)
					v.wait(neitherRE, 3*time.Minute)
					v.wait(startOverRE, time.Minute)
					v.stop()
					if gotSlot != boot || gotTrial != trial || gotSeq != seq {
						t.Errorf("the %s script booted slot=%s trial=%v seq=%d; the model (state %s from copy %s) says slot=%s trial=%v seq=%d",
							d.codec.Name(), gotSlot, gotTrial, gotSeq, cur, info.Source, boot, trial, seq)
					}

					changed := before.changed(d.snapshot(t))
					if next == nil || saveFails {
						if len(changed) > 0 {
							t.Errorf("no write expected, but %v changed", changed)
						}
						return
					}
					// The saved copy holds the model's next state; byte for byte
					// Go's encoding when the copy it overwrote was intact (GRUB's
					// save_env keeps a line it does not recognise in a damaged
					// copy and appends the variable that line hid).
					got := d.readCopy(t, info.Target)
					gotSt, derr := d.codec.Decode(got)
					if derr != nil || gotSt != *next {
						t.Errorf("copy %s after the boot decodes to %v (%v), want %s", info.Target, gotSt, derr, next)
					}
					want, err := d.codec.Encode(*next)
					if err != nil {
						t.Fatal(err)
					}
					if target.damage == "" && !slices.Equal(got, want) {
						t.Errorf("copy %s after the boot is not byte-identical to Go's encoding of %s:\n%q\nwant\n%q", info.Target, next, got, want)
					}
					for _, r := range changed {
						if !r.within(d.copyRange(info.Target)) {
							t.Errorf("%v changed; only copy %s (%v) may", r, info.Target, d.copyRange(info.Target))
						}
					}
				})
			}
			t.Run("with neither slot loadable the board starts over, writing nothing", func(t *testing.T) {
				// Never U-Boot's other boot sources (USB, DHCP/TFTP) or
				// GRUB's prompt: the script resets the board after a pause.
				v.t = t
				copyA, copyB, err := bootloader.Initial(d.codec, slotA)
				if err != nil {
					t.Fatal(err)
				}
				d.writeAt(t, d.bs.OffA, copyA)
				d.writeAt(t, d.bs.OffB, copyB)
				before := d.snapshot(t)
				v.start()
				v.wait(neitherRE, 3*time.Minute)
				v.wait(startOverRE, time.Minute)
				v.wait(scriptRE, 3*time.Minute)
				v.expectDecision(slotA, false, 1)
				v.wait(neitherRE, 3*time.Minute)
				v.stop()
				if changed := before.changed(d.snapshot(t)); len(changed) > 0 {
					t.Errorf("%v changed", changed)
				}
			})
		})
	}
}

// startOverRE is what the boot scripts print before they reset the board
// because neither slot could be booted.
var startOverRE = regexp.MustCompile(`bulkhead: (resetting|rebooting) in [0-9]+ seconds`)
