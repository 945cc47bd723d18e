package bundle_test

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
)

// slotLikeImage returns a 256 MiB ext4 image holding the Go toolchain's
// binaries (about 80 MB, a realistic mix of executables and free space),
// made with mke2fs -d; without mke2fs, synthetic data.
func slotLikeImage(b *testing.B) (path string, desc string) {
	dir := b.TempDir()
	img := filepath.Join(dir, "slot.ext4")
	src := filepath.Join(dir, "root")
	if _, err := exec.LookPath("mke2fs"); err == nil {
		os.MkdirAll(filepath.Join(src, "usr"), 0o755)
		if out, err := exec.Command("cp", "-a", "/usr/local/go/pkg/tool", "/usr/local/go/bin", filepath.Join(src, "usr")).CombinedOutput(); err == nil {
			if out, err = exec.Command("mke2fs", "-q", "-t", "ext4", "-d", src, "-E", "root_owner=0:0", img, "256M").CombinedOutput(); err == nil {
				return img, "ext4 with the Go toolchain's binaries"
			}
			b.Logf("mke2fs: %s", out)
		} else {
			b.Logf("cp: %s", out)
		}
	}
	os.WriteFile(img, bundletest.Image(256<<20, 1), 0o644)
	return img, "synthetic"
}

// BenchmarkBundleSize prints bundle size against image size, and how fast
// each compression decodes (the rate a single core can feed a slot).
func BenchmarkBundleSize(b *testing.B) {
	pub, priv := bundletest.DevKey(b)
	imgPath, desc := slotLikeImage(b)
	fi, _ := os.Stat(imgPath)
	for _, c := range []string{bundle.CompressionZstd, bundle.CompressionXZ} {
		b.Run(c, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				out := filepath.Join(b.TempDir(), "x.bundle")
				m := bundletest.Manifest("raspberrypi3", "1.0.0")
				m.Payload.Compression = c
				t0 := time.Now()
				if _, err := bundle.WriteFile(out, m, imgPath, priv, &bundle.WriteOptions{TempDir: b.TempDir()}); err != nil {
					b.Fatal(err)
				}
				enc := time.Since(t0)
				bfi, _ := os.Stat(out)
				raw, _ := os.ReadFile(out)
				t0 = time.Now()
				r, err := bundle.Open(bytes.NewReader(raw), []ed25519.PublicKey{pub})
				if err != nil {
					b.Fatal(err)
				}
				rc, _ := r.Image()
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil {
					b.Fatal(err)
				}
				dec := time.Since(t0)
				b.ReportMetric(float64(fi.Size())/(1<<20), "image-MiB")
				b.ReportMetric(float64(bfi.Size())/(1<<20), "bundle-MiB")
				b.ReportMetric(100*float64(bfi.Size())/float64(fi.Size()), "bundle-%-of-image")
				b.ReportMetric(float64(n)/dec.Seconds()/1e6, "decode-MB/s")
				b.ReportMetric(enc.Seconds(), "encode-s")
				b.Logf("%s (%s): image %d MiB -> bundle %.1f MiB (%.1f%%), encode %s, decode+verify %.0f MB/s",
					c, desc, fi.Size()>>20, float64(bfi.Size())/(1<<20), 100*float64(bfi.Size())/float64(fi.Size()), enc.Round(time.Millisecond), float64(n)/dec.Seconds()/1e6)
			}
		})
	}
}
