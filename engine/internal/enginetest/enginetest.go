// Package enginetest holds what the engine's tests share: the test
// program compiled per architecture, images built from it in memory, a
// go-containerregistry registry with fault injection, network namespaces
// that keep test traffic off the host, and a daemon started as a real
// process. It must never be imported by non-test code.
package enginetest

import (
	"archive/tar"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RequireRoot fails (not skips: CI runs as root and must run these) when
// the test is not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (mounts, namespaces, runc): run go test as root")
	}
}

func srcDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file) // engine/internal/enginetest
}

// ModuleRoot is the repository root.
func ModuleRoot() string { return filepath.Join(srcDir(), "..", "..", "..") }

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
	buildDir   string
)

// GoBinary is the go command of the toolchain running the tests.
func GoBinary() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Build compiles the main package pkg (relative to the module root) for
// goarch/goarm with CGO_ENABLED=0 and returns the binary's path. Results are
// cached for the life of the test process.
func Build(t testing.TB, pkg, goarch, goarm string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := pkg + "|" + goarch + "|" + goarm
	if p, ok := buildCache[key]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "bulkhead-enginetest-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, strings.NewReplacer("/", "_", "|", "_").Replace(key))
	cmd := exec.Command(GoBinary(), "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./"+pkg)
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if goarm != "" {
		cmd.Env = append(cmd.Env, "GOARM="+goarm)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s for %s: %v\n%s", pkg, goarch, err, b)
	}
	buildCache[key] = out
	return out
}

// CleanupBuilds removes the binaries Build made; call it from TestMain.
func CleanupBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// File is one entry of a test layer.
type File struct {
	Name     string
	Body     []byte
	Mode     int64
	Type     byte // tar.TypeReg when zero
	Linkname string
}

// LayerOf packs files into a gzip layer.
func LayerOf(t testing.TB, files ...File) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		typ := f.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: f.Name, Typeflag: typ, Mode: mode, Linkname: f.Linkname, ModTime: time.Unix(1700000000, 0)}
		if typ == tar.TypeReg {
			h.Size = int64(len(f.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write(f.Body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ImageOf stacks layers on an empty OCI image with the given config and
// platform.
func ImageOf(t testing.TB, p v1.Platform, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config = cfg
	cf.Created = v1.Time{Time: time.Unix(1700000000, 0).UTC()}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// AppImage is the standard test image: /testapp for the platform as the
// entrypoint, "sleep" as the default command, a /data directory and an
// /etc/passwd with root and a "app" user (uid 1000).
func AppImage(t testing.TB, p v1.Platform, extra ...File) v1.Image {
	t.Helper()
	goarm := ""
	if p.Architecture == "arm" {
		goarm = strings.TrimPrefix(p.Variant, "v")
	}
	bin, err := os.ReadFile(Build(t, "engine/internal/testapp", p.Architecture, goarm))
	if err != nil {
		t.Fatal(err)
	}
	base := LayerOf(t,
		File{Name: "etc/", Type: tar.TypeDir},
		File{Name: "etc/passwd", Body: []byte("root:x:0:0:root:/root:/testapp\napp:x:1000:1000:app:/home/app:/testapp\n")},
		File{Name: "etc/group", Body: []byte("root:x:0:\napp:x:1000:\n")},
		File{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		File{Name: "data/", Type: tar.TypeDir},
	)
	files := append([]File{{Name: "testapp", Body: bin, Mode: 0o755}}, extra...)
	app := LayerOf(t, files...)
	return ImageOf(t, p, v1.Config{
		Entrypoint: []string{"/testapp"},
		Cmd:        []string{"sleep"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from-image"},
		WorkingDir: "/",
		Labels:     map[string]string{"org.bulkhead.test": "app"},
	}, base, app)
}

// Amd64 is the platform the host tests run containers for.
var Amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// Faults injects failures into the blob downloads of a Registry.
type Faults struct {
	mu        sync.Mutex
	drops     int   // blob responses still to cut
	dropAfter int64 // bytes sent before a cut
	rate      int64 // bytes per second per blob response, 0 = unlimited
	blocked   map[string]bool

	BlobGets atomic.Int64 // blob GETs served (cut ones included)
	Dropped  atomic.Int64 // responses cut
}

// DropBlobs makes the next n blob responses end abruptly after `after`
// bytes, like a flaky cellular link.
func (f *Faults) DropBlobs(n int, after int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drops, f.dropAfter = n, after
}

// Block makes GETs of the blob with digest answer 404 until Unblock.
func (f *Faults) Block(digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blocked == nil {
		f.blocked = map[string]bool{}
	}
	f.blocked[digest] = true
}

// Unblock lifts Block.
func (f *Faults) Unblock(digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.blocked, digest)
}

// Throttle limits each blob response to bytesPerSec (0 lifts the limit).
func (f *Faults) Throttle(bytesPerSec int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = bytesPerSec
}

type faultWriter struct {
	http.ResponseWriter
	f    *Faults
	sent int64
	rate int64
}

// cutAt returns where the response being written must be cut, or -1. A
// drop is used up only when a response actually reaches the cut, so small
// blobs (configs) pass through without consuming one.
func (w *faultWriter) cutAt(next int64) int64 {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.f.drops > 0 && w.sent+next > w.f.dropAfter {
		w.f.drops--
		return w.f.dropAfter
	}
	return -1
}

func (w *faultWriter) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		chunk := b
		if w.rate > 0 && int64(len(chunk)) > w.rate/20 {
			chunk = chunk[:max(w.rate/20, 1)]
		}
		if cut := w.cutAt(int64(len(chunk))); cut >= 0 {
			chunk = chunk[:max(cut-w.sent, 0)]
			n, _ := w.ResponseWriter.Write(chunk)
			w.sent += int64(n)
			if fl, ok := w.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
			w.f.Dropped.Add(1)
			// net/http closes the connection without finishing the body:
			// the client sees an unexpected EOF mid-layer.
			panic(http.ErrAbortHandler)
		}
		n, err := w.ResponseWriter.Write(chunk)
		w.sent += int64(n)
		total += n
		if err != nil {
			return total, err
		}
		b = b[len(chunk):]
		if w.rate > 0 {
			if fl, ok := w.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
			time.Sleep(time.Duration(int64(len(chunk)) * int64(time.Second) / w.rate))
		}
	}
	return total, nil
}

func (f *Faults) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			h.ServeHTTP(w, r)
			return
		}
		f.BlobGets.Add(1)
		f.mu.Lock()
		fw := &faultWriter{ResponseWriter: w, f: f, rate: f.rate}
		blocked := f.blocked[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]
		f.mu.Unlock()
		if blocked {
			http.Error(w, "blocked by the test", http.StatusNotFound)
			return
		}
		h.ServeHTTP(fw, r)
	})
}

// Registry is an in-memory OCI registry on a loopback address.
type Registry struct {
	Server *httptest.Server
	Host   string // host:port, as used in image references
	Faults *Faults
}

// NewRegistry serves a registry on l (a loopback listener; nil means a new
// one on 127.0.0.1 in the current network namespace).
func NewRegistry(t testing.TB, l net.Listener) *Registry {
	t.Helper()
	f := &Faults{}
	h := f.wrap(registry.New(registry.Logger(nopLogger())))
	srv := httptest.NewUnstartedServer(h)
	if l != nil {
		srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &Registry{Server: srv, Host: strings.TrimPrefix(srv.URL, "http://"), Faults: f}
}

// Push uploads img as repo:tag (repo without the host) and returns the full
// reference.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref := r.Host + "/" + repoTag
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// PushIndex uploads a multi-platform index of imgs as repo:tag.
func (r *Registry) PushIndex(t testing.TB, repoTag string, imgs ...v1.Image) string {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	ref := r.Host + "/" + repoTag
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	return ref
}

// WaitFor polls cond every 50ms until it is true or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
