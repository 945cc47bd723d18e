package bootloader

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the generated text; if the change is intended, run go test -run %s -update and review the diff\n%s",
			path, t.Name(), firstDiff(string(want), got))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl
		}
	}
	return ""
}

// rpi3 is raspberrypi3: arm64, gzipped Image, device tree from the slot.
var rpi3 = UBootParams{
	Console:        []string{"ttyS1,115200"},
	Args:           []string{"rootwait"},
	BootCmd:        "booti",
	KernelAddr:     "${kernel_addr_r}",
	RamdiskAddr:    "0x06000000",
	FDTAddr:        "${fdt_addr_r}",
	KernelCompAddr: "0x0a000000",
	ScratchAddr:    "0x06000000",
	FDTFile:        "/boot/dtbs/broadcom/bcm2837-rpi-3-b.dtb",
	Disk:           "mbr:0x1a2b3c4d",
	BootPart:       1, PartA: 2, PartB: 3,
	StateOffsetA: UBootStateOffsetA, StateOffsetB: UBootStateOffsetB,
}

// rpi2 is raspberrypi2: 32-bit zImage and the firmware's device tree.
var rpi2 = UBootParams{
	Console:     []string{"ttyAMA0,115200"},
	BootCmd:     "bootz",
	KernelAddr:  "${kernel_addr_r}",
	RamdiskAddr: "${ramdisk_addr_r}",
	ScratchAddr: "${ramdisk_addr_r}",
	Disk:        "mbr:0x0badcafe",
	BootPart:    1, PartA: 2, PartB: 3,
	StateOffsetA: UBootStateOffsetA, StateOffsetB: UBootStateOffsetB,
}

var x86 = GrubParams{
	Console:      []string{"ttyS0,115200"},
	Disk:         "gpt:0ba1e2c3-1122-4334-8556-778899aabbcc",
	PartA:        2,
	PartB:        3,
	StateOffsetA: 4245504,
	StateOffsetB: 4246528,
}

func TestUBootScriptGolden(t *testing.T) {
	for name, p := range map[string]UBootParams{"raspberrypi3.boot.txt": rpi3, "raspberrypi2.boot.txt": rpi2} {
		s, err := UBootScript(p)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, name, s)
	}
}

func TestGrubConfigGolden(t *testing.T) {
	s, err := GrubConfig(x86)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "x86_64.grub.cfg", s)
}

// TestScriptsMirrorTheGoRules checks the facts that the hand-written scripts
// share with the Go code, so that changing a constant in Go without the
// scripts (or the reverse) fails here and not on a device.
func TestScriptsMirrorTheGoRules(t *testing.T) {
	u, err := UBootScript(rpi3)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"${devtype} read ${bh_addr} 0x800 8 && env import -c ${bh_addr} 0x1000 bh_committed bh_seq bh_trial bh_tries;",
		"${devtype} read ${bh_addr} 0xc00 8 && env import -c ${bh_addr} 0x1000 bh_committed bh_seq bh_trial bh_tries;",
		"env export -c -s 0x1000 ${bh_addr} bh_committed bh_seq bh_trial bh_tries && ${devtype} write ${bh_addr} ${bh_save_lba} 8",
		"elif itest ${bh_b_seq} -gt ${bh_a_seq}; then", // a wins a tie
		"bulkhead.bootstate=uboot:1048576:1572864:4096",
		"setenv kernel_comp_size ${filesize}",
		"booti ${kernel_addr_r} 0x06000000:${bh_initrd_size} ${fdt_addr_r}",
		"bulkhead: neither slot booted\"\n", // and then reset, never back to distro boot:
		"sleep 10\nreset\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("U-Boot script lacks %q", want)
		}
	}
	z, err := UBootScript(rpi2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(z, "bootz ${kernel_addr_r} ${ramdisk_addr_r}:${bh_initrd_size} ${fdtcontroladdr}") || strings.Contains(z, "kernel_comp") {
		t.Error("the bootz script must boot with the firmware device tree and no decompression")
	}

	g, err := GrubConfig(x86)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"regexp '" + grubCheckPattern + "' \"$bh_check\"",
		"[ \"$bh_seq\" -le 2147483647 ]",
		"load_env -f \"$1\" bh_committed bh_trial bh_tries bh_seq bh_check",
		"save_env -f \"$bh_save\" bh_committed bh_trial bh_tries bh_seq bh_check",
		"elif [ \"$bh_b_seq\" -gt \"$bh_a_seq\" ]; then",
		"bulkhead.bootstate=grub:4245504:4246528:1024",
		"linux \"($bh_disk,gpt$bh_part)/boot/vmlinuz\" console=ttyS0,115200 bulkhead.slot=$1",
		"for bh_pass in 1 2 3 4 5 6 7 8 9 10 11; do",
		"if [ \"$bh_tries\" = 9 ]; then",
		"set timeout=0",
		"serial --unit=0 --speed=115200",
		"sleep 10\nreboot\n", // never GRUB's prompt
	} {
		if !strings.Contains(g, want) {
			t.Errorf("grub.cfg lacks %q", want)
		}
	}
}

func TestScriptParamsAreValidated(t *testing.T) {
	for name, mut := range map[string]func(*UBootParams){
		"a quote in an argument":         func(p *UBootParams) { p.Args = []string{`a"b`} },
		"a variable in an argument":      func(p *UBootParams) { p.Args = []string{"x=${evil}"} },
		"a semicolon in a console":       func(p *UBootParams) { p.Console = []string{"ttyS0;reset"} },
		"an argument the script sets":    func(p *UBootParams) { p.Args = []string{"bulkhead.slot=b"} },
		"an unknown boot command":        func(p *UBootParams) { p.BootCmd = "bootm" },
		"decompression with bootz":       func(p *UBootParams) { p.BootCmd = "bootz" },
		"an address that is not one":     func(p *UBootParams) { p.KernelAddr = "kernel" },
		"a relative device tree path":    func(p *UBootParams) { p.FDTFile = "boot/x.dtb" },
		"a device tree path with spaces": func(p *UBootParams) { p.FDTFile = "/boot/a b.dtb" },
		"an uppercase disk signature":    func(p *UBootParams) { p.Disk = "mbr:0x1A2B3C4D" },
		"a slot on the boot partition":   func(p *UBootParams) { p.PartA = 1 },
		"both slots on one partition":    func(p *UBootParams) { p.PartB = 2 },
		"unaligned state copies":         func(p *UBootParams) { p.StateOffsetB = 1572865 },
		"overlapping state copies":       func(p *UBootParams) { p.StateOffsetB = p.StateOffsetA + 512 },
	} {
		p := rpi3
		mut(&p)
		if _, err := UBootScript(p); err == nil {
			t.Errorf("UBootScript accepted %s", name)
		}
	}
	for name, mut := range map[string]func(*GrubParams){
		"a space in an argument": func(p *GrubParams) { p.Args = []string{"a b"} },
		"a slot on the ESP":      func(p *GrubParams) { p.PartB = 1 },
		"a bad disk":             func(p *GrubParams) { p.Disk = "gpt:xyz" },
		"a bad serial unit":      func(p *GrubParams) { p.SerialUnit = 9 },
		"a state size mismatch":  func(p *GrubParams) { p.StateOffsetB = p.StateOffsetA + 512 },
	} {
		p := x86
		mut(&p)
		if _, err := GrubConfig(p); err == nil {
			t.Errorf("GrubConfig accepted %s", name)
		}
	}
}

// TestGrubScriptCheck runs grub-script-check (grub-common) on the config:
// GRUB's own parser must accept it.
func TestGrubScriptCheck(t *testing.T) {
	tool, err := exec.LookPath("grub-script-check")
	if err != nil {
		t.Skip("grub-script-check not installed (apt-get install grub-common)")
	}
	g, err := GrubConfig(x86)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "grub.cfg")
	if err := os.WriteFile(f, []byte(g), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command(tool, f).CombinedOutput(); err != nil {
		t.Fatalf("grub-script-check: %v\n%s", err, msg)
	}
}

// TestBootScrMatchesMkimage compares BootScr byte for byte with U-Boot's
// mkimage for both architectures.
func TestBootScrMatchesMkimage(t *testing.T) {
	tool, err := exec.LookPath("mkimage")
	if err != nil {
		t.Skip("mkimage not installed (apt-get install u-boot-tools)")
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		arch   string
		params UBootParams
		epoch  int64
	}{
		{"arm64", rpi3, 1700000000},
		{"arm", rpi2, 1},
		{"arm64", rpi2, 0},
	} {
		script, err := UBootScript(tc.params)
		if err != nil {
			t.Fatal(err)
		}
		in, out := filepath.Join(dir, "boot.txt"), filepath.Join(dir, "boot.scr")
		if err := os.WriteFile(in, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(tool, "-A", tc.arch, "-O", "linux", "-T", "script", "-C", "none", "-d", in, out)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(tc.epoch, 10))
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mkimage: %v\n%s", err, msg)
		}
		want, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		got, err := BootScr(script, tc.arch, time.Unix(tc.epoch, 0))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s at %d: BootScr differs from mkimage:\n got %x\nwant %x", tc.arch, tc.epoch, got[:72], want[:72])
		}
	}
	if _, err := BootScr("echo", "mips", time.Unix(0, 0)); err == nil {
		t.Error("BootScr accepted an unknown architecture")
	}
}
