package powercut

import (
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJournalScanLikeLinux61 runs the jbd2 scan over the data partition of
// a crash state that Linux 6.1 refused to mount in QEMU ("JBD2: journal
// transaction 4295 on vda4-8 is corrupt"), and over the same image marked
// clean, which the kernel mounts without reading the journal.
func TestJournalScanLikeLinux61(t *testing.T) {
	in, err := os.Open(filepath.Join("testdata", "torn-jbd2-commit-block-qemu-aarch64.data.gz"))
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
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	out.Close()

	why, err := kernelRefusesJournal(img)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(why, "journal transaction 4295 is corrupt") {
		t.Errorf("torn commit block: %q, want transaction 4295 refused as the kernel did", why)
	}

	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := make([]byte, 4)
	f.ReadAt(flags, 1024+0x60)
	binary.LittleEndian.PutUint32(flags, binary.LittleEndian.Uint32(flags)&^ext4IncompatRecover)
	f.WriteAt(flags, 1024+0x60)
	f.Close()
	if why, err := kernelRefusesJournal(img); err != nil || why != "" {
		t.Errorf("a filesystem that needs no recovery: %q, %v", why, err)
	}
}

func TestCRC32CIsTheKernelsRawCRC(t *testing.T) {
	// crc32c("123456789") is 0xe3069283 with the usual pre- and
	// post-inversion; the kernel's chained form inverts neither.
	if got := ^crc32c(^uint32(0), []byte("123456789")); got != 0xe3069283 {
		t.Errorf("crc32c = %#x", got)
	}
}
