package debian

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// ErrSignature is wrapped by every error about a Release file whose
// signature is missing, malformed, made by an unknown key or does not match.
var ErrSignature = errors.New("release signature not valid")

// FileSum is one line of a Release file's SHA256 table.
type FileSum struct {
	Size   int64
	SHA256 string
}

// Release is the parsed content of a suite's (In)Release file: what the suite
// is and the digest of every index under it. Only a Release whose signature
// was verified may be trusted; the digests then extend that trust to the
// Packages indexes and, through them, to every .deb.
type Release struct {
	Origin, Label, Suite, Codename, Version string
	Date, ValidUntil                        time.Time
	Components, Architectures               []string
	// AcquireByHash says indexes are also served under
	// <dir>/by-hash/SHA256/<digest>, which never changes while a mirror
	// syncs (the fix apt uses for "Hash Sum mismatch").
	AcquireByHash bool
	// AllInArchIndexes is set by "No-Support-for-Architecture-all:
	// Packages": architecture-independent packages are listed in every
	// binary-<arch>/Packages instead of a separate binary-all/Packages.
	AllInArchIndexes bool
	// SHA256 maps a path relative to dists/<suite>/ to its size and digest.
	SHA256 map[string]FileSum
}

// parseReleaseDate accepts the RFC 1123 dates Debian writes ("Sat, 11 Jul
// 2026 10:16:37 UTC") and their numeric-zone form used by other archive
// tools.
func parseReleaseDate(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("date %q is not in RFC 1123 form", s)
}

// ParseRelease parses the (already verified) text of a Release file.
func ParseRelease(data []byte) (*Release, error) {
	stanzas, err := ParseStanzas(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse Release: %w", err)
	}
	if len(stanzas) != 1 {
		return nil, fmt.Errorf("parse Release: %d stanzas, want exactly 1", len(stanzas))
	}
	s := stanzas[0]
	r := &Release{
		Origin:           s.Get("Origin"),
		Label:            s.Get("Label"),
		Suite:            s.Get("Suite"),
		Codename:         s.Get("Codename"),
		Version:          s.Get("Version"),
		Components:       strings.Fields(s.Get("Components")),
		Architectures:    strings.Fields(s.Get("Architectures")),
		AcquireByHash:    strings.EqualFold(s.Get("Acquire-By-Hash"), "yes"),
		AllInArchIndexes: strings.Contains(s.Get("No-Support-for-Architecture-all"), "Packages"),
		SHA256:           map[string]FileSum{},
	}
	if r.Suite == "" && r.Codename == "" {
		return nil, errors.New("parse Release: neither Suite nor Codename is set")
	}
	if d := s.Get("Date"); d != "" {
		if r.Date, err = parseReleaseDate(d); err != nil {
			return nil, fmt.Errorf("parse Release: Date: %w", err)
		}
	}
	if d := s.Get("Valid-Until"); d != "" {
		if r.ValidUntil, err = parseReleaseDate(d); err != nil {
			return nil, fmt.Errorf("parse Release: Valid-Until: %w", err)
		}
	}
	table := s.Get("SHA256")
	if table == "" {
		// MD5Sum and SHA1 tables are not trusted for integrity, so a
		// Release without SHA256 cannot vouch for anything.
		return nil, errors.New("parse Release: no SHA256 table")
	}
	for i, line := range strings.Split(table, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("parse Release: SHA256 line %d: want \"<sha256> <size> <path>\", got %q", i+1, line)
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("parse Release: SHA256 line %d: size %q", i+1, f[1])
		}
		sum := strings.ToLower(f[0])
		if !validSHA256(sum) {
			return nil, fmt.Errorf("parse Release: SHA256 line %d: %q is not a sha256", i+1, f[0])
		}
		r.SHA256[f[2]] = FileSum{Size: size, SHA256: sum}
	}
	return r, nil
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// hasComponent reports whether the Release lists comp and returns the name
// its index directory uses. Debian's security archive lists "updates/main"
// while its files are under "main/", so a trailing path match counts.
func (r *Release) hasComponent(comp string) bool {
	for _, c := range r.Components {
		if c == comp || strings.HasSuffix(c, "/"+comp) {
			return true
		}
	}
	return false
}

func (r *Release) hasArch(arch string) bool {
	for _, a := range r.Architectures {
		if a == arch {
			return true
		}
	}
	return false
}

func pgpConfig(now time.Time) *packet.Config {
	if now.IsZero() {
		now = time.Now()
	}
	return &packet.Config{Time: func() time.Time { return now }}
}

// VerifyInRelease checks the clearsigned InRelease data against keyring at
// time now (zero: the current time) and returns the signed text, which is
// the only part that may be parsed. Text outside the signed block is refused
// rather than ignored: apt's own InRelease splitting has been bypassed before
// (CVE-2016-1252), and a mirror has no reason to add anything around it.
func VerifyInRelease(data []byte, keyring openpgp.KeyRing, now time.Time) ([]byte, error) {
	b, rest := clearsign.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%w: not a clearsigned message", ErrSignature)
	}
	begin := bytes.Index(data, []byte("-----BEGIN PGP SIGNED MESSAGE-----"))
	if len(bytes.TrimSpace(data[:begin])) != 0 || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data outside the signed message", ErrSignature)
	}
	if _, err := b.VerifySignature(keyring, pgpConfig(now)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return b.Plaintext, nil
}

// VerifyDetached checks a Release file against its armored detached
// signature (Release.gpg), the older layout InRelease replaced.
func VerifyDetached(release, sig []byte, keyring openpgp.KeyRing, now time.Time) error {
	if _, err := openpgp.CheckArmoredDetachedSignature(keyring, bytes.NewReader(release), bytes.NewReader(sig), pgpConfig(now)); err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return nil
}
