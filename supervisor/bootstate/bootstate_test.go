package bootstate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead-os/bulkhead/bootloader"
)

// TestDiskDrivesTheRealStore runs the adapter over an image file laid out
// like a U-Boot disk.
func TestDiskDrivesTheRealStore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	f, _ := os.Create(p)
	f.Truncate(4 << 20)
	a, b, err := bootloader.Initial(bootloader.UBootEnv{}, bootloader.SlotA)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(a, bootloader.UBootStateOffsetA)
	f.WriteAt(b, bootloader.UBootStateOffsetB)
	f.Close()
	arg := bootloader.Bootstate{Format: "uboot", OffA: bootloader.UBootStateOffsetA, OffB: bootloader.UBootStateOffsetB, Size: bootloader.UBootEnvSize}.String()
	d, err := OpenDisk(p, arg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, bs := range []BootState{d, NewMemory(bootloader.State{Committed: bootloader.SlotA, Trial: bootloader.SlotNone})} {
		if err := bs.StartTrial(bootloader.SlotA, 3); !errors.Is(err, bootloader.ErrSlotCommitted) {
			t.Fatalf("%T: trial of the committed slot: %v", bs, err)
		}
		if err := bs.StartTrial(bootloader.SlotB, 3); err != nil {
			t.Fatal(err)
		}
		if st, _ := bs.Status(); st.Trial != bootloader.SlotB || st.Tries != 3 {
			t.Fatalf("%T: %s", bs, st)
		}
		if err := bs.Commit(); err != nil {
			t.Fatal(err)
		}
		if st, _ := bs.Status(); st.Committed != bootloader.SlotB || st.Trial != bootloader.SlotNone {
			t.Fatalf("%T: %s", bs, st)
		}
		if err := bs.AbandonTrial(); !errors.Is(err, bootloader.ErrNoTrial) {
			t.Fatalf("%T: abandon without a trial: %v", bs, err)
		}
	}
	if _, err := OpenDisk(p, "uboot:1:2"); err == nil {
		t.Fatal("a malformed bootstate argument was accepted")
	}
}
