package keys

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "release.pem")
	if err := Save(path, pub, priv); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadPrivate(path)
	if err != nil || !bytes.Equal(got, priv) {
		t.Fatalf("LoadPrivate: %v", err)
	}
	pubs, err := LoadPublic(path + ".pub")
	if err != nil || len(pubs) != 1 || !bytes.Equal(pubs[0], pub) {
		t.Fatalf("LoadPublic: %v", err)
	}
	if err := Save(path, pub, priv); err == nil {
		t.Fatal("Save overwrote an existing key")
	}
}

func TestLoadTrustedReadsEveryKeyAndRefusesPrivateKeys(t *testing.T) {
	dir := t.TempDir()
	var want []string
	for _, n := range []string{"a.pub", "b.pem"} {
		pub, _, _ := Generate()
		b, _ := MarshalPublic(pub, "test")
		os.WriteFile(filepath.Join(dir, n), b, 0o644)
		want = append(want, IDString(pub))
	}
	os.WriteFile(filepath.Join(dir, "README"), []byte("ignored"), 0o644)
	got, err := LoadTrusted(dir)
	if err != nil || len(got) != 2 || IDString(got[0]) != want[0] || IDString(got[1]) != want[1] {
		t.Fatalf("LoadTrusted: %d keys, %v", len(got), err)
	}
	_, priv, _ := Generate()
	b, _ := MarshalPrivate(priv, "oops")
	os.WriteFile(filepath.Join(dir, "c.pem"), b, 0o600)
	if _, err := LoadTrusted(dir); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("LoadTrusted with a private key in the directory: %v", err)
	}
	if _, err := LoadTrusted(t.TempDir()); err == nil {
		t.Fatal("LoadTrusted of an empty directory succeeded")
	}
}

func TestOpenSSLReadsAndWritesTheFormat(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "k.pem")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", path).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	priv, err := LoadPrivate(path)
	if err != nil {
		t.Fatalf("load openssl's key: %v", err)
	}
	out, err := exec.Command("openssl", "pkey", "-in", path, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := ParsePublic(out)
	if err != nil || !bytes.Equal(pubs[0], []byte(priv.Public().(ed25519.PublicKey))) {
		t.Fatalf("openssl's public key: %v", err)
	}
}
