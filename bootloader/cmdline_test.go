package bootloader

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseBootstateArg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *Bootstate
	}{
		{"uboot:1048576:1572864:4096", &Bootstate{"uboot", UBootStateOffsetA, UBootStateOffsetB, 4096}},
		{"grub:4245504:4246528:1024", &Bootstate{"grub", 4245504, 4246528, 1024}},
		{"grub:4246528:4245504:1024", &Bootstate{"grub", 4246528, 4245504, 1024}},
		{"uboot:1048576:1572864:1024", nil}, // wrong size for the format
		{"grub:4245504:4245504:1024", nil},  // same copy twice
		{"grub:4245504:4246016:1024", nil},  // overlapping copies
		{"grub:4245505:4246528:1024", nil},  // not sector-aligned
		{"uboot:-512:1572864:4096", nil},
		{"efi:0:4096:4096", nil},
		{"uboot:1048576:1572864", nil},
		{"uboot:0x100000:1572864:4096", nil},
		{"", nil},
	} {
		got, err := ParseBootstateArg(tc.in)
		if tc.want == nil {
			if err == nil {
				t.Errorf("ParseBootstateArg(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != *tc.want {
			t.Errorf("ParseBootstateArg(%q) = %+v, %v; want %+v", tc.in, got, err, *tc.want)
			continue
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	b, err := ParseCmdline("BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 bulkhead.slot=b bulkhead.trial=1 " +
		"bulkhead.disk=gpt:0ba1e2c3-0000-4000-8000-000000000001 bulkhead.bootstate=grub:4245504:4246528:1024 maxcpus=1\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Boot{Slot: SlotB, Trial: true, Disk: "gpt:0ba1e2c3-0000-4000-8000-000000000001", Bootstate: "grub:4245504:4246528:1024"}
	if b != want {
		t.Errorf("ParseCmdline = %+v, want %+v", b, want)
	}
	if b, err := ParseCmdline("quiet"); err != nil || b != (Boot{}) {
		t.Errorf("ParseCmdline without bulkhead keys = %+v, %v", b, err)
	}
	for _, bad := range []string{"bulkhead.slot=c", "bulkhead.slot=none", "bulkhead.trial=yes"} {
		if _, err := ParseCmdline(bad); err == nil {
			t.Errorf("ParseCmdline(%q) succeeded", bad)
		}
	}
}

// writeMBRDisk and writeGPTDisk build minimal disks for DiskID.
func writeMBRDisk(t *testing.T, path string, sig uint32) {
	b := make([]byte, 4096)
	b[440], b[441], b[442], b[443] = byte(sig), byte(sig>>8), byte(sig>>16), byte(sig>>24)
	b[446+4] = 0x0c
	b[510], b[511] = 0x55, 0xaa
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeGPTDisk(t *testing.T, path string, sectorSize int) {
	b := make([]byte, 3*sectorSize)
	b[446+4] = 0xee
	b[510], b[511] = 0x55, 0xaa
	copy(b[sectorSize:], "EFI PART")
	// GUID 0ba1e2c3-1122-4334-8556-778899aabbcc in on-disk (mixed-endian) order.
	copy(b[sectorSize+56:], []byte{0xc3, 0xe2, 0xa1, 0x0b, 0x22, 0x11, 0x34, 0x43, 0x85, 0x56, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc})
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindDisk(t *testing.T) {
	dir := t.TempDir()
	sys, dev := filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	for _, n := range []string{"mmcblk0", "sda", "sdb", "vda", "ram0"} {
		if err := os.MkdirAll(filepath.Join(sys, n, "queue"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	writeMBRDisk(t, filepath.Join(dev, "mmcblk0"), 0x1a2b3c4d)
	writeGPTDisk(t, filepath.Join(dev, "sda"), 512)
	writeGPTDisk(t, filepath.Join(dev, "sdb"), 4096)
	if err := os.WriteFile(filepath.Join(sys, "sdb", "queue", "logical_block_size"), []byte("4096\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeMBRDisk(t, filepath.Join(dev, "ram0"), 0x1a2b3c4d) // ignored: a RAM disk
	// vda has no device node: skipped.

	if got, err := findDisk(sys, dev, "mbr:0x1A2B3C4D"); err != nil || got != filepath.Join(dev, "mmcblk0") {
		t.Errorf("MBR disk: %q, %v", got, err)
	}
	if _, err := findDisk(sys, dev, "gpt:0ba1e2c3-1122-4334-8556-778899aabbcc"); err == nil {
		t.Error("two disks with one GUID must be refused")
	}
	if _, err := findDisk(sys, dev, "mbr:0x00000001"); err == nil {
		t.Error("found a disk that is not there")
	}
	if err := os.Remove(filepath.Join(dev, "sdb")); err != nil {
		t.Fatal(err)
	}
	if got, err := findDisk(sys, dev, "gpt:0ba1e2c3-1122-4334-8556-778899aabbcc"); err != nil || got != filepath.Join(dev, "sda") {
		t.Errorf("GPT disk: %q, %v", got, err)
	}
}
