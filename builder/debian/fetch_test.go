package debian

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/cache"
)

const poolPath = "pool/main/h/hello/hello_1.0-1_arm64.deb"

// poolArchive serves one package file and returns its pin.
func poolArchive(t *testing.T) (*fakeArchive, Pin, []byte) {
	f := newFakeArchive(t)
	body := bytes.Repeat([]byte("a .deb, honestly "), 200000) // 3.4 MB: several progress events
	f.put(poolPath, body)
	return f, Pin{Name: "hello", Version: "1.0-1", Arch: "arm64", SHA256: sha(body), Size: int64(len(body)), Filename: poolPath, Suite: "bookworm", Component: "main"}, body
}

// noTempFiles fails if the cache holds anything but published entries.
func noTempFiles(t *testing.T, c *cache.Cache) {
	t.Helper()
	filepath.WalkDir(c.Root(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left in the cache: %s", p)
		}
		return nil
	})
}

func TestFetchDownloadsVerifiesAndReportsProgress(t *testing.T) {
	f, pin, body := poolArchive(t)
	c := tempCache(t)
	var events []Event
	a := f.open(t, c, []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, &events)
	path, err := a.Fetch(t.Context(), pin)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, body) {
		t.Fatal("fetched content differs")
	}
	var progress []int64
	for _, e := range events {
		if e.Kind == EventDownload {
			if e.Name != "hello" || e.Total != pin.Size {
				t.Errorf("event %+v", e)
			}
			progress = append(progress, e.Done)
		}
	}
	if len(progress) < 3 || progress[len(progress)-1] != pin.Size {
		t.Errorf("download progress %v, want several events ending at %d", progress, pin.Size)
	}
}

func TestFetchFromAWarmCacheMakesNoRequest(t *testing.T) {
	f, pin, body := poolArchive(t)
	c := tempCache(t)
	if _, err := c.Put(pin.SHA256, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	a := f.open(t, c, []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
	if _, err := a.Fetch(t.Context(), pin); err != nil {
		t.Fatal(err)
	}
	if reqs := f.requests(); len(reqs) != 0 {
		t.Fatalf("warm cache made requests: %v", reqs)
	}
	// And without any source configured at all.
	offline, err := Open(t.Context(), Config{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := offline.Fetch(t.Context(), pin); err != nil {
		t.Fatalf("offline fetch from a warm cache: %v", err)
	}
}

func TestFetchOfMismatchingContentKeepsNothing(t *testing.T) {
	f, pin, body := poolArchive(t)
	pin.SHA256 = sha(append([]byte("other"), body[5:]...)) // same size, other digest
	c := tempCache(t)
	a := f.open(t, c, []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
	_, err := a.Fetch(t.Context(), pin)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"fetch hello (arm64)", "sha256 mismatch", poolPath, "deleted", "run the build again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if _, ok := c.Path(pin.SHA256); ok {
		t.Error("mismatching content is in the cache")
	}
	if _, ok := c.Path(sha(body)); ok {
		t.Error("the served content was cached under its own digest")
	}
	noTempFiles(t, c)
}

func TestFetchOfAWrongSizeKeepsNothing(t *testing.T) {
	f, pin, _ := poolArchive(t)
	pin.Size -= 10
	c := tempCache(t)
	a := f.open(t, c, []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
	_, err := a.Fetch(t.Context(), pin)
	if err == nil || !strings.Contains(err.Error(), "size mismatch") {
		t.Fatalf("err = %v, want a size mismatch", err)
	}
	noTempFiles(t, c)
}

func TestFetchReplacesACorruptCacheEntry(t *testing.T) {
	f, pin, body := poolArchive(t)
	c := tempCache(t)
	path, err := c.Put(pin.SHA256, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	fh, _ := os.OpenFile(path, os.O_RDWR, 0)
	fh.WriteAt([]byte("bit rot"), 4096)
	fh.Close()
	var events []Event
	a := f.open(t, c, []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, &events)
	got, err := a.Fetch(t.Context(), pin)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(got)
	if !bytes.Equal(data, body) {
		t.Fatal("corrupt entry was returned")
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d requests, want exactly one re-download", n)
	}
	found := false
	for _, e := range events {
		found = found || (e.Kind == EventWarning && strings.Contains(e.Message, "corrupt"))
	}
	if !found {
		t.Errorf("no warning about the corrupt entry in %+v", events)
	}
}

func TestFetchFromAnUnreachableMirrorWithAColdCache(t *testing.T) {
	_, pin, _ := poolArchive(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	uri := dead.URL + "/debian"
	dead.Close()
	c := tempCache(t)
	a, err := Open(t.Context(), Config{Sources: []Source{{URI: uri, Suites: []string{"bookworm"}}}, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = time.Millisecond
	_, err = a.Fetch(t.Context(), pin)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	for _, want := range []string{"fetch hello (arm64)", "could not be reached", uri, "warm download cache and a lock file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	// Without any source, the error says how to configure one.
	offline, _ := Open(t.Context(), Config{Cache: c})
	if _, err := offline.Fetch(t.Context(), pin); err == nil || !strings.Contains(err.Error(), MirrorEnv) {
		t.Errorf("offline cold fetch: %v", err)
	}
}

func TestFetchOfAPackageGoneFromEveryMirror(t *testing.T) {
	f, pin, _ := poolArchive(t)
	f.remove(poolPath)
	a := f.open(t, tempCache(t), []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
	_, err := a.Fetch(t.Context(), pin)
	if err == nil || !strings.Contains(err.Error(), "superseded") || !strings.Contains(err.Error(), "make lock") {
		t.Fatalf("err = %v", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("a 404 was retried: %d requests", n)
	}
}

func TestFetchTriesTheSourceOfThePinnedSuiteFirst(t *testing.T) {
	other, _, _ := poolArchive(t)
	f, pin, _ := poolArchive(t)
	pin.Suite = "bookworm-security"
	srcs := []Source{
		{URI: other.URI(), Suites: []string{"bookworm"}},
		{URI: f.URI(), Suites: []string{"bookworm-security"}},
	}
	a := f.open(t, tempCache(t), srcs, nil)
	if _, err := a.Fetch(t.Context(), pin); err != nil {
		t.Fatal(err)
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("the source of another suite was asked first (%d requests)", n)
	}
	// When that source fails, the others are tried.
	f.remove(poolPath)
	a = f.open(t, tempCache(t), srcs, nil)
	if _, err := a.Fetch(t.Context(), pin); err != nil {
		t.Fatalf("fallback to another source: %v", err)
	}
	if n := len(other.requests()); n != 1 {
		t.Errorf("fallback source asked %d times, want 1", n)
	}
}

func TestFetchStopsWhenTheContextIsCancelled(t *testing.T) {
	_, pin, body := poolArchive(t)
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body[:1<<20])
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done() // stall until the client gives up
	}))
	defer srv.Close()
	c := tempCache(t)
	a, _ := Open(t.Context(), Config{Sources: []Source{{URI: srv.URL, Suites: []string{"bookworm"}}}, Cache: c})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	done := make(chan error)
	go func() {
		_, err := a.Fetch(ctx, pin)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Fetch did not return after cancellation")
	}
	if _, ok := c.Path(pin.SHA256); ok {
		t.Error("a cancelled download was cached")
	}
	noTempFiles(t, c)
}

func TestFetchRefusesMalformedPins(t *testing.T) {
	f, pin, _ := poolArchive(t)
	a := f.open(t, tempCache(t), []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, nil)
	for name, mod := range map[string]func(p *Pin){
		"short digest":         func(p *Pin) { p.SHA256 = "abc" },
		"no size":              func(p *Pin) { p.Size = 0 },
		"filename leaving":     func(p *Pin) { p.Filename = "../../etc/passwd" },
		"absolute filename":    func(p *Pin) { p.Filename = "/etc/passwd" },
		"upper-case digest":    func(p *Pin) { p.SHA256 = strings.ToUpper(p.SHA256) },
		"missing the filename": func(p *Pin) { p.Filename = "" },
	} {
		p := pin
		mod(&p)
		if _, err := a.Fetch(t.Context(), p); err == nil || !strings.Contains(err.Error(), "make lock") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("malformed pins caused %d requests", n)
	}
}

func TestFetchRetriesServerErrorsButNotMissingFiles(t *testing.T) {
	f, pin, _ := poolArchive(t)
	var mu sync.Mutex
	failures := 2
	f.status = func(p string) int {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return http.StatusServiceUnavailable
		}
		return 0
	}
	var events []Event
	a := f.open(t, tempCache(t), []Source{{URI: f.URI(), Suites: []string{"bookworm"}}}, &events)
	if _, err := a.Fetch(t.Context(), pin); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d requests, want 2 failures and a success", n)
	}
	retries := 0
	for _, e := range events {
		if e.Kind == EventRetry && strings.Contains(e.Message, "503") {
			retries++
		}
	}
	if retries != 2 {
		t.Errorf("%d retry events, want 2", retries)
	}
}
