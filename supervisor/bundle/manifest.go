package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// FormatVersion is the manifest format this package writes and the highest
// it reads. A reader refuses a higher one (ErrUnsupported): the fields it
// would not understand could change how the payload must be installed.
const FormatVersion = 1

// Payload types.
const (
	// PayloadFull is a complete slot image.
	PayloadFull = "full"
	// PayloadDelta is reserved for a payload that rebuilds the image from
	// the slot image named by Payload.Base. Not installable yet.
	PayloadDelta = "delta"
)

// Compressions of the payload.
const (
	// CompressionZstd is the default: klauspost/compress's pure-Go zstd
	// decoder streams several times faster than any xz/LZMA2 decoder on the
	// single 1 GHz ARM11 core of a Pi Zero (LZMA2 decoding is bit-serial
	// range decoding, zstd decoding is table driven), so a Pi Zero install
	// is bound by the SD card instead of the CPU. The bundle is typically
	// 5-15% larger than with xz.
	CompressionZstd = "zstd"
	// CompressionXZ trades install speed for size, for slow links.
	CompressionXZ = "xz"
	// CompressionNone stores the image as is (tests, pre-compressed images).
	CompressionNone = "none"
)

// Manifest describes one bundle. Its JSON field names are the format; they
// never change meaning within a FormatVersion.
type Manifest struct {
	// Format is FormatVersion.
	Format int `json:"format"`
	// Name is the OS name from the image config (release.json "name").
	Name string `json:"name"`
	// Version is the OS version, compared by CompareVersions.
	Version string `json:"version"`
	// Board is the board the image was built for (boards/<board>.yaml).
	Board string `json:"board"`
	// Arch is the Debian architecture of the board: armel, armhf, arm64
	// or amd64 (release.json "arch").
	Arch string `json:"arch"`
	// Compatible lists further boards that may install this bundle, for
	// boards that share a slot image (e.g. raspberrypi3 and raspberrypi4).
	Compatible []string `json:"compatible,omitempty"`
	// Kernel is the kernel release inside the slot image (uname -r).
	Kernel string `json:"kernel"`
	// BuildTime is the image's build time in seconds since the Unix epoch
	// (SOURCE_DATE_EPOCH; release.json "build_time").
	BuildTime int64 `json:"build_time"`
	// Image is the slot image the payload produces.
	Image Image `json:"image"`
	// Payload is the bytes after the signature block.
	Payload Payload `json:"payload"`
}

// Image identifies a root slot image.
type Image struct {
	// Size in bytes; the slot partition must hold at least this much.
	Size int64 `json:"size"`
	// SHA256 of the Size bytes, lowercase hex.
	SHA256 string `json:"sha256"`
}

// Payload describes the bytes that follow the signature block.
type Payload struct {
	// Type is PayloadFull (or, later, PayloadDelta).
	Type string `json:"type"`
	// Compression is CompressionZstd, CompressionXZ or CompressionNone.
	Compression string `json:"compression"`
	// Size of the payload in bytes, as stored in the bundle.
	Size int64 `json:"size"`
	// SHA256 of the Size payload bytes, lowercase hex.
	SHA256 string `json:"sha256"`
	// Base is the slot image a delta payload applies to; nil for full.
	Base *Image `json:"base,omitempty"`
}

// BuildTimeUTC returns BuildTime as a time.
func (m Manifest) BuildTimeUTC() time.Time { return time.Unix(m.BuildTime, 0).UTC() }

// Boards returns Board followed by Compatible.
func (m Manifest) Boards() []string { return append([]string{m.Board}, m.Compatible...) }

// Supports reports whether the bundle may be installed on board.
func (m Manifest) Supports(board string) bool {
	for _, b := range m.Boards() {
		if b == board {
			return true
		}
	}
	return false
}

// ErrInvalidManifest is wrapped by every error that rejects manifest bytes
// or fields.
var ErrInvalidManifest = errors.New("invalid bundle manifest")

// ErrUnsupported is wrapped when a valid manifest asks for something this
// supervisor cannot do (a newer format, a delta payload, an unknown
// compression): install a newer OS release first or rebuild the bundle.
var ErrUnsupported = errors.New("unsupported bundle")

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	versionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_~-]{0,127}$`)
	archRE    = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
	kernelRE  = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_~-]{0,127}$`)
	hexRE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// maxCompatible bounds Compatible; a board list longer than this is a
// mistake, not a fleet.
const maxCompatible = 32

// Validate checks the fields of a manifest this package can write or read:
// Format may be at most FormatVersion, names are short and plain (they end
// up in file names, logs and HTTP headers), sizes positive, digests hex.
func (m Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidManifest, fmt.Sprintf(format, args...))
	}
	switch {
	case m.Format < 1:
		return bad("format %d: want 1..%d", m.Format, FormatVersion)
	case !nameRE.MatchString(m.Name):
		return bad("name %q: want 1-64 of a-z 0-9 . _ -", m.Name)
	case !versionRE.MatchString(m.Version):
		return bad("version %q: want 1-128 of A-Z a-z 0-9 . + _ ~ -", m.Version)
	case !nameRE.MatchString(m.Board):
		return bad("board %q: want 1-64 of a-z 0-9 . _ -", m.Board)
	case !archRE.MatchString(m.Arch):
		return bad("arch %q: want a Debian architecture such as arm64", m.Arch)
	case len(m.Compatible) > maxCompatible:
		return bad("%d compatible boards: at most %d", len(m.Compatible), maxCompatible)
	case !kernelRE.MatchString(m.Kernel):
		return bad("kernel %q: want a kernel release such as 6.1.0-28-arm64", m.Kernel)
	case m.BuildTime <= 0:
		return bad("build_time %d: want seconds since 1970", m.BuildTime)
	}
	for _, b := range m.Compatible {
		if !nameRE.MatchString(b) {
			return bad("compatible board %q: want 1-64 of a-z 0-9 . _ -", b)
		}
	}
	if err := m.Image.validate("image"); err != nil {
		return bad("%v", err)
	}
	p := m.Payload
	if p.Type == "" || len(p.Type) > 16 {
		return bad("payload type %q: want %s", p.Type, PayloadFull)
	}
	if p.Compression == "" || len(p.Compression) > 16 {
		return bad("payload compression %q: want %s, %s or %s", p.Compression, CompressionZstd, CompressionXZ, CompressionNone)
	}
	if err := (Image{Size: p.Size, SHA256: p.SHA256}).validate("payload"); err != nil {
		return bad("%v", err)
	}
	if p.Base != nil {
		if err := p.Base.validate("payload base"); err != nil {
			return bad("%v", err)
		}
	}
	if p.Type == PayloadFull && p.Base != nil {
		return bad("a full payload has no base image")
	}
	return nil
}

func (im Image) validate(what string) error {
	if im.Size <= 0 {
		return fmt.Errorf("%s size %d: want > 0", what, im.Size)
	}
	if !hexRE.MatchString(im.SHA256) {
		return fmt.Errorf("%s sha256 %q: want 64 lowercase hex digits", what, im.SHA256)
	}
	return nil
}

// Installable reports whether this supervisor can install the bundle:
// nil, or an error wrapping ErrUnsupported.
func (m Manifest) Installable() error {
	if m.Format > FormatVersion {
		return fmt.Errorf("%w: manifest format %d, this supervisor reads up to %d: install an intermediate release first", ErrUnsupported, m.Format, FormatVersion)
	}
	if m.Payload.Type != PayloadFull {
		return fmt.Errorf("%w: payload type %q, this supervisor installs %q payloads: rebuild the bundle as a full bundle", ErrUnsupported, m.Payload.Type, PayloadFull)
	}
	switch m.Payload.Compression {
	case CompressionZstd, CompressionXZ, CompressionNone:
	default:
		return fmt.Errorf("%w: payload compression %q: rebuild the bundle with %s", ErrUnsupported, m.Payload.Compression, CompressionZstd)
	}
	return nil
}

// MaxManifestSize bounds the manifest so that a corrupt length field cannot
// make a 512 MiB device allocate gigabytes.
const MaxManifestSize = 64 << 10

// ParseManifest decodes and validates manifest JSON. Unknown fields are
// ignored (a later minor addition is signed like every other byte, and the
// format number guards incompatible changes); duplicate fields, trailing
// data and invalid UTF-8 are rejected because two parsers could disagree on
// them.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxManifestSize {
		return m, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidManifest, len(b), MaxManifestSize)
	}
	if err := checkJSON(b); err != nil {
		return m, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("%w: data after the JSON object", ErrInvalidManifest)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Marshal encodes m as the manifest bytes Write signs: compact JSON with
// the fields in declaration order, so equal manifests give equal bytes.
func (m Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// digestHex formats a SHA-256 sum as Manifest stores it.
func digestHex(sum []byte) string { return hex.EncodeToString(sum) }

// checkJSON rejects what encoding/json silently accepts but another parser
// might read differently: invalid UTF-8 (json replaces it with U+FFFD),
// duplicate keys (json keeps the last, others keep the first) and case
// variants of a key (json matches keys case-insensitively). The manifest is
// signed bytes, and a signed byte string must have one meaning.
func checkJSON(b []byte) error {
	if !utf8Valid(b) {
		return errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		object  bool
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k, _ := tok.(string)
			lk := strings.ToLower(k)
			if top.keys[lk] {
				return fmt.Errorf("key %q appears twice", k)
			}
			top.keys[lk] = true
			top.wantKey = false
			continue
		}
		if top != nil && top.object {
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			if len(stack) >= 8 {
				return errors.New("nested deeper than 8 levels")
			}
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			if len(stack) >= 8 {
				return errors.New("nested deeper than 8 levels")
			}
			stack = append(stack, &frame{})
		case json.Delim(']'), json.Delim('}'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			// The top-level value is complete; ParseManifest reports
			// anything after it.
			return nil
		}
	}
}

func utf8Valid(b []byte) bool { return utf8.Valid(b) }
