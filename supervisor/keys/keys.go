// Package keys makes, stores and loads the ed25519 key pairs that sign
// Bulkhead update bundles.
//
// Keys are kept in the two PEM encodings every tool already reads, so a key
// made by `builder keygen` can be inspected or converted with
// `openssl pkey -in key.pem -text`, and a key made by openssl
// (`openssl genpkey -algorithm ed25519`) works here unchanged:
//
//   - a private key is one "PRIVATE KEY" block: PKCS #8 (RFC 5208, RFC 8410);
//   - a public key is one "PUBLIC KEY" block: PKIX SubjectPublicKeyInfo
//     (RFC 5280, RFC 8410). A file of trusted keys may hold several blocks,
//     one per key the device accepts, so a fleet can rotate keys by shipping
//     an image that trusts both the old and the new key.
//
// Text outside the PEM blocks is ignored; Save writes a comment there saying
// what the key is for. The key ID is the first 8 bytes of the SHA-256 of the
// raw 32-byte public key, in hex; bundles carry it next to each signature so
// the device picks the right trusted key without trying them all.
//
// This package must not decide which keys are trusted: the image bakes the
// public keys into /etc/bulkhead/keys/ and the supervisor reads them there.
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IDSize is the length of a key ID in bytes (16 hex digits as text).
const IDSize = 8

// ID returns the key ID of pub: the first IDSize bytes of SHA-256(pub).
func ID(pub ed25519.PublicKey) [IDSize]byte {
	sum := sha256.Sum256(pub)
	var id [IDSize]byte
	copy(id[:], sum[:IDSize])
	return id
}

// IDString returns the key ID of pub in hex, as logs and errors print it.
func IDString(pub ed25519.PublicKey) string {
	id := ID(pub)
	return hex.EncodeToString(id[:])
}

// Generate makes a new key pair from the operating system's random source.
func Generate() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// MarshalPrivate encodes priv as a PKCS #8 PEM block preceded by comment.
func MarshalPrivate(priv ed25519.PrivateKey, comment string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return append(commentLines(comment), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), nil
}

// MarshalPublic encodes pub as a PKIX PEM block preceded by comment.
func MarshalPublic(pub ed25519.PublicKey, comment string) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return append(commentLines(comment), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...), nil
}

func commentLines(comment string) []byte {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(comment), "\n") {
		if l != "" {
			b.WriteString("# " + l + "\n")
		}
	}
	return []byte(b.String())
}

// Save writes a new key pair: the private key to privPath with mode 0600
// and the public key to privPath's name with ".pub" appended, mode 0644.
// It refuses to overwrite either file, because losing a signing key locks
// every device that trusts only it out of updates.
func Save(privPath string, pub ed25519.PublicKey, priv ed25519.PrivateKey) error {
	id := IDString(pub)
	privPEM, err := MarshalPrivate(priv, "Bulkhead bundle signing key "+id+"\nKeep it secret and out of the repository; devices trust "+filepath.Base(privPath)+".pub.")
	if err != nil {
		return err
	}
	pubPEM, err := MarshalPublic(pub, "Bulkhead bundle verification key "+id)
	if err != nil {
		return err
	}
	if err := writeNew(privPath, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(privPath+".pub", pubPEM, 0o644); err != nil {
		os.Remove(privPath)
		return err
	}
	return nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write key: %w (remove the old key first if you really mean to replace it)", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return f.Close()
}

// ParsePrivate decodes the first PRIVATE KEY block of data.
func ParsePrivate(data []byte) (ed25519.PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM \"PRIVATE KEY\" block: make one with `builder keygen`")
		}
		if b.Type != "PRIVATE KEY" {
			continue
		}
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS #8 private key: %w", err)
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is a %T, bundles are signed with ed25519 keys", k)
		}
		return priv, nil
	}
}

// ParsePublic decodes every PUBLIC KEY block of data. It fails if there is
// none or if any block is not an ed25519 key, so a wrong file is noticed at
// build time rather than on the device.
func ParsePublic(data []byte) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKIX public key %d: %w", len(out)+1, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key %d is a %T, bundles are verified with ed25519 keys", len(out)+1, k)
		}
		out = append(out, pub)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM \"PUBLIC KEY\" block")
	}
	return out, nil
}

// LoadPrivate reads a private key file written by Save or openssl.
func LoadPrivate(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	k, err := ParsePrivate(data)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	return k, nil
}

// LoadPublic reads the public keys of one file.
func LoadPublic(path string) ([]ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	k, err := ParsePublic(data)
	if err != nil {
		return nil, fmt.Errorf("load public key %s: %w", path, err)
	}
	return k, nil
}

// LoadTrusted reads every *.pub and *.pem file of dir (the image's
// /etc/bulkhead/keys) in name order and returns their public keys, without
// duplicates. Files holding only a private key are an error: a signing key
// must never be baked into an image.
func LoadTrusted(dir string) ([]ed25519.PublicKey, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w (the image must ship at least one public key in %s)", err, dir)
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); !e.IsDir() && (strings.HasSuffix(n, ".pub") || strings.HasSuffix(n, ".pem")) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	seen := map[string]bool{}
	var out []ed25519.PublicKey
	for _, n := range names {
		path := filepath.Join(dir, n)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		if holdsPrivate(data) {
			return nil, fmt.Errorf("trusted keys: %s holds a private key: ship only the .pub file", path)
		}
		ks, err := ParsePublic(data)
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %s: %w", path, err)
		}
		for _, k := range ks {
			if id := string(k); !seen[id] {
				seen[id] = true
				out = append(out, k)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("trusted keys: no *.pub or *.pem file in %s", dir)
	}
	return out, nil
}

func holdsPrivate(data []byte) bool {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return false
		}
		if strings.Contains(b.Type, "PRIVATE KEY") {
			return true
		}
	}
}
