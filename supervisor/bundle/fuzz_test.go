package bundle_test

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"reflect"
	"testing"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
)

func FuzzParseManifest(f *testing.F) {
	_, priv := bundletest.DevKey(f)
	_, m := bundletest.Make(f, bundletest.Manifest("raspberrypi3", "1.0.0"), []byte("image"), priv)
	good, err := m.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":1,"format":2}`))
	f.Add([]byte(`{"Format":1,"format":2}`))
	f.Add([]byte("{\"name\":\"\xff\"}"))
	f.Add([]byte(`[[[[[[[[[[]]]]]]]]]]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := bundle.ParseManifest(b)
		if err != nil {
			return
		}
		// Whatever parses must validate, re-encode and parse to the same.
		again, err := m.Marshal()
		if err != nil {
			t.Fatalf("parsed manifest does not marshal: %v", err)
		}
		m2, err := bundle.ParseManifest(again)
		if err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}

// FuzzOpen feeds arbitrary bytes to the header reader and the payload
// streams: nothing may panic, and nothing but a bundle signed by the trusted
// key may be read to a clean end.
func FuzzOpen(f *testing.F) {
	pub, priv := bundletest.DevKey(f)
	image := bundletest.Image(2048, 1)
	good, _ := bundletest.Make(f, bundletest.Manifest("raspberrypi3", "1.0.0"), image, priv)
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte(bundle.Magic + "\x00\x00\x00\x02{}\x00\x48"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := bundle.Open(bytes.NewReader(b), []ed25519.PublicKey{pub})
		if err != nil {
			return
		}
		img, err := r.Image()
		if err != nil {
			return
		}
		defer img.Close()
		out, err := io.ReadAll(img)
		// A clean end is only allowed for the signed image (the fuzzer
		// may add a second, unverifiable signature to a good bundle).
		if err == nil && !bytes.Equal(out, image) {
			t.Fatalf("an image other than the signed one read cleanly (%d bytes)", len(out))
		}
		if int64(len(out)) > r.Manifest.Image.Size {
			t.Fatalf("read %d bytes of a %d-byte image", len(out), r.Manifest.Image.Size)
		}
	})
}
