package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-os/bulkhead/bootloader"
)

// image writes a disk image holding factory boot state in the given format
// and a kernel command line naming it, and returns their paths.
func image(t *testing.T, format string) (disk, bootstate string) {
	t.Helper()
	dir := t.TempDir()
	codec, err := bootloader.CodecFor(format)
	if err != nil {
		t.Fatal(err)
	}
	bs := bootloader.Bootstate{Format: format, OffA: bootloader.UBootStateOffsetA, OffB: bootloader.UBootStateOffsetB, Size: codec.Size()}
	a, b, err := bootloader.Initial(codec, bootloader.SlotA)
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 2<<20)
	copy(img[bs.OffA:], a)
	copy(img[bs.OffB:], b)
	disk = filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return disk, bs.String()
}

func cmdline(t *testing.T, line string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(p, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUpdateCycle(t *testing.T) {
	for _, format := range []string{"uboot", "grub"} {
		t.Run(format, func(t *testing.T) {
			disk, bs := image(t, format)
			onA := cmdline(t, "console=ttyS0 bulkhead.slot=a bulkhead.trial=0 bulkhead.bootstate="+bs)
			onB := cmdline(t, "console=ttyS0 bulkhead.slot=b bulkhead.trial=1 bulkhead.bootstate="+bs)

			code, out, errs := runCmd(t, "--device", disk, "--cmdline", onA, "status")
			if code != 0 {
				t.Fatalf("status: %d %s", code, errs)
			}
			var st output
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("status is not JSON: %v\n%s", err, out)
			}
			if st.State.Committed != bootloader.SlotA || st.Source != "a" || st.Target != "b" || st.Booted == nil || st.Booted.Slot != bootloader.SlotA {
				t.Errorf("status = %+v", st)
			}

			if code, _, errs := runCmd(t, "--device", disk, "--cmdline", onA, "start-trial", "a"); code != 1 || !strings.Contains(errs, "committed slot") {
				t.Errorf("start-trial of the committed slot: %d %s", code, errs)
			}
			if code, _, errs := runCmd(t, "--device", disk, "--cmdline", onA, "start-trial", "b", "2"); code != 0 {
				t.Fatalf("start-trial b 2: %d %s", code, errs)
			}
			// Still running slot a: mark-good must refuse.
			if code, _, errs := runCmd(t, "--device", disk, "--cmdline", onA, "mark-good"); code != 1 || !strings.Contains(errs, "not a trial boot") {
				t.Errorf("mark-good on the committed slot during a trial: %d %s", code, errs)
			}
			if code, out, errs := runCmd(t, "--device", disk, "--cmdline", onB, "mark-good"); code != 0 || !strings.Contains(out, "committed slot b") {
				t.Fatalf("mark-good on the trial boot: %d %s %s", code, out, errs)
			}
			if code, out, _ := runCmd(t, "--device", disk, "--cmdline", onB, "mark-good"); code != 0 || !strings.Contains(out, "no trial pending") {
				t.Errorf("mark-good again: %d %s", code, out)
			}
			if code, out, _ := runCmd(t, "--device", disk, "--cmdline", onB, "abandon"); code != 0 || !strings.Contains(out, "no trial is pending") {
				t.Errorf("abandon without a trial: %d %s", code, out)
			}
			_, out, _ = runCmd(t, "--device", disk, "--cmdline", onB, "status")
			if err := json.Unmarshal([]byte(out), &st); err != nil || st.State != (bootloader.State{Committed: bootloader.SlotB, Trial: bootloader.SlotNone, Seq: 3}) {
				t.Errorf("final status %+v, %v", st.State, err)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	disk, bs := image(t, "uboot")
	noCmdline := filepath.Join(t.TempDir(), "missing")
	for _, args := range [][]string{
		{},
		{"--device", disk, "--bootstate", bs, "--cmdline", noCmdline, "frobnicate"},
		{"--device", disk, "--bootstate", bs, "--cmdline", noCmdline, "start-trial"},
		{"--device", disk, "--bootstate", bs, "--cmdline", noCmdline, "start-trial", "c"},
		{"--device", disk, "--bootstate", bs, "--cmdline", noCmdline, "status", "extra"},
		{"--no-such-flag"},
	} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	// Without a command line, --device and --bootstate are required.
	if code, _, errs := runCmd(t, "--cmdline", noCmdline, "status"); code != 1 || !strings.Contains(errs, "--device") {
		t.Errorf("status without a command line: %d %s", code, errs)
	}
	// mark-good cannot check the running slot without a command line.
	if code, _, _ := runCmd(t, "--device", disk, "--bootstate", bs, "--cmdline", noCmdline, "start-trial", "b"); code != 0 {
		t.Fatal("start-trial failed")
	}
	if code, _, errs := runCmd(t, "--device", disk, "--bootstate", bs, "--cmdline", noCmdline, "mark-good"); code != 1 || !strings.Contains(errs, "--force") {
		t.Errorf("mark-good without knowing the running slot: %d %s", code, errs)
	}
	if code, _, errs := runCmd(t, "--device", disk, "--bootstate", bs, "--cmdline", noCmdline, "--force", "mark-good"); code != 0 {
		t.Errorf("mark-good --force: %d %s", code, errs)
	}
}
