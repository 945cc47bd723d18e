package slot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead-os/bulkhead/bootloader"
)

func TestFileRefusesWritesPastTheEnd(t *testing.T) {
	p := filepath.Join(t.TempDir(), "slot")
	os.WriteFile(p, make([]byte, 4096), 0o600)
	d, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 4096 {
		t.Fatalf("size %d", d.Size())
	}
	if _, err := d.WriteAt(make([]byte, 10), 4090); err == nil {
		t.Fatal("a write past the end of the slot succeeded")
	}
	if _, err := d.WriteAt([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.DropCache(0, 4096); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	d.ReadAt(b, 0)
	if string(b) != "hello" {
		t.Fatalf("read back %q", b)
	}
}

func TestPartitionNumbers(t *testing.T) {
	if n, _ := PartitionNumber(bootloader.SlotA); n != 2 {
		t.Error("slot a is not partition 2")
	}
	if n, _ := PartitionNumber(bootloader.SlotB); n != 3 {
		t.Error("slot b is not partition 3")
	}
	if _, err := PartitionNumber(bootloader.SlotNone); err == nil {
		t.Error("slot none has a partition")
	}
}
