package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/google/go-containerregistry/pkg/registry"
)

var fastRetry = Retry{Attempts: 5, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Stall: 300 * time.Millisecond}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 % 251)
	}
	return b
}

// dropper serves data with http.ServeContent (Range, If-Range, ETag) but
// cuts the connection after cut bytes of the first `drops` responses.
type dropper struct {
	data     []byte
	etag     string
	cut      int
	drops    int32
	ranges   bool // honour Range
	stall    bool // hang instead of closing
	requests atomic.Int32
	ranged   atomic.Int32
}

func (d *dropper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := d.requests.Add(1)
	if r.Header.Get("Range") != "" {
		d.ranged.Add(1)
	}
	if d.etag != "" {
		w.Header().Set("ETag", d.etag)
	}
	if !d.ranges {
		r.Header.Del("Range")
	}
	if n <= d.drops {
		// Send the headers of a full response, part of the body, then
		// break the connection (or go silent).
		w.Header().Set("Content-Length", fmt.Sprint(len(d.data)))
		w.WriteHeader(http.StatusOK)
		w.Write(d.data[:d.cut])
		w.(http.Flusher).Flush()
		if d.stall {
			<-r.Context().Done()
			return
		}
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	}
	http.ServeContent(w, r, "b.bundle", time.Unix(1_700_000_000, 0), bytes.NewReader(d.data))
}

func readAll(t *testing.T, s Source) ([]byte, int64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rc, size, err := s.Open(ctx)
	if err != nil {
		return nil, -1, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, size, err
}

func TestHTTPResumesAfterDroppedConnections(t *testing.T) {
	data := payload(3 << 20)
	tests := []struct {
		name      string
		d         *dropper
		wantRange bool
	}{
		{"a dropped connection resumes with a Range request", &dropper{data: data, etag: `"v1"`, cut: 1 << 20, drops: 1, ranges: true}, true},
		{"three drops in a row still finish", &dropper{data: data, etag: `"v1"`, cut: 100000, drops: 3, ranges: true}, true},
		{"a server without validators still resumes", &dropper{data: data, cut: 777777, drops: 1, ranges: true}, true},
		{"a server that ignores Range is resumed by skipping", &dropper{data: data, etag: `"v1"`, cut: 1 << 20, drops: 1, ranges: false}, true},
		{"a stalled connection is cut and resumed", &dropper{data: data, etag: `"v1"`, cut: 500000, drops: 1, ranges: true, stall: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.d)
			defer srv.Close()
			got, size, err := readAll(t, &HTTP{URL: srv.URL + "/b.bundle", Retry: fastRetry})
			if err != nil {
				t.Fatalf("download: %v", err)
			}
			if size != int64(len(data)) || !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes (size %d), want the %d served", len(got), size, len(data))
			}
			if tc.wantRange && tc.d.ranged.Load() == 0 {
				t.Fatal("no Range request was made")
			}
			t.Logf("%d requests, %d with Range", tc.d.requests.Load(), tc.d.ranged.Load())
		})
	}
}

func TestHTTPRefusesABundleThatChangedMidDownload(t *testing.T) {
	data := payload(1 << 20)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("ETag", `"old"`)
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.WriteHeader(200)
			w.Write(data[:1000])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		w.Header().Set("ETag", `"new"`)
		http.ServeContent(w, r, "b", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	_, _, err := readAll(t, &HTTP{URL: srv.URL, Retry: fastRetry})
	if err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("download of a changing bundle: %v, want an error saying it changed", err)
	}
}

func TestHTTPGivesUpWithoutProgress(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	_, _, err := readAll(t, &HTTP{URL: srv.URL, Retry: fastRetry})
	if err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("download from a failing server: %v, want it to give up", err)
	}
	// The cut is the first failure; Attempts-1 reconnections follow.
	if got := n.Load(); got != int32(fastRetry.Attempts) {
		t.Errorf("%d requests, want %d", got, fastRetry.Attempts)
	}
}

func TestHTTPNotFoundFailsAtOnce(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, _, err := readAll(t, &HTTP{URL: srv.URL + "/missing.bundle", Retry: fastRetry})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("download of a missing bundle: %v", err)
	}
}

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b.bundle")
	os.WriteFile(p, []byte("bytes"), 0o644)
	got, size, err := readAll(t, File{Path: p})
	if err != nil || size != 5 || string(got) != "bytes" {
		t.Fatalf("file source: %q %d %v", got, size, err)
	}
	if _, _, err := readAll(t, File{Path: t.TempDir()}); err == nil {
		t.Fatal("a directory opened as a bundle")
	}
}

func TestParseSpec(t *testing.T) {
	for in, want := range map[string]Spec{
		"https://u.example/os.bundle":  {KindHTTP, "https://u.example/os.bundle"},
		"/data/os.bundle":              {KindFile, "/data/os.bundle"},
		"file:///data/os.bundle":       {KindFile, "/data/os.bundle"},
		"registry.example/fleet/os:v2": {KindOCI, "registry.example/fleet/os:v2"},
		"oci://127.0.0.1:5000/os:v2":   {KindOCI, "127.0.0.1:5000/os:v2"},
	} {
		if got, err := ParseSpec(in); err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := ParseSpec("os.bundle"); err == nil {
		t.Error("a relative name parsed")
	}
}

// registryServer runs go-containerregistry's registry on 127.0.0.1; with
// dropFirstBlob, the first GET of a large blob is cut halfway.
func registryServer(t *testing.T, dropFirstBlob bool) (host string, blobGets *atomic.Int32) {
	reg := registry.New(registry.Logger(nilLogger()))
	blobGets = &atomic.Int32{}
	var dropped atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			blobGets.Add(1)
			if dropFirstBlob && r.Header.Get("Range") == "" && !dropped.Load() {
				rec := httptest.NewRecorder()
				reg.ServeHTTP(rec, r)
				if rec.Body.Len() > 100000 {
					dropped.Store(true)
					for k, v := range rec.Header() {
						w.Header()[k] = v
					}
					w.WriteHeader(rec.Code)
					w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
					w.(http.Flusher).Flush()
					conn, _, _ := w.(http.Hijacker).Hijack()
					conn.Close()
					return
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes())
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), blobGets
}

func TestOCIPublishAndPullPerBoard(t *testing.T) {
	host, _ := registryServer(t, true)
	_, priv := bundletest.DevKey(t)
	dir := t.TempDir()
	ref := host + "/fleet/os:stable"
	files := map[string][]byte{}
	for i, board := range []string{"raspberrypi3", "qemu-aarch64", "x86_64"} {
		m := bundletest.Manifest(board, "2.0.0")
		m.Payload.Compression = bundle.CompressionNone // big enough to cut
		if board == "x86_64" {
			m.Arch = "amd64"
		}
		b, _ := bundletest.Make(t, m, bundletest.Image(400<<10, byte(i)), priv)
		p := filepath.Join(dir, board+".bundle")
		os.WriteFile(p, b, 0o644)
		files[board] = b
		if _, err := bundle.Publish(context.Background(), ref, p); err != nil {
			t.Fatalf("publish %s: %v", board, err)
		}
	}
	// Republishing a board replaces its entry instead of adding one.
	if _, err := bundle.Publish(context.Background(), ref, filepath.Join(dir, "x86_64.bundle")); err != nil {
		t.Fatal(err)
	}
	for board, want := range files {
		t.Run(board, func(t *testing.T) {
			pub, err := bundle.Resolve(context.Background(), ref, board)
			if err != nil {
				t.Fatal(err)
			}
			if pub.Manifest.Board != board || pub.Size != int64(len(want)) {
				t.Fatalf("resolved %+v", pub)
			}
			got, size, err := readAll(t, &OCI{Ref: ref, Board: board, Retry: fastRetry})
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if size != int64(len(want)) || sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("pulled %d bytes, want the %d published", len(got), len(want))
			}
		})
	}
	_, _, err := readAll(t, &OCI{Ref: ref, Board: "raspberrypi0", Retry: fastRetry})
	if err == nil || !strings.Contains(err.Error(), "no bundle for board raspberrypi0") {
		t.Fatalf("pull for an unpublished board: %v", err)
	}
}

func TestOCIPullOfASingleImageReference(t *testing.T) {
	host, _ := registryServer(t, false)
	_, priv := bundletest.DevKey(t)
	b, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", "3.0.0"), bundletest.Image(10<<10, 9), priv)
	p := filepath.Join(t.TempDir(), "x.bundle")
	os.WriteFile(p, b, 0o644)
	ref := host + "/fleet/os:v3"
	if _, err := bundle.Publish(context.Background(), ref, p); err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.Resolve(context.Background(), ref, "raspberrypi3")
	if err != nil {
		t.Fatal(err)
	}
	// Pull by the image's digest-less blob reference is not a thing; pull
	// the tag by digest of the index instead, as a fleet pinning a release
	// would.
	got, _, err := readAll(t, &OCI{Ref: ref, Board: "raspberrypi3", Retry: fastRetry})
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("pull: %v (%d bytes)", err, len(got))
	}
	if pub.Manifest.Version != "3.0.0" {
		t.Errorf("config manifest %+v", pub.Manifest)
	}
}

func TestHTTPSVerifiesCertificates(t *testing.T) {
	data := payload(100000)
	srv := httptest.NewTLSServer(&dropper{data: data, etag: `"v"`, cut: 50000, drops: 1, ranges: true})
	defer srv.Close()
	// The default client trusts the system roots only: the test server's
	// self-signed certificate is refused.
	if _, _, err := readAll(t, &HTTP{URL: srv.URL, Retry: fastRetry}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("self-signed server with the default client: %v, want a certificate error", err)
	}
	// A client that trusts it downloads (and resumes) over TLS.
	got, _, err := readAll(t, &HTTP{URL: srv.URL, Client: srv.Client(), Retry: fastRetry})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("TLS download: %v", err)
	}
}

// TestHTTPWaitsForTheNetworkAtStart: a download restarted at boot (after
// a power cut) may start before the link is up; the first connection is
// retried like any resumption, and a server that never answers ends it.
func TestHTTPWaitsForTheNetworkAtStart(t *testing.T) {
	// A port nothing listens on yet: connection refused, as before DHCP.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	data := payload(4096)
	go func() {
		time.Sleep(30 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		http.Serve(l, &dropper{data: data, ranges: true})
	}()
	got, _, err := readAll(t, &HTTP{URL: "http://" + addr + "/b.bundle", Retry: Retry{Attempts: 8, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Stall: time.Second}})
	if err != nil {
		t.Fatalf("download once the server comes up: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("got %d bytes, want the %d served", len(got), len(data))
	}

	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	_, _, err = readAll(t, &HTTP{URL: "http://" + dead + "/b.bundle", Retry: fastRetry})
	if err == nil || !strings.Contains(err.Error(), "gave up after 5 attempts") {
		t.Errorf("download from a server that never comes up: %v, want it to give up after %d attempts", err, fastRetry.Attempts)
	}
}
