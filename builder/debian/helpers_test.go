package debian

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/bulkhead-os/bulkhead/builder/cache"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testKey makes a throwaway signing key. EdDSA keeps generation instant.
func testKey(t testing.TB) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity("Bulkhead Test", "throwaway", "test@example.org", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func clearsignWith(t testing.TB, key *openpgp.Entity, text []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := clearsign.Encode(&buf, key.PrivateKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(text)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func detachSign(t testing.TB, key *openpgp.Entity, text []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&buf, key, bytes.NewReader(text), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func xzBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fakeSuite describes one suite of a fake archive.
type fakeSuite struct {
	name, codename string
	// indexes maps "main/binary-arm64/Packages.xz"-style paths to content.
	indexes    map[string][]byte
	byHash     bool
	validUntil time.Time
	archs      string
	components string
}

// fakeArchive is an httptest mirror with signed suites and a pool.
type fakeArchive struct {
	t      testing.TB
	key    *openpgp.Entity
	mu     sync.Mutex
	files  map[string][]byte
	hits   []string
	srv    *httptest.Server
	mangle func(path string, body []byte) []byte // changes what is served
	status func(path string) int                 // non-zero: answer with this status
}

func newFakeArchive(t testing.TB) *fakeArchive {
	f := &fakeArchive{t: t, key: testKey(t), files: map[string][]byte{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeArchive) URI() string { return f.srv.URL + "/debian" }

func (f *fakeArchive) serve(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/debian/")
	f.mu.Lock()
	f.hits = append(f.hits, p)
	body, ok := f.files[p]
	mangle, status := f.mangle, f.status
	f.mu.Unlock()
	if status != nil {
		if code := status(p); code != 0 {
			http.Error(w, http.StatusText(code), code)
			return
		}
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	if mangle != nil {
		body = mangle(p, body)
	}
	w.Write(body)
}

func (f *fakeArchive) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.hits)
}

func (f *fakeArchive) put(p string, b []byte) {
	f.mu.Lock()
	f.files[p] = b
	f.mu.Unlock()
}

func (f *fakeArchive) remove(p string) {
	f.mu.Lock()
	delete(f.files, p)
	f.mu.Unlock()
}

// releaseText builds the Release of s, listing every index with its digest.
func releaseText(s fakeSuite) []byte {
	var b strings.Builder
	codename := s.codename
	if codename == "" {
		codename = s.name
	}
	archs, comps := s.archs, s.components
	if archs == "" {
		archs = "all amd64 arm64"
	}
	if comps == "" {
		comps = "main contrib non-free-firmware"
	}
	fmt.Fprintf(&b, "Origin: Debian\nLabel: Debian\nSuite: %s\nCodename: %s\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n", "old-"+codename, codename)
	if !s.validUntil.IsZero() {
		fmt.Fprintf(&b, "Valid-Until: %s\n", s.validUntil.UTC().Format(time.RFC1123))
	}
	if s.byHash {
		b.WriteString("Acquire-By-Hash: yes\n")
	}
	fmt.Fprintf(&b, "No-Support-for-Architecture-all: Packages\nArchitectures: %s\nComponents: %s\nDescription: test\nSHA256:\n", archs, comps)
	var names []string
	for n := range s.indexes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, " %s %8d %s\n", sha(s.indexes[n]), len(s.indexes[n]), n)
	}
	return []byte(b.String())
}

// addSuite publishes s: InRelease signed with the archive's key, every
// index under its name and, with byHash, under by-hash.
func (f *fakeArchive) addSuite(s fakeSuite) {
	dists := "dists/" + s.name + "/"
	f.put(dists+"InRelease", clearsignWith(f.t, f.key, releaseText(s)))
	for n, b := range s.indexes {
		f.put(dists+n, b)
		if s.byHash {
			f.put(dists+path.Dir(n)+"/by-hash/SHA256/"+sha(b), b)
		}
	}
}

func (f *fakeArchive) keyring() openpgp.EntityList { return openpgp.EntityList{f.key} }

// open returns an Archive over the fake mirror with fast retries.
func (f *fakeArchive) open(t testing.TB, c *cache.Cache, srcs []Source, events *[]Event) *Archive {
	t.Helper()
	var mu sync.Mutex
	a, err := Open(t.Context(), Config{Sources: srcs, Cache: c, Keyring: f.keyring(), Progress: func(e Event) {
		if events != nil {
			mu.Lock()
			*events = append(*events, e)
			mu.Unlock()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = time.Millisecond
	return a
}

func tempCache(t testing.TB) *cache.Cache {
	t.Helper()
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tarEntry is one entry of a test data.tar.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	uid, gid   int
}

func tarBytes(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2023, 4, 5, 6, 7, 8, 0, time.UTC)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatGNU}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// arBytes writes an ar archive the way dpkg-deb does.
func arBytes(members ...[2][]byte) []byte {
	var buf bytes.Buffer
	buf.WriteString(arMagic)
	for _, m := range members {
		fmt.Fprintf(&buf, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m[0], 1680674828, 0, 0, "100644", len(m[1]))
		buf.Write(m[1])
		if len(m[1])%2 == 1 {
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}

func member(name string, b []byte) [2][]byte { return [2][]byte{[]byte(name), b} }

const testControl = "Package: hello\nVersion: 1.0-1\nArchitecture: arm64\nMaintainer: Test <test@example.org>\nDescription: says hello\n a test package\n"

// debBytes builds a .deb whose data.tar is compressed with comp ("xz",
// "zst", "gz" or "").
func debBytes(t testing.TB, comp string, entries []tarEntry) []byte {
	t.Helper()
	control := gzBytes(t, tarBytes(t, []tarEntry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./control", typ: tar.TypeReg, mode: 0o644, body: testControl},
	}))
	data := tarBytes(t, entries)
	name := "data.tar"
	switch comp {
	case "xz":
		data, name = xzBytes(t, data), name+".xz"
	case "zst":
		data, name = zstBytes(t, data), name+".zst"
	case "gz":
		data, name = gzBytes(t, data), name+".gz"
	}
	return arBytes(member("debian-binary", []byte("2.0\n")), member("control.tar.gz", control), member(name, data))
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
