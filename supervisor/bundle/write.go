package bundle

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bulkhead-os/bulkhead/supervisor/keys"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Layout constants; see the package documentation.
const (
	// Magic starts every bundle. `head -c 16 x.bundle` shows it.
	Magic = "bulkhead-bundle\n"
	// SignatureContext prefixes the manifest bytes that are signed.
	SignatureContext = "bulkhead-bundle-manifest-v1\x00"

	sigEntrySize  = keys.IDSize + ed25519.SignatureSize
	maxSignatures = 16
)

// WriteOptions tunes Write. The zero value writes a zstd bundle with temp
// files in os.TempDir.
type WriteOptions struct {
	// TempDir holds the compressed payload while the manifest is made,
	// because the manifest, which precedes the payload, commits to the
	// payload's size and digest. Empty means os.TempDir().
	TempDir string
	// ExtraKeys sign the bundle too, for key rotations.
	ExtraKeys []ed25519.PrivateKey
}

// Write makes a bundle from the raw slot image read from image and writes
// it to w, signed with key. m supplies the identity fields (Name, Version,
// Board, Arch, Compatible, Kernel, BuildTime) and Payload.Compression (empty
// means zstd); Write fills in Format, Image and the rest of Payload and
// returns the manifest it signed.
//
// The payload is compressed deterministically (one encoder thread, fixed
// options), so the same image, manifest and key give the same bundle bytes
// (ed25519 signatures are deterministic too).
func Write(w io.Writer, m Manifest, image io.Reader, key ed25519.PrivateKey, opts *WriteOptions) (Manifest, error) {
	if opts == nil {
		opts = &WriteOptions{}
	}
	m.Format = FormatVersion
	if m.Payload.Compression == "" {
		m.Payload.Compression = CompressionZstd
	}
	m.Payload.Type = PayloadFull
	m.Payload.Base = nil
	if len(key) != ed25519.PrivateKeySize {
		return Manifest{}, errors.New("write bundle: signing key is not an ed25519 private key: make one with `builder keygen`")
	}

	tmp, err := os.CreateTemp(opts.TempDir, "bundle-payload-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("write bundle: temp file for the payload: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	ih := sha256.New()
	ph := sha256.New()
	pw := &countWriter{w: io.MultiWriter(tmp, ph)}
	bw := bufio.NewWriterSize(pw, 1<<20)
	cw, err := compressor(bw, m.Payload.Compression)
	if err != nil {
		return Manifest{}, fmt.Errorf("write bundle: %w", err)
	}
	isize, err := io.Copy(cw, io.TeeReader(image, ih))
	if err != nil {
		return Manifest{}, fmt.Errorf("write bundle: compress slot image: %w", err)
	}
	if err := cw.Close(); err != nil {
		return Manifest{}, fmt.Errorf("write bundle: compress slot image: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return Manifest{}, fmt.Errorf("write bundle: store compressed payload: %w", err)
	}
	m.Image = Image{Size: isize, SHA256: digestHex(ih.Sum(nil))}
	m.Payload.Size = pw.n
	m.Payload.SHA256 = digestHex(ph.Sum(nil))

	mb, err := m.Marshal()
	if err != nil {
		return Manifest{}, fmt.Errorf("write bundle: %w", err)
	}
	head, err := header(mb, append([]ed25519.PrivateKey{key}, opts.ExtraKeys...))
	if err != nil {
		return Manifest{}, fmt.Errorf("write bundle: %w", err)
	}
	if _, err := w.Write(head); err != nil {
		return Manifest{}, fmt.Errorf("write bundle: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Manifest{}, fmt.Errorf("write bundle: %w", err)
	}
	if n, err := io.Copy(w, tmp); err != nil {
		return Manifest{}, fmt.Errorf("write bundle: copy payload: %w", err)
	} else if n != m.Payload.Size {
		return Manifest{}, fmt.Errorf("write bundle: payload temp file holds %d bytes, wrote %d: is %s full?", n, m.Payload.Size, tmp.Name())
	}
	return m, nil
}

// WriteFile is Write into a new file at path, synced before it returns.
func WriteFile(path string, m Manifest, imagePath string, key ed25519.PrivateKey, opts *WriteOptions) (Manifest, error) {
	img, err := os.Open(imagePath)
	if err != nil {
		return Manifest{}, fmt.Errorf("write bundle: %w", err)
	}
	defer img.Close()
	f, err := os.Create(path)
	if err != nil {
		return Manifest{}, fmt.Errorf("write bundle: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	out, err := Write(bw, m, img, key, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return Manifest{}, fmt.Errorf("write bundle %s: %w", path, err)
	}
	return out, nil
}

// header returns magic, manifest and signature block.
func header(manifest []byte, signers []ed25519.PrivateKey) ([]byte, error) {
	if len(manifest) > MaxManifestSize {
		return nil, fmt.Errorf("manifest of %d bytes: at most %d", len(manifest), MaxManifestSize)
	}
	if len(signers) > maxSignatures {
		return nil, fmt.Errorf("%d signing keys: at most %d", len(signers), maxSignatures)
	}
	msg := append([]byte(SignatureContext), manifest...)
	b := make([]byte, 0, len(Magic)+4+len(manifest)+2+len(signers)*sigEntrySize)
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(manifest)))
	b = append(b, manifest...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(signers)*sigEntrySize))
	for _, k := range signers {
		if len(k) != ed25519.PrivateKeySize {
			return nil, errors.New("a signing key is not an ed25519 private key")
		}
		id := keys.ID(k.Public().(ed25519.PublicKey))
		b = append(b, id[:]...)
		b = append(b, ed25519.Sign(k, msg)...)
	}
	return b, nil
}

// compressor returns the encoder for a compression name.
func compressor(w io.Writer, compression string) (io.WriteCloser, error) {
	switch compression {
	case CompressionZstd:
		// One thread: the output is then independent of the build
		// machine's core count (reproducible bundles). An 8 MiB window is
		// the most a decoder on a 512 MiB Pi Zero should have to hold.
		return zstd.NewWriter(w,
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
			zstd.WithWindowSize(8<<20),
			zstd.WithEncoderCRC(true))
	case CompressionXZ:
		c := xz.WriterConfig{DictCap: 8 << 20, CheckSum: xz.CRC64}
		return c.NewWriter(w)
	case CompressionNone:
		return nopWriteCloser{w}, nil
	}
	return nil, fmt.Errorf("%w: compression %q: want %s, %s or %s", ErrUnsupported, compression, CompressionZstd, CompressionXZ, CompressionNone)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
