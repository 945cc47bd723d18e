package updater

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/bootstate"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
)

// BenchmarkInstallThroughput compares a whole install (signature check,
// zstd decompression, hashing, writing, fsync, cache eviction, read-back
// verification) into a slot file with a plain sequential write of the
// same image in the same 1 MiB chunks plus fsync, on the same disk. It
// prints both rates; there is no assertion on them.
func BenchmarkInstallThroughput(b *testing.B) {
	const size = 256 << 20
	pub, priv := bundletest.DevKey(b)
	dir := b.TempDir()
	image := bundletest.Image(size, 7)
	bb, _ := bundletest.Make(b, bundletest.Manifest("raspberrypi3", "2.0.0"), image, priv)
	bundlePath := filepath.Join(dir, "x.bundle")
	os.WriteFile(bundlePath, bb, 0o644)
	slotPath := filepath.Join(dir, "slot-b")
	os.WriteFile(slotPath, make([]byte, size), 0o600)

	for i := 0; i < b.N; i++ {
		// Plain sequential write.
		d, err := slot.Open(slotPath)
		if err != nil {
			b.Fatal(err)
		}
		d.DropCache(0, size)
		t0 := time.Now()
		for off := 0; off < size; off += chunk {
			if _, err := d.WriteAt(image[off:off+chunk], int64(off)); err != nil {
				b.Fatal(err)
			}
		}
		d.Sync()
		plain := time.Since(t0)
		d.DropCache(0, size)
		d.Close()

		// The install.
		u, err := New(Config{
			Store:     FileStore{Path: filepath.Join(b.TempDir(), "state.json")},
			BootState: bootstate.NewMemory(bootloader.State{Committed: bootloader.SlotA, Trial: bootloader.SlotNone}),
			Boot:      Boot{Slot: bootloader.SlotA, ID: "bench"},
			OpenSlot:  func(bootloader.Slot) (slot.Device, error) { return slot.Open(slotPath) },
			Current:   bundle.Manifest{Name: "bulkhead", Version: "1.0.0", Board: "raspberrypi3", Arch: "arm64"},
			Board:     "raspberrypi3",
			Trusted:   []ed25519.PublicKey{pub},
			Reboot:    func() error { return nil },
			Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			b.Fatal(err)
		}
		f, _ := os.Open(bundlePath)
		t0 = time.Now()
		err = u.Install(context.Background(), Request{Source: source.Spec{Kind: source.KindUpload}}, f, int64(len(bb)))
		inst := time.Since(t0)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		got, _ := os.ReadFile(slotPath)
		if !bytes.Equal(got, image) {
			b.Fatal("slot differs from the image")
		}
		mbs := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
		b.ReportMetric(mbs(plain), "plain-write-MB/s")
		b.ReportMetric(mbs(inst), "install-MB/s")
		b.ReportMetric(float64(len(bb))/(1<<20), "bundle-MiB")
		b.Logf("%d MiB image (%d MiB bundle): plain write+fsync %.0f MB/s, install incl. read-back verify %.0f MB/s (%.0f%%)",
			size>>20, len(bb)>>20, mbs(plain), mbs(inst), 100*mbs(inst)/mbs(plain))
	}
}
