// Package tests holds Bulkhead's end-to-end tests: real images built from the
// pinned Debian packages, checked with the reference filesystem tools and
// booted in QEMU through the real firmware and bootloaders.
package tests

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/image"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/builder/resolve"
)

// epoch is the fixed SOURCE_DATE_EPOCH of test builds.
var epoch = time.Unix(1764000000, 0).UTC()

const testVersion = "1.0.0-test"

func srcDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func loadBoard(t testing.TB, name string) *board.Board {
	t.Helper()
	b, err := board.Load(filepath.Join(srcDir(t), "boards"), name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func userCache(t testing.TB) *cache.Cache {
	t.Helper()
	c, err := cache.Open(cache.DefaultRoot())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func hostSources(t testing.TB) []debian.Source {
	s, err := debian.SourcesFor("/", resolve.Release, os.Getenv(debian.MirrorEnv))
	if err != nil {
		t.Logf("no Debian sources: %v (a warm cache needs none)", err)
	}
	return s
}

// buildConfig is the configuration of a test build into dir.
func buildConfig(t testing.TB, b *board.Board, dir, version string) image.Config {
	return image.Config{
		SrcDir:   srcDir(t),
		Board:    b,
		LockFile: filepath.Join(srcDir(t), "boards", b.Name+".lock"),
		Name:     "bulkhead",
		Version:  version,
		Epoch:    epoch,
		WorkDir:  filepath.Join(dir, "work"),
		OutDir:   filepath.Join(dir, "deploy"),
		Cache:    userCache(t),
		Sources:  hostSources(t),
		Compress: true,
		// The clearly-marked development key of supervisor/bundle/testdata.
		SigningKey: filepath.Join(srcDir(t), "supervisor/bundle/testdata/dev-key.pem"),
	}
}

// built images, shared by the tests of this package: building is the slow part.
var (
	builtMu sync.Mutex
	built   = map[string]*builtImage{}
)

type builtImage struct {
	once sync.Once
	res  *image.Result
	err  error
	dir  string
}

// buildOnce builds the board's image once per test binary.
func buildOnce(t *testing.T, name string) *image.Result {
	t.Helper()
	builtMu.Lock()
	bi := built[name]
	if bi == nil {
		bi = &builtImage{}
		built[name] = bi
	}
	builtMu.Unlock()
	bi.once.Do(func() {
		dir, err := os.MkdirTemp("", "bulkhead-test-"+name+"-")
		if err != nil {
			bi.err = err
			return
		}
		bi.dir = dir
		b := loadBoard(t, name)
		bi.res, bi.err = image.Run(context.Background(), buildConfig(t, b, dir, testVersion))
	})
	if bi.err != nil {
		t.Fatalf("build %s: %v", name, bi.err)
	}
	return bi.res
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, bi := range built {
		if bi.dir != "" {
			os.RemoveAll(bi.dir)
		}
	}
	os.Exit(code)
}

// readyRE matches PID 1's ready line, a whole console line, so that kernel
// messages interleaved with it cannot produce a partial match.
var readyRE = regexp.MustCompile(`(?m)^bulkhead: ready version=(\S+) slot=([ab]) board=(\S+) trial=([01])\r?$`)

// boot starts the image in QEMU and waits for the ready line. On failure the
// serial log is printed.
func boot(t *testing.T, b *board.Board, img string, bootargs string, timeout time.Duration) (*qemu.Machine, []string) {
	t.Helper()
	m, err := qemu.Prepare(context.Background(), qemu.Config{
		Board:    b,
		Image:    img,
		Cache:    userCache(t),
		LockFile: filepath.Join(srcDir(t), "boards", b.Name+".lock"),
		WorkDir:  t.TempDir(),
		Bootargs: bootargs,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	start := time.Now()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.PowerCut)
	line, _, err := m.Wait(ctx, readyRE, 0, timeout)
	if err != nil {
		t.Fatalf("%s: %v\n--- serial console ---\n%s\n--- end ---\ncommand: %s", b.Name, err, m.Log(), strings.Join(m.Command(), " "))
	}
	t.Logf("%s: %q after %s", b.Name, line, time.Since(start).Round(100*time.Millisecond))
	return m, readyRE.FindStringSubmatch(line)
}
