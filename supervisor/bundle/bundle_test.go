package bundle_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/supervisor/keys"
)

// readImage opens b with trusted and reads the whole image stream.
func readImage(b []byte, trusted []ed25519.PublicKey) ([]byte, *bundle.Reader, error) {
	r, err := bundle.Open(bytes.NewReader(b), trusted)
	if err != nil {
		return nil, nil, err
	}
	img, err := r.Image()
	if err != nil {
		return nil, r, err
	}
	defer img.Close()
	out, err := io.ReadAll(img)
	return out, r, err
}

func TestRoundTripEachCompression(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	image := bundletest.Image(300<<10, 1)
	for _, c := range []string{bundle.CompressionZstd, bundle.CompressionXZ, bundle.CompressionNone} {
		t.Run(c, func(t *testing.T) {
			m := bundletest.Manifest("raspberrypi3", "1.2.0")
			m.Payload.Compression = c
			b, signed := bundletest.Make(t, m, image, priv)
			got, r, err := readImage(b, []ed25519.PublicKey{pub})
			if err != nil {
				t.Fatalf("read image: %v", err)
			}
			if !bytes.Equal(got, image) {
				t.Fatalf("image differs after the round trip (%d vs %d bytes)", len(got), len(image))
			}
			if r.KeyID != keys.IDString(pub) {
				t.Errorf("key ID %s, want %s", r.KeyID, keys.IDString(pub))
			}
			sum := sha256.Sum256(image)
			if signed.Image.SHA256 != hex.EncodeToString(sum[:]) || signed.Image.Size != int64(len(image)) {
				t.Errorf("manifest image %+v does not describe the image", signed.Image)
			}
			if r.HeaderSize+signed.Payload.Size != int64(len(b)) {
				t.Errorf("header %d + payload %d != bundle %d", r.HeaderSize, signed.Payload.Size, len(b))
			}
			if r.Manifest.Version != "1.2.0" || r.Manifest.Format != bundle.FormatVersion {
				t.Errorf("manifest %+v", r.Manifest)
			}
			t.Logf("%s: image %d bytes -> bundle %d bytes", c, len(image), len(b))
		})
	}
}

func TestPayloadStreamVerifies(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	b, m := bundletest.Make(t, bundletest.Manifest("x86_64", "2"), bundletest.Image(64<<10, 2), priv)
	r, err := bundle.Open(bytes.NewReader(b), []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	p, err := io.ReadAll(r.Payload())
	if err != nil {
		t.Fatalf("read payload: %v", err)
	}
	if int64(len(p)) != m.Payload.Size || r.PayloadRead() != m.Payload.Size {
		t.Fatalf("payload %d bytes (counted %d), manifest says %d", len(p), r.PayloadRead(), m.Payload.Size)
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	_, priv := bundletest.DevKey(t)
	image := bundletest.Image(200<<10, 3)
	a, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi0", "1.0.0"), image, priv)
	b, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi0", "1.0.0"), image, priv)
	if !bytes.Equal(a, b) {
		t.Fatal("two bundles of the same inputs differ")
	}
}

func TestOpenRefusesUntrustedSignatures(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	otherPub, otherPriv := bundletest.OtherKey(t)
	image := bundletest.Image(16<<10, 4)
	signedByOther, _ := bundletest.Make(t, bundletest.Manifest("x86_64", "2"), image, otherPriv)
	signedByDev, _ := bundletest.Make(t, bundletest.Manifest("x86_64", "2"), image, priv)

	// A signature whose key ID names the trusted key but whose bytes are
	// another key's signature.
	forged := bytes.Clone(signedByOther)
	hs := hdrSize(t, forged)
	id := keys.ID(pub)
	copy(forged[hs-64-8:], id[:])

	tests := []struct {
		name    string
		bundle  []byte
		trusted []ed25519.PublicKey
		want    error
	}{
		{"a bundle signed by an unknown key is refused", signedByOther, []ed25519.PublicKey{pub}, bundle.ErrUnknownKey},
		{"a device that trusts no key refuses everything", signedByDev, nil, bundle.ErrUnknownKey},
		{"a signature that claims a trusted key ID but is another key's is refused", forged, []ed25519.PublicKey{pub}, bundle.ErrBadSignature},
		{"a bundle signed by one of several trusted keys is accepted", signedByOther, []ed25519.PublicKey{pub, otherPub}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bundle.Open(bytes.NewReader(tc.bundle), tc.trusted)
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRotationBundleSignedByTwoKeys(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	otherPub, otherPriv := bundletest.OtherKey(t)
	var buf bytes.Buffer
	if _, err := bundle.Write(&buf, bundletest.Manifest("x86_64", "3"), bytes.NewReader(bundletest.Image(8<<10, 5)), priv,
		&bundle.WriteOptions{TempDir: t.TempDir(), ExtraKeys: []ed25519.PrivateKey{otherPriv}}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []ed25519.PublicKey{pub, otherPub} {
		if _, _, err := readImage(buf.Bytes(), []ed25519.PublicKey{k}); err != nil {
			t.Errorf("device trusting %s: %v", keys.IDString(k), err)
		}
	}
}

// hdrSize returns the header size of a well-formed bundle.
func hdrSize(t *testing.T, b []byte) int {
	t.Helper()
	m := int(binary.BigEndian.Uint32(b[16:]))
	s := int(binary.BigEndian.Uint16(b[20+m:]))
	return 22 + m + s
}

// isBundleError reports whether err is one of the errors a damaged bundle
// must produce.
func isBundleError(err error) bool {
	for _, e := range []error{bundle.ErrNotBundle, bundle.ErrTruncated, bundle.ErrUnknownKey, bundle.ErrBadSignature, bundle.ErrCorrupt} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func TestEveryFlippedBitIsDetected(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	image := bundletest.Image(24<<10, 6)
	for _, c := range []string{bundle.CompressionZstd, bundle.CompressionXZ, bundle.CompressionNone} {
		t.Run(c, func(t *testing.T) {
			m := bundletest.Manifest("raspberrypi3", "1.0.0")
			m.Payload.Compression = c
			good, _ := bundletest.Make(t, m, image, priv)
			hs := hdrSize(t, good)
			check := func(i int, bit uint) {
				bad := bytes.Clone(good)
				bad[i] ^= 1 << bit
				got, _, err := readImage(bad, []ed25519.PublicKey{pub})
				if err == nil {
					t.Fatalf("byte %d bit %d flipped (header is %d bytes): accepted", i, bit, hs)
				}
				if !isBundleError(err) {
					t.Fatalf("byte %d bit %d flipped: error %v does not wrap a bundle error", i, bit, err)
				}
				if len(got) > len(image) {
					t.Fatalf("byte %d bit %d flipped: handed out %d image bytes, more than the signed %d", i, bit, len(got), len(image))
				}
			}
			// Every bit of the header (magic, lengths, manifest,
			// signatures); the header does not depend on the compression,
			// so once is enough.
			if c == bundle.CompressionZstd {
				for i := 0; i < hs; i++ {
					for bit := uint(0); bit < 8; bit++ {
						check(i, bit)
					}
				}
			}
			// One bit of the payload bytes, cycling through the bit
			// positions: every byte of a compressed payload up to 1500
			// bytes, else 1500 bytes spread over it (the xz reader
			// allocates its 8 MiB dictionary per stream).
			stride := max(1, (len(good)-hs)/1500)
			for i := hs; i < len(good); i += stride {
				check(i, uint(i%8))
			}
		})
	}
}

func TestTruncationAtAnyOffsetIsDetected(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	good, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", "1.0.0"), bundletest.Image(40<<10, 7), priv)
	for n := 0; n < len(good); n++ {
		_, _, err := readImage(good[:n], []ed25519.PublicKey{pub})
		if err == nil {
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(good))
		}
		if n > 16 && !errors.Is(err, bundle.ErrTruncated) && !errors.Is(err, bundle.ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrTruncated", n, len(good), err)
		}
	}
}

func TestTrailingDataIsRefused(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	good, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", "1.0.0"), bundletest.Image(4<<10, 8), priv)
	_, _, err := readImage(append(bytes.Clone(good), 0), []ed25519.PublicKey{pub})
	if !errors.Is(err, bundle.ErrCorrupt) {
		t.Fatalf("bundle with a trailing byte: %v, want ErrCorrupt", err)
	}
}

// signRaw builds a bundle around an arbitrary manifest and payload, as a
// key holder could, to test what the reader does with signed nonsense.
func signRaw(t *testing.T, m bundle.Manifest, payload []byte, priv ed25519.PrivateKey) []byte {
	t.Helper()
	mb, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString(bundle.Magic)
	binary.Write(&b, binary.BigEndian, uint32(len(mb)))
	b.Write(mb)
	binary.Write(&b, binary.BigEndian, uint16(72))
	id := keys.ID(priv.Public().(ed25519.PublicKey))
	b.Write(id[:])
	b.Write(ed25519.Sign(priv, append([]byte(bundle.SignatureContext), mb...)))
	b.Write(payload)
	return b.Bytes()
}

func TestImageNeverLongerThanSigned(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	payload := bytes.Repeat([]byte{0xaa}, 10000)
	psum := sha256.Sum256(payload)
	isum := sha256.Sum256(payload[:4000])
	m := bundletest.Manifest("x86_64", "1")
	m.Format = 1
	m.Image = bundle.Image{Size: 4000, SHA256: hex.EncodeToString(isum[:])}
	m.Payload = bundle.Payload{Type: bundle.PayloadFull, Compression: bundle.CompressionNone, Size: int64(len(payload)), SHA256: hex.EncodeToString(psum[:])}
	got, _, err := readImage(signRaw(t, m, payload, priv), []ed25519.PublicKey{pub})
	if !errors.Is(err, bundle.ErrCorrupt) {
		t.Fatalf("payload longer than the image: %v, want ErrCorrupt", err)
	}
	if len(got) > 4000 {
		t.Fatalf("handed out %d bytes of a 4000-byte image", len(got))
	}
}

func TestOpenRefusesWhatItCannotInstall(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	sum := sha256.Sum256([]byte("x"))
	base := bundletest.Manifest("x86_64", "1")
	base.Format = 1
	base.Image = bundle.Image{Size: 1, SHA256: hex.EncodeToString(sum[:])}
	base.Payload = bundle.Payload{Type: bundle.PayloadFull, Compression: bundle.CompressionNone, Size: 1, SHA256: hex.EncodeToString(sum[:])}
	tests := []struct {
		name string
		edit func(*bundle.Manifest)
	}{
		{"a newer manifest format", func(m *bundle.Manifest) { m.Format = bundle.FormatVersion + 1 }},
		{"a delta payload", func(m *bundle.Manifest) { m.Payload.Type = bundle.PayloadDelta; m.Payload.Base = &base.Image }},
		{"an unknown compression", func(m *bundle.Manifest) { m.Payload.Compression = "lz4" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base
			tc.edit(&m)
			_, err := bundle.Open(bytes.NewReader(signRaw(t, m, []byte("x"), priv)), []ed25519.PublicKey{pub})
			if !errors.Is(err, bundle.ErrUnsupported) {
				t.Fatalf("Open: %v, want ErrUnsupported", err)
			}
		})
	}
}

func TestInspectShowsUnverifiedManifest(t *testing.T) {
	_, otherPriv := bundletest.OtherKey(t)
	otherPub := otherPriv.Public().(ed25519.PublicKey)
	b, _ := bundletest.Make(t, bundletest.Manifest("x86_64", "9.9"), []byte("tiny image"), otherPriv)
	m, ids, err := bundle.Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "9.9" || len(ids) != 1 || ids[0] != keys.IDString(otherPub) {
		t.Fatalf("Inspect: %+v %v", m, ids)
	}
}

func TestNotABundle(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("hello world, this is not a bundle at all")} {
		if _, err := bundle.Open(bytes.NewReader(in), nil); !errors.Is(err, bundle.ErrNotBundle) {
			t.Errorf("Open(%q): %v, want ErrNotBundle", in, err)
		}
	}
}

// readForReadBack opens b and reads the image stream that leaves the image
// digest to the caller.
func readForReadBack(b []byte, trusted []ed25519.PublicKey) ([]byte, error) {
	r, err := bundle.Open(bytes.NewReader(b), trusted)
	if err != nil {
		return nil, err
	}
	img, err := r.ImageForReadBack()
	if err != nil {
		return nil, err
	}
	defer img.Close()
	return io.ReadAll(img)
}

func TestImageForReadBackChecksAllButTheImageDigest(t *testing.T) {
	pub, priv := bundletest.DevKey(t)
	trusted := []ed25519.PublicKey{pub}

	t.Run("the image digest is left to the caller", func(t *testing.T) {
		payload := bytes.Repeat([]byte{0x5a}, 4000)
		psum := sha256.Sum256(payload)
		m := bundletest.Manifest("x86_64", "1")
		m.Format = 1
		m.Image = bundle.Image{Size: 4000, SHA256: hex.EncodeToString(make([]byte, 32))}
		m.Payload = bundle.Payload{Type: bundle.PayloadFull, Compression: bundle.CompressionNone, Size: int64(len(payload)), SHA256: hex.EncodeToString(psum[:])}
		b := signRaw(t, m, payload, priv)
		if _, _, err := readImage(b, trusted); !errors.Is(err, bundle.ErrCorrupt) {
			t.Fatalf("Image with a wrong image digest: %v, want ErrCorrupt", err)
		}
		got, err := readForReadBack(b, trusted)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("ImageForReadBack: %d bytes, %v; want the 4000 image bytes", len(got), err)
		}
	})
	t.Run("a damaged payload is still detected", func(t *testing.T) {
		good, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", "1.0.0"), bundletest.Image(24<<10, 9), priv)
		hs := hdrSize(t, good)
		for i := hs; i < len(good); i += max(1, (len(good)-hs)/500) {
			bad := bytes.Clone(good)
			bad[i] ^= 1 << uint(i%8)
			if _, err := readForReadBack(bad, trusted); !isBundleError(err) {
				t.Fatalf("payload byte %d flipped: %v, want a bundle error", i, err)
			}
		}
		for n := hs; n < len(good); n += max(1, (len(good)-hs)/200) {
			if _, err := readForReadBack(good[:n], trusted); !errors.Is(err, bundle.ErrTruncated) && !errors.Is(err, bundle.ErrCorrupt) {
				t.Fatalf("truncated to %d of %d bytes: %v, want ErrTruncated", n, len(good), err)
			}
		}
		if _, err := readForReadBack(append(bytes.Clone(good), 0), trusted); !errors.Is(err, bundle.ErrCorrupt) {
			t.Fatalf("trailing byte: %v, want ErrCorrupt", err)
		}
	})
	t.Run("never more bytes than signed", func(t *testing.T) {
		payload := bytes.Repeat([]byte{0xaa}, 10000)
		psum := sha256.Sum256(payload)
		m := bundletest.Manifest("x86_64", "1")
		m.Format = 1
		m.Image = bundle.Image{Size: 4000, SHA256: hex.EncodeToString(make([]byte, 32))}
		m.Payload = bundle.Payload{Type: bundle.PayloadFull, Compression: bundle.CompressionNone, Size: int64(len(payload)), SHA256: hex.EncodeToString(psum[:])}
		got, err := readForReadBack(signRaw(t, m, payload, priv), trusted)
		if !errors.Is(err, bundle.ErrCorrupt) || len(got) > 4000 {
			t.Fatalf("payload longer than the image: %d bytes, %v; want at most 4000 and ErrCorrupt", len(got), err)
		}
	})
}
