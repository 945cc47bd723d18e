// Package bench measures the builder and the boot: `make bench` prints the
// figures recorded in docs/benchmarks.md. Nothing here asserts a time.
package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/lock"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
)

const benchBoard = "raspberrypi3"

func repo(b *testing.B) string {
	dir, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// copySource copies the Go sources and board files (not .git, build,
// deploy) so a benchmark can edit them.
func copySource(b *testing.B, dst string) {
	b.Helper()
	src := repo(b)
	out, err := exec.Command("sh", "-c", "tar -C "+src+" --exclude=./.git --exclude=./build --exclude=./deploy -cf - . | tar -C "+dst+" -xf -").CombinedOutput()
	if err != nil {
		b.Fatalf("copy source: %v: %s", err, out)
	}
}

// builderBinary compiles the builder once.
func builderBinary(b *testing.B, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "builder")
	cmd := exec.Command("go", "build", "-o", bin, "./builder")
	cmd.Dir = repo(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build builder: %v: %s", err, out)
	}
	return bin
}

// seededCache holds the board's .debs (no unpacked trees): a cold build
// without downloads.
func seededCache(b *testing.B, dir string) string {
	b.Helper()
	user, err := cache.Open(cache.DefaultRoot())
	if err != nil {
		b.Fatal(err)
	}
	lf, err := lock.Read(filepath.Join(repo(b), "boards", benchBoard+".lock"))
	if err != nil {
		b.Fatal(err)
	}
	c, err := cache.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range lf.Packages {
		path, ok := user.Path(p.SHA256)
		if !ok {
			b.Fatalf("%s is not in the download cache: run make image BOARD=%s first", p.Name, benchBoard)
		}
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		_, err = c.Put(p.SHA256, f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

type run struct {
	took   time.Duration
	maxRSS int64 // KiB
}

func build(b *testing.B, bin, src string, env []string, args ...string) run {
	b.Helper()
	cmd := exec.Command(bin, append([]string{"image", "-board", benchBoard, "-src", src,
		"-key", filepath.Join(repo(b), "supervisor/bundle/testdata/dev-key.pem")}, args...)...)
	cmd.Env = append(os.Environ(), append([]string{"SOURCE_DATE_EPOCH=1764000000"}, env...)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("builder: %v\n%s", err, out)
	}
	r := run{took: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss
	}
	return r
}

// BenchmarkBuild reports the builder's figures for raspberrypi3.
func BenchmarkBuild(b *testing.B) {
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		src := filepath.Join(dir, "src")
		os.MkdirAll(src, 0o755)
		copySource(b, src)
		bin := builderBinary(b, dir)
		env := []string{
			"BULKHEAD_CACHE=" + seededCache(b, filepath.Join(dir, "cache")),
			"GOCACHE=" + filepath.Join(dir, "gocache"),
		}
		cold := build(b, bin, src, env, "-no-xz")
		warm := build(b, bin, src, env, "-no-xz")

		// One Go source change in PID 1.
		initSrc := filepath.Join(src, "rootfs/cmd/init/main.go")
		data, err := os.ReadFile(initSrc)
		if err != nil {
			b.Fatal(err)
		}
		data = append(data, []byte("\nvar benchmarkChange = \"one Go change\"\n\nfunc init() { _ = benchmarkChange }\n")...)
		if err := os.WriteFile(initSrc, data, 0o644); err != nil {
			b.Fatal(err)
		}
		change := build(b, bin, src, env, "-no-xz")

		// The .img.xz on its own (everything else is up to date but the
		// inputs key includes the compression choice).
		xz := build(b, bin, src, env)
		matches, _ := filepath.Glob(filepath.Join(src, "deploy", benchBoard, "*.img.xz"))
		var xzSize int64
		if len(matches) == 1 {
			if fi, err := os.Stat(matches[0]); err == nil {
				xzSize = fi.Size()
			}
		}
		b.ReportMetric(cold.took.Seconds(), "cold-build-s")
		b.ReportMetric(warm.took.Seconds(), "warm-nochange-s")
		b.ReportMetric(change.took.Seconds(), "one-go-change-s")
		b.ReportMetric(xz.took.Seconds(), "with-xz-s")
		b.ReportMetric(float64(max(cold.maxRSS, change.maxRSS, xz.maxRSS))/1024, "peak-MiB")
		b.ReportMetric(float64(xzSize)/(1<<20), "img.xz-MiB")
	}
}

var readyRE = regexp.MustCompile(`(?m)^bulkhead: ready `)

// BenchmarkBootToReady reports seconds from QEMU start to PID 1's ready line.
func BenchmarkBootToReady(b *testing.B) {
	for _, name := range []string{"x86_64", "raspberrypi3", "qemu-aarch64"} {
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			bin := builderBinary(b, dir)
			cmd := exec.Command(bin, "image", "-board", name, "-src", repo(b), "-no-xz",
				"-key", filepath.Join(repo(b), "supervisor/bundle/testdata/dev-key.pem"), "-version", "bench")
			cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1764000000")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("build: %v\n%s", err, out)
			}
			bd, err := board.Load(filepath.Join(repo(b), "boards"), name)
			if err != nil {
				b.Fatal(err)
			}
			c, err := cache.Open(cache.DefaultRoot())
			if err != nil {
				b.Fatal(err)
			}
			img := filepath.Join(repo(b), "deploy", name, "bulkhead-"+name+"-bench.img")
			var total time.Duration
			for i := 0; i < b.N; i++ {
				m, err := qemu.Prepare(context.Background(), qemu.Config{Board: bd, Image: img, Cache: c,
					LockFile: filepath.Join(repo(b), "boards", name+".lock"), WorkDir: filepath.Join(dir, strconv.Itoa(i))})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if err := m.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				_, _, err = m.Wait(context.Background(), readyRE, 0, 5*time.Minute)
				total += time.Since(start)
				m.PowerCut()
				if err != nil {
					b.Fatalf("%v\n%s", err, m.Log())
				}
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-ready")
		})
	}
}
