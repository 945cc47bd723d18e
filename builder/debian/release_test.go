package debian

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// The fixture is a genuine InRelease of bookworm-updates, signed by Debian's
// bookworm and trixie automatic archive keys.
var fixtureTime = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

func TestRealInReleaseVerifiesWithTheEmbeddedKeyring(t *testing.T) {
	kr, err := DebianKeyring()
	if err != nil {
		t.Fatal(err)
	}
	if len(kr) != 6 {
		t.Fatalf("embedded keyring has %d keys, want the 6 bookworm and trixie keys", len(kr))
	}
	text, err := VerifyInRelease(readTestdata(t, "InRelease-bookworm-updates"), kr, fixtureTime)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRelease(text)
	if err != nil {
		t.Fatal(err)
	}
	if r.Codename != "bookworm-updates" || r.Suite != "oldstable-updates" || r.Origin != "Debian" {
		t.Errorf("parsed %q %q %q", r.Codename, r.Suite, r.Origin)
	}
	if !r.AcquireByHash || !r.AllInArchIndexes {
		t.Errorf("Acquire-By-Hash %v, No-Support-for-Architecture-all %v", r.AcquireByHash, r.AllInArchIndexes)
	}
	if !r.hasArch("arm64") || !r.hasComponent("non-free-firmware") {
		t.Errorf("architectures %v, components %v", r.Architectures, r.Components)
	}
	if r.Date.IsZero() || r.Date.Year() != 2026 {
		t.Errorf("Date = %v", r.Date)
	}
	sum, ok := r.SHA256["main/binary-arm64/Packages.xz"]
	if !ok || sum.Size <= 0 || len(sum.SHA256) != 64 {
		t.Errorf("main/binary-arm64/Packages.xz = %+v, %v", sum, ok)
	}
}

func TestTamperedInReleaseIsRejected(t *testing.T) {
	kr, _ := DebianKeyring()
	data := readTestdata(t, "InRelease-bookworm-updates")
	// Change one digit in the SHA256 table: a mirror pointing at a
	// different index.
	i := bytes.Index(data, []byte("SHA256:\n ")) + len("SHA256:\n ")
	bad := bytes.Clone(data)
	if bad[i] == '0' {
		bad[i] = '1'
	} else {
		bad[i] = '0'
	}
	_, err := VerifyInRelease(bad, kr, fixtureTime)
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("tampered InRelease: err = %v, want ErrSignature", err)
	}
}

func TestInReleaseWithDataAroundTheSignedBlockIsRejected(t *testing.T) {
	kr, _ := DebianKeyring()
	data := readTestdata(t, "InRelease-bookworm-updates")
	for name, bad := range map[string][]byte{
		"prefix": append([]byte("Codename: evil\n\n"), data...),
		"suffix": append(bytes.Clone(data), []byte("\nSHA256:\n 00 1 main/binary-arm64/Packages.xz\n")...),
	} {
		if _, err := VerifyInRelease(bad, kr, fixtureTime); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: err = %v, want ErrSignature", name, err)
		}
	}
}

func TestReleaseSignedByAnUnknownKeyIsRejected(t *testing.T) {
	key := testKey(t)
	text := releaseText(fakeSuite{name: "bookworm", indexes: map[string][]byte{"main/binary-arm64/Packages.xz": []byte("x")}})
	signed := clearsignWith(t, key, text)

	// The signing key itself accepts it: the fixture is well formed.
	got, err := VerifyInRelease(signed, openpgp.EntityList{key}, time.Time{})
	if err != nil {
		t.Fatalf("with the signing key: %v", err)
	}
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(text)) {
		t.Fatalf("signed text changed:\n%s\nvs\n%s", got, text)
	}
	kr, _ := DebianKeyring()
	if _, err := VerifyInRelease(signed, kr, time.Time{}); !errors.Is(err, ErrSignature) {
		t.Fatalf("throwaway key against Debian's keyring: err = %v, want ErrSignature", err)
	}
	sig := detachSign(t, key, text)
	if err := VerifyDetached(text, sig, openpgp.EntityList{key}, time.Time{}); err != nil {
		t.Fatalf("detached with the signing key: %v", err)
	}
	if err := VerifyDetached(text, sig, kr, time.Time{}); !errors.Is(err, ErrSignature) {
		t.Fatalf("detached throwaway signature against Debian's keyring: err = %v, want ErrSignature", err)
	}
	if err := VerifyDetached(append(bytes.Clone(text), ' '), sig, openpgp.EntityList{key}, time.Time{}); !errors.Is(err, ErrSignature) {
		t.Fatalf("detached signature over changed text: err = %v, want ErrSignature", err)
	}
}

func TestUnsignedDataIsNotAnInRelease(t *testing.T) {
	kr, _ := DebianKeyring()
	if _, err := VerifyInRelease([]byte("Origin: Debian\nCodename: bookworm\n"), kr, time.Time{}); !errors.Is(err, ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature", err)
	}
}

func TestParseReleaseRejectsBrokenTables(t *testing.T) {
	good := "Codename: bookworm\nSHA256:\n " + strings.Repeat("a", 64) + " 12 main/binary-arm64/Packages.xz\n"
	if _, err := ParseRelease([]byte(good)); err != nil {
		t.Fatalf("good Release: %v", err)
	}
	for name, bad := range map[string]string{
		"no SHA256 table":      "Codename: bookworm\nMD5Sum:\n 00 1 x\n",
		"short digest":         "Codename: bookworm\nSHA256:\n abc 12 main/x\n",
		"negative size":        "Codename: bookworm\nSHA256:\n " + strings.Repeat("a", 64) + " -1 main/x\n",
		"missing path":         "Codename: bookworm\nSHA256:\n " + strings.Repeat("a", 64) + " 12\n",
		"no suite or codename": "Origin: x\nSHA256:\n " + strings.Repeat("a", 64) + " 12 main/x\n",
		"bad date":             "Codename: bookworm\nDate: yesterday\nSHA256:\n " + strings.Repeat("a", 64) + " 12 main/x\n",
	} {
		if _, err := ParseRelease([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSecurityStyleComponentsMatchTheirShortName(t *testing.T) {
	r := &Release{Components: []string{"updates/main", "updates/non-free-firmware"}, SHA256: map[string]FileSum{
		"main/binary-arm64/Packages.xz": {Size: 1, SHA256: strings.Repeat("a", 64)},
	}}
	if !r.hasComponent("main") || r.hasComponent("contrib") {
		t.Fatalf("hasComponent wrong for %v", r.Components)
	}
	if got := r.indexCandidates("main", "arm64"); len(got) != 1 || got[0] != "main/binary-arm64/Packages.xz" {
		t.Fatalf("indexCandidates = %v", got)
	}
}
