package jbd2

import (
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is the data partition of a crash state that Linux 6.1 refused to
// mount in QEMU ("JBD2: journal transaction 4295 on vda4-8 is corrupt"): a
// power cut tore a commit block after 2 of its 8 sectors.
const fixture = "../../tests/powercut/testdata/torn-jbd2-commit-block-qemu-aarch64.data.gz"

func unpack(t *testing.T) string {
	t.Helper()
	in, err := os.Open(fixture)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "data.ext4")
	out, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	return img
}

func check(t *testing.T, img string) Verdict {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := Check(f)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCheckRefusesTornCommitLikeLinux61(t *testing.T) {
	img := unpack(t)
	v := check(t, img)
	if !strings.Contains(v.Refusal, "journal transaction 4295 is corrupt") || v.Seq != 4295 || v.Torn < 0 {
		t.Fatalf("torn commit block: %+v, want transaction 4295 refused as the kernel did", v)
	}

	// The same filesystem marked clean: the kernel reads no journal.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := make([]byte, 4)
	if _, err := f.ReadAt(flags, 1024+0x60); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(flags, binary.LittleEndian.Uint32(flags)&^IncompatRecover)
	if _, err := f.WriteAt(flags, 1024+0x60); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if v := check(t, img); v.Refusal != "" || v.Torn != -1 {
		t.Errorf("a filesystem that needs no recovery: %+v", v)
	}
}

// TestRepairDropsOnlyTheTornTransaction repairs the fixture and requires
// that the kernel's scan accepts it, that the replay e2fsck then does (the
// kernel's own recovery code) leaves a filesystem e2fsck -fn passes, that
// the repair changed exactly one sector, and that repairing again writes
// nothing.
func TestRepairDropsOnlyTheTornTransaction(t *testing.T) {
	img := unpack(t)
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	v, wrote, err := Repair(f)
	if err != nil || !wrote || v.Seq != 4295 {
		t.Fatalf("Repair = %+v, %v, %v; want transaction 4295 dropped", v, wrote, err)
	}
	if v, wrote, err := Repair(f); err != nil || wrote || v.Refusal != "" {
		t.Errorf("second Repair = %+v, %v, %v; want nothing to do", v, wrote, err)
	}
	f.Close()
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	var changed []int
	for s := 0; s < len(before); s += 512 {
		if string(before[s:s+512]) != string(after[s:s+512]) {
			changed = append(changed, s)
		}
	}
	if len(changed) != 1 || int64(changed[0]) != v.Torn {
		t.Errorf("sectors changed at %v, want only the commit block's first sector at %d", changed, v.Torn)
	}

	for _, args := range [][]string{{"-E", "journal_only", "-p"}, {"-fn"}} {
		out, err := exec.Command("e2fsck", append(args, img)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		// 1: the replay fixed the filesystem, as the kernel's would.
		if code&^1 != 0 || (args[0] == "-fn" && code != 0) {
			t.Errorf("e2fsck %v after the repair exited %d:\n%s", args, code, out)
		}
	}
}

func TestCRC32CIsTheKernelsRawCRC(t *testing.T) {
	// crc32c("123456789") is 0xe3069283 with the usual pre- and
	// post-inversion; the kernel's chained form inverts neither.
	if got := ^crc32c(^uint32(0), []byte("123456789")); got != 0xe3069283 {
		t.Errorf("crc32c = %#x", got)
	}
}
