package debian

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/cache"
)

// standardArchive publishes bookworm (main and non-free-firmware, with
// by-hash) and bookworm-updates (main) from the testdata indexes.
func standardArchive(t *testing.T) *fakeArchive {
	f := newFakeArchive(t)
	f.addSuite(fakeSuite{name: "bookworm", byHash: true, indexes: map[string][]byte{
		"main/binary-arm64/Packages.xz":              xzBytes(t, readTestdata(t, "Packages-bookworm-main-arm64")),
		"main/binary-arm64/Packages":                 readTestdata(t, "Packages-bookworm-main-arm64"),
		"non-free-firmware/binary-arm64/Packages.xz": xzBytes(t, readTestdata(t, "Packages-bookworm-non-free-firmware-arm64")),
	}})
	f.addSuite(fakeSuite{name: "bookworm-updates", indexes: map[string][]byte{
		"main/binary-arm64/Packages.gz": gzBytes(t, readTestdata(t, "Packages-bookworm-updates-main-arm64")),
	}})
	return f
}

func standardSources(f *fakeArchive) []Source {
	// The source lists only main: the index must still read
	// non-free-firmware because the Release has it.
	return []Source{{URI: f.URI(), Suites: []string{"bookworm", "bookworm-updates"}, Components: []string{"main"}}}
}

func countPrefix(reqs []string, prefix string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

func TestIndexReadsEveryRequestedComponentTheReleaseLists(t *testing.T) {
	f := standardArchive(t)
	c := tempCache(t)
	var events []Event
	a := f.open(t, c, standardSources(f), &events)
	ix, err := a.Index(t.Context(), "arm64", []string{"main", "non-free-firmware", "contrib"})
	if err != nil {
		t.Fatal(err)
	}
	fw, err := ix.Resolve("raspi-firmware")
	if err != nil || fw.Component != "non-free-firmware" || fw.URI != f.URI() {
		t.Fatalf("raspi-firmware = %+v, %v", fw, err)
	}
	libv, _ := ix.Resolve("libv")
	if libv.Version != "2.1-1" || libv.Suite != "bookworm-updates" {
		t.Fatalf("libv = %+v, want 2.1-1 from bookworm-updates", libv)
	}
	reqs := f.requests()
	// With Acquire-By-Hash the immutable by-hash names are used.
	if countPrefix(reqs, "dists/bookworm/main/binary-arm64/by-hash/SHA256/") != 1 || slices.Contains(reqs, "dists/bookworm/main/binary-arm64/Packages.xz") {
		t.Errorf("requests %v: want the by-hash name for bookworm", reqs)
	}
	if !slices.Contains(reqs, "dists/bookworm-updates/main/binary-arm64/Packages.gz") {
		t.Errorf("requests %v: want the .gz index of bookworm-updates", reqs)
	}
	if len(ix.Searched) != 2 || !strings.Contains(ix.Searched[0], "[main non-free-firmware]") {
		t.Errorf("Searched = %v", ix.Searched)
	}
	var kinds []EventKind
	for _, e := range events {
		kinds = append(kinds, e.Kind)
	}
	if !slices.Contains(kinds, EventRelease) || !slices.Contains(kinds, EventIndex) {
		t.Errorf("events %v lack release or index progress", kinds)
	}

	// A second archive over the same cache downloads only the Release files.
	before := len(f.requests())
	a2 := f.open(t, c, standardSources(f), nil)
	if _, err := a2.Index(t.Context(), "arm64", []string{"main", "non-free-firmware"}); err != nil {
		t.Fatal(err)
	}
	again := f.requests()[before:]
	slices.Sort(again)
	if !slices.Equal(again, []string{"dists/bookworm-updates/InRelease", "dists/bookworm/InRelease"}) {
		t.Errorf("warm index requested %v, want only the two InRelease files", again)
	}
}

func TestIndexSkipsASuiteWhoseIndexDoesNotMatchItsRelease(t *testing.T) {
	f := standardArchive(t)
	// "Mirror sync in progress?": the updates index is served with one
	// byte changed, so its digest never matches.
	f.mangle = func(p string, b []byte) []byte {
		if strings.HasPrefix(p, "dists/bookworm-updates/main/") {
			b = bytes.Clone(b)
			b[len(b)-5] ^= 0xff
		}
		return b
	}
	c := tempCache(t)
	var events []Event
	a := f.open(t, c, standardSources(f), &events)
	ix, err := a.Index(t.Context(), "arm64", []string{"main"})
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := ix.Resolve("libv"); p.Version != "1.0-1" {
		t.Fatalf("libv = %s, want 1.0-1 from bookworm only", p.Version)
	}
	if n := countPrefix(f.requests(), "dists/bookworm-updates/main/"); n != a.attempts {
		t.Errorf("updates index requested %d times, want %d attempts", n, a.attempts)
	}
	var warned, retried bool
	for _, e := range events {
		if e.Kind == EventWarning && strings.Contains(e.Message, "bookworm-updates") && strings.Contains(e.Message, "sync") {
			warned = true
		}
		if e.Kind == EventRetry {
			retried = true
		}
	}
	if !warned || !retried {
		t.Errorf("warning %v, retry %v in events %+v", warned, retried, events)
	}
	if len(ix.Searched) != 1 {
		t.Errorf("Searched = %v, want only bookworm", ix.Searched)
	}
}

func TestIndexFailsWhenNoSuiteYieldsAnIndex(t *testing.T) {
	f := standardArchive(t)
	// Truncated transfers: a size mismatch in every suite.
	f.mangle = func(p string, b []byte) []byte {
		if strings.Contains(p, "/binary-") {
			return b[:len(b)/2]
		}
		return b
	}
	a := f.open(t, tempCache(t), standardSources(f), nil)
	_, err := a.Index(t.Context(), "arm64", []string{"main"})
	if err == nil || !strings.Contains(err.Error(), "no suite yielded") || !strings.Contains(err.Error(), "bookworm-updates") {
		t.Fatalf("err = %v", err)
	}
}

func TestIndexFallsBackToGzipWhenXzIsMissing(t *testing.T) {
	f := newFakeArchive(t)
	f.addSuite(fakeSuite{name: "bookworm", indexes: map[string][]byte{
		"main/binary-arm64/Packages.xz": xzBytes(t, readTestdata(t, "Packages-bookworm-main-arm64")),
		"main/binary-arm64/Packages.gz": gzBytes(t, readTestdata(t, "Packages-bookworm-main-arm64")),
	}})
	f.remove("dists/bookworm/main/binary-arm64/Packages.xz")
	a := f.open(t, tempCache(t), []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
	ix, err := a.Index(t.Context(), "arm64", []string{"main"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Resolve("runc"); err != nil {
		t.Fatal(err)
	}
}

func TestIndexOfAnUnreachableMirrorSaysSo(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	uri := dead.URL + "/debian"
	dead.Close()
	c := tempCache(t)
	a, err := Open(t.Context(), Config{Sources: []Source{{URI: uri, Suites: []string{"bookworm"}}}, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = time.Millisecond
	_, err = a.Index(t.Context(), "arm64", []string{"main"})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	for _, want := range []string{"could not be reached", uri, "lock file needs no network"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestIndexRefusesReleasesThatCannotBeTrusted(t *testing.T) {
	idx := map[string][]byte{"main/binary-arm64/Packages.xz": xzBytes(t, readTestdata(t, "Packages-bookworm-main-arm64"))}
	cases := []struct {
		name  string
		setup func(f *fakeArchive)
		want  []string
	}{
		{"an InRelease signed by another key", func(f *fakeArchive) {
			f.addSuite(fakeSuite{name: "bookworm", indexes: idx})
			f.put("dists/bookworm/InRelease", clearsignWith(t, testKey(t), releaseText(fakeSuite{name: "bookworm", indexes: idx})))
		}, []string{"suite bookworm at", "not valid", "not signed by a Debian archive key"}},
		{"a Release without any signature", func(f *fakeArchive) {
			f.addSuite(fakeSuite{name: "bookworm", indexes: idx})
			f.remove("dists/bookworm/InRelease")
			f.put("dists/bookworm/Release", releaseText(fakeSuite{name: "bookworm", indexes: idx}))
		}, []string{"suite bookworm at", "unsigned"}},
		{"a Release.gpg over other content", func(f *fakeArchive) {
			f.addSuite(fakeSuite{name: "bookworm", indexes: idx})
			f.remove("dists/bookworm/InRelease")
			f.put("dists/bookworm/Release", releaseText(fakeSuite{name: "bookworm", indexes: idx}))
			f.put("dists/bookworm/Release.gpg", detachSign(t, f.key, []byte("something else")))
		}, []string{"suite bookworm at", "Release.gpg"}},
		{"a signed Release of another suite", func(f *fakeArchive) {
			f.addSuite(fakeSuite{name: "bookworm", codename: "trixie", indexes: idx})
		}, []string{"suite bookworm at", `describes "trixie"`}},
		{"an expired Release", func(f *fakeArchive) {
			f.addSuite(fakeSuite{name: "bookworm", validUntil: time.Now().Add(-time.Hour), indexes: idx})
		}, []string{"suite bookworm at", "expired"}},
		{"a suite the mirror does not have", func(f *fakeArchive) {}, []string{"suite bookworm at", "does not exist"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeArchive(t)
			tc.setup(f)
			a := f.open(t, tempCache(t), []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
			_, err := a.Index(t.Context(), "arm64", []string{"main"})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.want, f.URI()) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestIndexAcceptsADetachedSignature(t *testing.T) {
	f := newFakeArchive(t)
	idx := map[string][]byte{"main/binary-arm64/Packages.xz": xzBytes(t, readTestdata(t, "Packages-bookworm-main-arm64"))}
	f.addSuite(fakeSuite{name: "bookworm", indexes: idx})
	f.remove("dists/bookworm/InRelease")
	text := releaseText(fakeSuite{name: "bookworm", indexes: idx})
	f.put("dists/bookworm/Release", text)
	f.put("dists/bookworm/Release.gpg", detachSign(t, f.key, text))
	a := f.open(t, tempCache(t), []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
	if _, err := a.Index(t.Context(), "arm64", []string{"main"}); err != nil {
		t.Fatal(err)
	}
}

func TestIndexSkipsASuiteWithoutTheArchitecture(t *testing.T) {
	f := standardArchive(t)
	// Debian's security archive has no armel: it must be skipped with a
	// warning, not fail the index.
	f.addSuite(fakeSuite{name: "bookworm-security", archs: "amd64 arm64", indexes: map[string][]byte{
		"main/binary-arm64/Packages.xz": xzBytes(t, readTestdata(t, "Packages-bookworm-security-main-arm64")),
	}})
	f.addSuite(fakeSuite{name: "bookworm", archs: "all armel", indexes: map[string][]byte{
		"main/binary-armel/Packages.xz": xzBytes(t, []byte(strings.ReplaceAll(string(readTestdata(t, "Packages-bookworm-main-arm64")), "Architecture: arm64", "Architecture: armel"))),
	}})
	var events []Event
	a := f.open(t, tempCache(t), []Source{{URI: f.URI(), Suites: []string{"bookworm", "bookworm-security"}}}, &events)
	ix, err := a.Index(t.Context(), "armel", []string{"main"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Resolve("runc"); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(events, func(e Event) bool {
		return e.Kind == EventWarning && strings.Contains(e.Message, "bookworm-security") && strings.Contains(e.Message, "armel")
	}) {
		t.Errorf("no warning about bookworm-security lacking armel in %+v", events)
	}
}

func TestIndexNeedsSuites(t *testing.T) {
	f := standardArchive(t)
	a := f.open(t, tempCache(t), []Source{{URI: f.URI()}}, nil)
	_, err := a.Index(t.Context(), "arm64", []string{"main"})
	if err == nil || !strings.Contains(err.Error(), "ForRelease") {
		t.Fatalf("err = %v", err)
	}
}

func TestOpenNeedsACacheAndHTTPSources(t *testing.T) {
	if _, err := Open(context.Background(), Config{}); err == nil {
		t.Error("Open without a cache succeeded")
	}
	c, _ := cache.Open(t.TempDir())
	if _, err := Open(context.Background(), Config{Cache: c, Sources: []Source{{URI: "file:///srv/debian"}}}); err == nil || !strings.Contains(err.Error(), MirrorEnv) {
		t.Errorf("Open with a file: source: %v", err)
	}
}
