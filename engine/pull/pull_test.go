package pull

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/engine/archive"
	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
	"github.com/bulkhead-os/bulkhead/engine/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	enginetest.CleanupBuilds()
	os.Exit(code)
}

func newPuller(t *testing.T, dir string, p v1.Platform) (*store.Store, *Puller) {
	t.Helper()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, New(s, Options{Platform: p, Backoff: 10 * time.Millisecond})
}

func TestPullExtractsLayersAndRecordsTheImage(t *testing.T) {
	enginetest.RequireRoot(t)
	reg := enginetest.NewRegistry(t, nil)
	ref := reg.Push(t, "test/app:1", enginetest.AppImage(t, enginetest.Amd64))
	s, p := newPuller(t, t.TempDir(), enginetest.Amd64)

	var events []Event
	im, err := p.Pull(context.Background(), ref, nil, func(e Event) { events = append(events, e) })
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Layers) != 2 || len(im.RepoTags) != 1 || im.RepoTags[0] != ref {
		t.Fatalf("image = %d layers, tags %v", len(im.Layers), im.RepoTags)
	}
	bin := filepath.Join(s.LayerDir(im.Layers[1].DiffID), "testapp")
	if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("extracted testapp: %v %v", fi, err)
	}
	if out, err := exec.Command(bin, "echo", "hi").Output(); err != nil || string(out) != "hi\n" {
		t.Fatalf("extracted binary does not run: %q %v", out, err)
	}
	got, err := s.Resolve(ref)
	if err != nil || got.ID != im.ID {
		t.Fatalf("resolve %s: %v", ref, err)
	}

	// The same image again: every layer is found by diffID, nothing is
	// downloaded.
	gets := reg.Faults.BlobGets.Load()
	events = nil
	if _, err := p.Pull(context.Background(), ref, nil, func(e Event) { events = append(events, e) }); err != nil {
		t.Fatal(err)
	}
	if n := reg.Faults.BlobGets.Load() - gets; n != 1 { // the config blob only
		t.Errorf("re-pull fetched %d blobs, want only the config", n)
	}
	exists := 0
	for _, e := range events {
		if e.Status == "Already exists" {
			exists++
		}
	}
	if exists != 2 {
		t.Errorf("re-pull reported %d layers as existing, want 2: %+v", exists, events)
	}
}

func TestPullSelectsTheBoardPlatformFromAnIndex(t *testing.T) {
	enginetest.RequireRoot(t)
	reg := enginetest.NewRegistry(t, nil)
	arm6 := v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	ref := reg.PushIndex(t, "test/multi:1",
		enginetest.AppImage(t, enginetest.Amd64), enginetest.AppImage(t, arm6), enginetest.AppImage(t, arm64))

	tests := []struct {
		device v1.Platform
		want   string
	}{
		{enginetest.Amd64, "linux/amd64"},
		{arm64, "linux/arm64"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, "linux/arm/v6"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "linux/arm/v6"}, // an armv7 board runs v6 code
	}
	for _, tc := range tests {
		t.Run(FormatPlatform(tc.device), func(t *testing.T) {
			_, p := newPuller(t, t.TempDir(), tc.device)
			im, err := p.Pull(context.Background(), ref, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if im.Platform != tc.want {
				t.Errorf("pulled %s, want %s", im.Platform, tc.want)
			}
		})
	}

	_, p := newPuller(t, t.TempDir(), v1.Platform{OS: "linux", Architecture: "riscv64"})
	_, err := p.Pull(context.Background(), ref, nil, nil)
	if !errors.Is(err, ErrNoPlatform) || !strings.Contains(err.Error(), "linux/arm/v6") || !strings.Contains(err.Error(), "linux/riscv64") {
		t.Errorf("err = %v, want ErrNoPlatform naming what the image offers and what the device needs", err)
	}

	single := reg.Push(t, "test/armonly:1", enginetest.AppImage(t, arm64))
	_, p = newPuller(t, t.TempDir(), enginetest.Amd64)
	if _, err := p.Pull(context.Background(), single, nil, nil); !errors.Is(err, ErrNoPlatform) {
		t.Errorf("pulling an arm64-only image on amd64: err = %v, want ErrNoPlatform", err)
	}
}

func TestPullRetriesWhenTheRegistryDropsConnectionsMidLayer(t *testing.T) {
	enginetest.RequireRoot(t)
	reg := enginetest.NewRegistry(t, nil)
	big, err := random.Layer(2<<20, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/flaky:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{Cmd: []string{"x"}}, big))
	s, p := newPuller(t, t.TempDir(), enginetest.Amd64)
	// Three cut responses, 100 KiB into the layer each time.
	reg.Faults.DropBlobs(3, 100<<10)
	im, err := p.Pull(context.Background(), ref, nil, nil)
	if err != nil {
		t.Fatalf("pull through a flaky registry: %v", err)
	}
	if reg.Faults.Dropped.Load() != 3 {
		t.Errorf("registry cut %d responses, want 3", reg.Faults.Dropped.Load())
	}
	if !s.HasLayer(im.Layers[0].DiffID) {
		t.Error("layer missing after the retried pull")
	}
	if ents, _ := s.StagingEntries(); len(ents) != 0 {
		t.Errorf("staging holds %v after a successful pull", ents)
	}
}

func TestPullGivesUpWithContextWhenTheRegistryNeverDelivers(t *testing.T) {
	enginetest.RequireRoot(t)
	reg := enginetest.NewRegistry(t, nil)
	big, _ := random.Layer(1<<20, types.OCILayer)
	ref := reg.Push(t, "test/broken:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{}, big))
	s, p := newPuller(t, t.TempDir(), enginetest.Amd64)
	reg.Faults.DropBlobs(100, 1000)
	_, err := p.Pull(context.Background(), ref, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "gave up after 5 attempts") {
		t.Fatalf("err = %v, want a give-up error", err)
	}
	if len(s.Images()) != 0 {
		t.Error("a failed pull left an image")
	}
	if ents, _ := s.StagingEntries(); len(ents) != 0 {
		t.Errorf("staging holds %v after a failed pull", ents)
	}
}

func TestPullRejectsACraftedLayerAndWritesNothingOutside(t *testing.T) {
	enginetest.RequireRoot(t)
	reg := enginetest.NewRegistry(t, nil)
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	os.Mkdir(victim, 0o755)
	tests := []struct {
		name  string
		files []enginetest.File
	}{
		{"dot-dot path", []enginetest.File{{Name: "../../../../../../" + strings.TrimPrefix(victim, "/") + "/pwned", Body: []byte("x")}}},
		{"escaping symlink then write through it", []enginetest.File{
			{Name: "esc", Type: tar.TypeSymlink, Linkname: "../../../../../../../../" + strings.TrimPrefix(victim, "/")},
			{Name: "esc/pwned", Body: []byte("x")},
		}},
		{"hardlink out of the layer", []enginetest.File{{Name: "h", Type: tar.TypeLink, Linkname: "../../../../etc/passwd"}}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(base, "root", tc.name)
			ref := reg.Push(t, "test/evil:"+string(rune('a'+i)), enginetest.ImageOf(t, enginetest.Amd64, v1.Config{}, enginetest.LayerOf(t, tc.files...)))
			s, p := newPuller(t, root, enginetest.Amd64)
			_, err := p.Pull(context.Background(), ref, nil, nil)
			if !errors.Is(err, archive.ErrUnsafe) {
				t.Fatalf("err = %v, want archive.ErrUnsafe", err)
			}
			if reg.Faults.Dropped.Load() != 0 {
				t.Fatal("unexpected drops")
			}
			if ents, _ := os.ReadDir(victim); len(ents) != 0 {
				t.Errorf("files appeared outside the layer: %v", ents)
			}
			if len(s.Images()) != 0 || s.Usage().LayersSize != 0 {
				t.Error("the rejected layer left an image or a layer behind")
			}
			if ents, _ := s.StagingEntries(); len(ents) != 0 {
				t.Errorf("staging holds %v after the rejection", ents)
			}
		})
	}
}

func TestPullOntoAFullDataPartitionFailsClearlyAndLeavesTheStoreConsistent(t *testing.T) {
	enginetest.RequireRoot(t)
	dir := t.TempDir()
	// A 6 MiB tmpfs stands in for a nearly full data partition.
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=6m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	reg := enginetest.NewRegistry(t, nil)
	small := enginetest.AppImage(t, enginetest.Amd64)
	smallRef := reg.Push(t, "test/small:1", small)
	big1, _ := random.Layer(3<<20, types.OCILayer)
	big2, _ := random.Layer(3<<20, types.OCILayer)
	bigRef := reg.Push(t, "test/big:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{}, big1, big2))

	s, p := newPuller(t, filepath.Join(dir, "engine"), enginetest.Amd64)
	if _, err := p.Pull(context.Background(), smallRef, nil, nil); err != nil {
		t.Fatalf("the small image should fit: %v", err)
	}
	_, err := p.Pull(context.Background(), bigRef, nil, nil)
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "free space") {
		t.Fatalf("err = %v, want ErrDiskFull with a fix", err)
	}
	if ents, _ := s.StagingEntries(); len(ents) != 0 {
		t.Errorf("staging holds %v after the failed pull", ents)
	}
	// The store is still consistent: reopening it finds exactly the small
	// image, whose files are intact.
	s2, err := store.Open(filepath.Join(dir, "engine"))
	if err != nil {
		t.Fatal(err)
	}
	ims := s2.Images()
	if len(ims) != 1 || ims[0].RepoTags[0] != smallRef {
		t.Fatalf("images after the failed pull: %+v", ims)
	}
	if _, err := s2.Resolve(bigRef); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the failed image is visible: %v", err)
	}
	// Freeing space (removing the small image) lets the big pull succeed.
	if _, err := s2.Remove(smallRef, false, nil); err != nil {
		t.Fatal(err)
	}
	p2 := New(s2, Options{Platform: enginetest.Amd64})
	if _, err := p2.Pull(context.Background(), bigRef, nil, nil); err != nil {
		// 6 MiB of random data in 6 MiB of tmpfs does not fit either: what
		// matters is the same clean error, not a corrupt store.
		if !errors.Is(err, ErrDiskFull) {
			t.Fatalf("second attempt: %v", err)
		}
	}
}

func TestRepullResumesFromTheLayersAlreadyComplete(t *testing.T) {
	enginetest.RequireRoot(t)
	reg := enginetest.NewRegistry(t, nil)
	l1, _ := random.Layer(256<<10, types.OCILayer)
	l2, _ := random.Layer(256<<10, types.OCILayer)
	ref := reg.Push(t, "test/resume:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{}, l1, l2))
	dir := t.TempDir()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Layer 2 is unavailable: layer 1 completes, the pull fails.
	d1, _ := l1.DiffID()
	dg2, _ := l2.Digest()
	reg.Faults.Block(dg2.String())
	p := New(s, Options{Platform: enginetest.Amd64, Attempts: 2, Backoff: time.Millisecond})
	if _, err = p.Pull(context.Background(), ref, nil, nil); err == nil {
		t.Fatal("pull succeeded with a layer missing")
	}
	if _, err := s.Resolve(ref); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a half-pulled image is visible: %v", err)
	}
	if !s.HasLayer(d1.String()) {
		t.Fatal("the completed layer was not kept")
	}
	reg.Faults.Unblock(dg2.String())
	before := reg.Faults.BlobGets.Load()
	if _, err := New(s, Options{Platform: enginetest.Amd64}).Pull(context.Background(), ref, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := reg.Faults.BlobGets.Load() - before; n != 2 { // config + layer 2
		t.Errorf("re-pull fetched %d blobs, want 2 (config and the missing layer)", n)
	}
}
