package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/bulkhead-os/bulkhead/supervisor/keys"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Errors of Open and of the payload streams; test with errors.Is.
var (
	// ErrNotBundle: the data does not start with Magic.
	ErrNotBundle = errors.New("not a Bulkhead bundle")
	// ErrTruncated: the data ended early; download it again.
	ErrTruncated = errors.New("bundle is truncated")
	// ErrUnknownKey: no signature is by a key the device trusts.
	ErrUnknownKey = errors.New("bundle is not signed by a trusted key")
	// ErrBadSignature: a signature by a trusted key does not verify; the
	// manifest was altered or the bundle damaged.
	ErrBadSignature = errors.New("bundle signature does not verify")
	// ErrCorrupt: the header is malformed or the payload or image does not
	// match the signed size and digest.
	ErrCorrupt = errors.New("bundle is corrupt")
)

// Reader is an opened bundle whose manifest signature has been verified.
// The payload is read from the same stream, once.
type Reader struct {
	// Manifest is the verified manifest.
	Manifest Manifest
	// RawManifest is the signed manifest bytes.
	RawManifest []byte
	// KeyID names the trusted key whose signature verified.
	KeyID string
	// HeaderSize is the number of bytes before the payload.
	HeaderSize int64

	payload *payloadReader
	opened  bool
}

// Open reads the bundle header from r, verifies the manifest signature
// against trusted and checks that this supervisor can install the payload
// (Manifest.Installable). It consumes exactly HeaderSize bytes of r and no
// payload byte; the payload is then read through Payload or Image, which
// check the signed size and digest as they go.
func Open(r io.Reader, trusted []ed25519.PublicKey) (*Reader, error) {
	raw, sigs, hsize, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	keyID, err := verify(raw, sigs, trusted)
	if err != nil {
		return nil, err
	}
	// Only signed bytes are parsed for meaning.
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: signed manifest does not parse: %v", ErrCorrupt, err)
	}
	if err := m.Installable(); err != nil {
		return nil, err
	}
	return &Reader{
		Manifest:    m,
		RawManifest: raw,
		KeyID:       keyID,
		HeaderSize:  hsize,
		payload:     newPayloadReader(r, m.Payload.Size, m.Payload.SHA256),
	}, nil
}

// Inspect reads a bundle header WITHOUT verifying its signature, for tools
// that show what a file is. It returns the manifest and the key IDs of the
// signatures. Never install on the strength of Inspect.
func Inspect(r io.Reader) (Manifest, []string, error) {
	raw, sigs, _, err := readHeader(r)
	if err != nil {
		return Manifest{}, nil, err
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return Manifest{}, nil, err
	}
	var ids []string
	for i := 0; i < len(sigs); i += sigEntrySize {
		ids = append(ids, hex.EncodeToString(sigs[i:i+keys.IDSize]))
	}
	return m, ids, nil
}

func readHeader(r io.Reader) (manifest, sigs []byte, size int64, err error) {
	var fixed [len(Magic) + 4]byte
	if n, err := io.ReadFull(r, fixed[:]); err != nil {
		got := fixed[:min(n, len(Magic))]
		switch {
		case errors.Is(err, io.EOF):
			return nil, nil, 0, fmt.Errorf("%w: empty input", ErrNotBundle)
		case errors.Is(err, io.ErrUnexpectedEOF) && !bytes.HasPrefix([]byte(Magic), got):
			return nil, nil, 0, fmt.Errorf("%w: starts with %q, want %q", ErrNotBundle, got, Magic)
		}
		return nil, nil, 0, headerErr("magic", err)
	}
	if string(fixed[:len(Magic)]) != Magic {
		return nil, nil, 0, fmt.Errorf("%w: wrong magic %q, want %q", ErrNotBundle, fixed[:len(Magic)], Magic)
	}
	mlen := binary.BigEndian.Uint32(fixed[len(Magic):])
	if mlen < 2 || mlen > MaxManifestSize {
		return nil, nil, 0, fmt.Errorf("%w: manifest length %d outside 2..%d", ErrCorrupt, mlen, MaxManifestSize)
	}
	manifest = make([]byte, int(mlen)+2)
	if _, err := io.ReadFull(r, manifest); err != nil {
		return nil, nil, 0, headerErr("manifest", err)
	}
	slen := int(binary.BigEndian.Uint16(manifest[mlen:]))
	manifest = manifest[:mlen]
	if slen == 0 || slen%sigEntrySize != 0 || slen > maxSignatures*sigEntrySize {
		return nil, nil, 0, fmt.Errorf("%w: signature block of %d bytes, want 1..%d entries of %d", ErrCorrupt, slen, maxSignatures, sigEntrySize)
	}
	sigs = make([]byte, slen)
	if _, err := io.ReadFull(r, sigs); err != nil {
		return nil, nil, 0, headerErr("signatures", err)
	}
	return manifest, sigs, int64(len(fixed)) + int64(mlen) + 2 + int64(slen), nil
}

func headerErr(part string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: ends inside the %s", ErrTruncated, part)
	}
	return fmt.Errorf("read bundle %s: %w", part, err)
}

// verify returns the hex key ID of the first trusted key whose signature
// verifies.
func verify(manifest, sigs []byte, trusted []ed25519.PublicKey) (string, error) {
	if len(trusted) == 0 {
		return "", fmt.Errorf("%w: the device trusts no key: bake a public key into the image (/etc/bulkhead/keys)", ErrUnknownKey)
	}
	msg := append([]byte(SignatureContext), manifest...)
	var seen []string
	matched := false
	for i := 0; i < len(sigs); i += sigEntrySize {
		id := sigs[i : i+keys.IDSize]
		sig := sigs[i+keys.IDSize : i+sigEntrySize]
		seen = append(seen, hex.EncodeToString(id))
		for _, k := range trusted {
			kid := keys.ID(k)
			if !bytes.Equal(kid[:], id) {
				continue
			}
			matched = true
			if ed25519.Verify(k, msg, sig) {
				return hex.EncodeToString(id), nil
			}
		}
	}
	if matched {
		return "", fmt.Errorf("%w: the manifest was altered or damaged: download the bundle again", ErrBadSignature)
	}
	var trustedIDs []string
	for _, k := range trusted {
		trustedIDs = append(trustedIDs, keys.IDString(k))
	}
	return "", fmt.Errorf("%w: signed by %v, the device trusts %v: sign with a trusted key or install an image that trusts this one", ErrUnknownKey, seen, trustedIDs)
}

// Payload returns the raw payload stream. Its Read returns io.EOF only
// after exactly Manifest.Payload.Size bytes whose SHA-256 matches the
// manifest, followed by the end of the input; otherwise an error wrapping
// ErrTruncated or ErrCorrupt. Use either Payload or Image, not both.
func (r *Reader) Payload() io.Reader { return r.payload }

// PayloadRead returns how many payload bytes have been read so far, for
// progress reports.
func (r *Reader) PayloadRead() int64 { return r.payload.n }

// Image returns the decompressed slot image stream. Its Read returns io.EOF
// only after exactly Manifest.Image.Size bytes whose SHA-256 matches the
// manifest, and after the whole payload verified; it never returns more
// than Image.Size bytes, whatever the payload holds. Close releases the
// decompressor.
func (r *Reader) Image() (io.ReadCloser, error) {
	return r.image(true)
}

// ImageForReadBack is Image without the SHA-256 of the decompressed bytes;
// everything else is checked as by Image: exactly Manifest.Image.Size
// bytes, the payload's signed size and digest, the end of the input. It is
// for an installer that reads what it wrote back from the medium and
// compares that with Manifest.Image.SHA256 before trusting it (the
// updater does, invariant 6): hashing the stream as well would only repeat
// that check on bytes that are already bound to the signature through the
// payload digest, and on a board that hashes at 20-30 MB/s (a Pi Zero, or
// an emulated x86) the second pass over a 1 GiB slot costs a minute.
func (r *Reader) ImageForReadBack() (io.ReadCloser, error) {
	return r.image(false)
}

func (r *Reader) image(digest bool) (io.ReadCloser, error) {
	if r.opened {
		return nil, errors.New("bundle image stream already opened")
	}
	r.opened = true
	var (
		dec   io.Reader
		close func()
	)
	switch r.Manifest.Payload.Compression {
	case CompressionZstd:
		// One decoder goroutine and low-memory mode: a Pi Zero has one
		// core, and streaming gains nothing from more on the others
		// because the slot's block device is the bottleneck.
		z, err := zstd.NewReader(r.payload,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return nil, fmt.Errorf("bundle payload: zstd: %w", err)
		}
		dec, close = z, z.Close
	case CompressionXZ:
		x, err := xz.NewReader(r.payload)
		if err != nil {
			return nil, payloadErr(r.payload, fmt.Errorf("%w: xz header: %v", ErrCorrupt, err))
		}
		dec, close = x, func() {}
	case CompressionNone:
		dec, close = r.payload, func() {}
	default:
		return nil, fmt.Errorf("%w: compression %q", ErrUnsupported, r.Manifest.Payload.Compression)
	}
	ir := &imageReader{dec: dec, close: close, payload: r.payload, size: r.Manifest.Image.Size}
	if digest {
		ir.want, _ = hex.DecodeString(r.Manifest.Image.SHA256)
		ir.h = sha256.New()
	}
	return ir, nil
}

// payloadErr prefers the payload's own error (truncation, digest) over the
// decompressor's complaint about the bytes it got.
func payloadErr(p *payloadReader, err error) error {
	if p.err != nil && p.err != io.EOF {
		return p.err
	}
	return err
}

type payloadReader struct {
	r    io.Reader
	size int64
	want []byte
	h    hash.Hash
	n    int64
	err  error // sticky
}

func newPayloadReader(r io.Reader, size int64, sha string) *payloadReader {
	want, _ := hex.DecodeString(sha)
	return &payloadReader{r: r, size: size, want: want, h: sha256.New()}
}

func (p *payloadReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if rem := p.size - p.n; int64(len(b)) > rem {
		b = b[:rem]
	}
	var n int
	var err error
	if len(b) > 0 {
		n, err = p.r.Read(b)
		p.h.Write(b[:n])
		p.n += int64(n)
	}
	switch {
	case p.n == p.size:
		p.err = p.finish()
		if n > 0 && p.err == io.EOF {
			return n, nil
		}
		return n, p.err
	case err == io.EOF:
		p.err = fmt.Errorf("%w: payload ends after %d of %d bytes: download the bundle again", ErrTruncated, p.n, p.size)
		return n, p.err
	case err != nil:
		p.err = fmt.Errorf("read bundle payload at byte %d: %w", p.n, err)
		return n, p.err
	}
	return n, nil
}

// finish checks the digest and that nothing follows the payload.
func (p *payloadReader) finish() error {
	if got := p.h.Sum(nil); !bytes.Equal(got, p.want) {
		return fmt.Errorf("%w: payload sha256 %x, manifest says %x", ErrCorrupt, got, p.want)
	}
	var one [1]byte
	for {
		n, err := p.r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("%w: data after the %d-byte payload", ErrCorrupt, p.size)
		}
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("read bundle end: %w", err)
		}
	}
}

type imageReader struct {
	dec     io.Reader
	close   func()
	payload *payloadReader
	size    int64
	n       int64
	want    []byte
	h       hash.Hash // nil: the caller verifies the image itself
	err     error
}

func (ir *imageReader) Read(b []byte) (int, error) {
	if ir.err != nil {
		return 0, ir.err
	}
	// Ask for one byte more than the image may hold, so an image that
	// decompresses too long is noticed without handing the byte out.
	if rem := ir.size - ir.n + 1; int64(len(b)) > rem {
		b = b[:rem]
	}
	n, err := ir.dec.Read(b)
	if ir.n+int64(n) > ir.size {
		n = int(ir.size - ir.n)
		ir.hash(b[:n])
		ir.n += int64(n)
		ir.err = payloadErr(ir.payload, fmt.Errorf("%w: image decompresses to more than the signed %d bytes", ErrCorrupt, ir.size))
		return n, ir.err
	}
	ir.hash(b[:n])
	ir.n += int64(n)
	switch {
	case err == io.EOF:
		ir.err = ir.finish()
		if n > 0 && ir.err == io.EOF {
			return n, nil
		}
		return n, ir.err
	case err != nil:
		ir.err = payloadErr(ir.payload, fmt.Errorf("%w: decompress payload at image byte %d: %v", ErrCorrupt, ir.n, err))
		return n, ir.err
	}
	return n, nil
}

func (ir *imageReader) finish() error {
	// The decompressor may stop at the end of its stream before the
	// payload's last bytes: drain them so the payload digest is checked.
	if _, err := io.Copy(io.Discard, ir.payload); err != nil {
		return err
	}
	if ir.payload.err != io.EOF {
		return payloadErr(ir.payload, fmt.Errorf("%w: payload not fully read", ErrCorrupt))
	}
	if ir.n != ir.size {
		return fmt.Errorf("%w: image is %d bytes, manifest says %d", ErrCorrupt, ir.n, ir.size)
	}
	if ir.h == nil {
		return io.EOF
	}
	if got := ir.h.Sum(nil); !bytes.Equal(got, ir.want) {
		return fmt.Errorf("%w: image sha256 %x, manifest says %x", ErrCorrupt, got, ir.want)
	}
	return io.EOF
}

func (ir *imageReader) hash(b []byte) {
	if ir.h != nil {
		ir.h.Write(b)
	}
}

func (ir *imageReader) Close() error {
	ir.close()
	return nil
}
