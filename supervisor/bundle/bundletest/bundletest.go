// Package bundletest gives tests (unit tests here and the QEMU tests in
// tests/) the publicly known development key pairs of
// supervisor/bundle/testdata and a one-call bundle maker. It must never be
// imported by a program that runs on a device or signs a release.
package bundletest

import (
	"bytes"
	"crypto/ed25519"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/keys"
)

// TestdataDir returns the absolute path of supervisor/bundle/testdata.
func TestdataDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

// DevKey returns the development key pair (testdata/dev-key.pem): the key
// test images trust.
func DevKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	return load(t, "dev-key.pem")
}

// OtherKey returns a second development key pair that test images do NOT
// trust.
func OtherKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	return load(t, "other-key.pem")
}

func load(t testing.TB, name string) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	priv, err := keys.LoadPrivate(filepath.Join(TestdataDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := keys.LoadPublic(filepath.Join(TestdataDir(), name+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	return pubs[0], priv
}

// Manifest returns a plausible manifest for board and version, arch
// arm64, ready for bundle.Write.
func Manifest(board, version string) bundle.Manifest {
	return bundle.Manifest{
		Name: "bulkhead", Version: version, Board: board, Arch: "arm64",
		Kernel: "6.1.0-28-arm64", BuildTime: 1_750_000_000,
	}
}

// Make writes a bundle of image with manifest m, signed with key, and
// returns its bytes and the manifest as signed.
func Make(t testing.TB, m bundle.Manifest, image []byte, key ed25519.PrivateKey) ([]byte, bundle.Manifest) {
	t.Helper()
	var buf bytes.Buffer
	out, err := bundle.Write(&buf, m, bytes.NewReader(image), key, &bundle.WriteOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), out
}

// Image returns n bytes that look a little like a filesystem image: runs
// of zeros and of pseudo-random data, so compression does something.
func Image(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := 0; i < n; i++ {
		if (i/4096)%3 == 0 {
			continue // a block of zeros
		}
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x >> 7 & 0x3f) // some redundancy
	}
	return b
}
