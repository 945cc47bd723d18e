package tests

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// appRegistry is an in-memory OCI registry (go-containerregistry's
// pkg/registry) on the host's loopback interface. QEMU's user network
// turns a guest's connection to 10.0.2.2 into one to the host's 127.0.0.1,
// so guests reach it at 10.0.2.2:<Port> and nothing outside the machine
// can.
type appRegistry struct {
	Port string
}

func startAppRegistry(t *testing.T) *appRegistry {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return &appRegistry{Port: port}
}

// GuestRef is the reference a guest uses for repoTag.
func (r *appRegistry) GuestRef(repoTag string) string { return "10.0.2.2:" + r.Port + "/" + repoTag }

// PushIndex uploads one image per platform as a multi-platform index.
func (r *appRegistry) PushIndex(t *testing.T, repoTag string, imgs map[string]v1.Image) {
	t.Helper()
	var adds []mutate.IndexAddendum
	for arch, img := range imgs {
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	tag, err := name.NewTag("127.0.0.1:"+r.Port+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatalf("push %s: %v", tag, err)
	}
}

// webappImage packs tests/testdata/webapp, compiled for goarch, into a
// one-layer OCI image: /webapp as the entrypoint and an empty /data for
// its volume.
func webappImage(t *testing.T, goarch string) v1.Image {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "webapp")
	cmd := exec.Command(webappGo(), "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/webapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the webapp for %s: %v\n%s", goarch, err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for _, h := range []*tar.Header{
		{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime},
		{Name: "webapp", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body)), ModTime: mtime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Write(body)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch
	cf.Created = v1.Time{Time: mtime.UTC()}
	cf.Config = v1.Config{
		Entrypoint: []string{"/webapp"},
		Cmd:        []string{"-listen", ":80"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: "/",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// webappGo is the go command of the toolchain running the tests.
func webappGo() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}
