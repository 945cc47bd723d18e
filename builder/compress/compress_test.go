package compress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// text returns n bytes of compressible, seed-determined text, so that the
// tests exercise real matches without paying xz -6's price for random data.
func text(seed uint64, n int) []byte {
	words := strings.Fields("bulkhead slot boot state kernel initramfs module watchdog trial commit rollback sector partition")
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(" \n"[r.IntN(2)])
	}
	return b.Bytes()[:n]
}

// sparseImage writes a file shaped like a disk image: data, holes, zeros
// written explicitly, and a short last chunk. It returns its path and size.
func sparseImage(t testing.TB, dir string) (string, int64) {
	t.Helper()
	const mib = 1 << 20
	size := int64(3*xzBlockSize + 5*mib + 123)
	path := filepath.Join(dir, "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		off  int64
		data []byte
	}{
		{4096, text(1, mib)},                        // chunk 0: some data, then a hole
		{2 * xzBlockSize, make([]byte, 2*mib)},      // chunk 2: zeros written, not a hole
		{3*xzBlockSize + 3*mib, text(2, 2*mib+123)}, // short final chunk ending in data
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
	}
	return path, size
}

func needXZ(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("xz")
	if err != nil {
		t.Fatalf("these tests compare with XZ Utils: install xz-utils (%v)", err)
	}
	return path
}

func readAllXZ(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := xz.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ulikunitz reader: %v", err)
	}
	return b
}

func TestXZMatchesXZUtilsAndRoundTrips(t *testing.T) {
	xzPath := needXZ(t)
	dir := t.TempDir()
	src, size := sparseImage(t, dir)
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	var calls []int64
	dst := filepath.Join(dir, "disk.img.xz")
	if err := xzFile(context.Background(), src, dst, hostXZ{xzPath}, 2, func(done, total int64) {
		if total != size {
			t.Errorf("progress total = %d, want %d", total, size)
		}
		calls = append(calls, done)
	}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("identical to xz -T2 over the whole file at the same preset", func(t *testing.T) {
		ref, err := exec.Command(xzPath, "-T2", "--block-size=16MiB", "-"+strconv.Itoa(xzPreset), "--check=crc64", "-c", src).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ref) {
			t.Fatalf("output (%d bytes) differs from xz's (%d bytes)", len(got), len(ref))
		}
	})
	t.Run("xz -d restores the input", func(t *testing.T) {
		plain, err := exec.Command(xzPath, "-dc", dst).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(plain, want) {
			t.Fatal("xz -d output differs from the input")
		}
		if err := exec.Command(xzPath, "-t", dst).Run(); err != nil {
			t.Fatalf("xz -t: %v", err)
		}
	})
	t.Run("the Go reader restores the input", func(t *testing.T) {
		if !bytes.Equal(readAllXZ(t, dst), want) {
			t.Fatal("ulikunitz output differs from the input")
		}
	})
	t.Run("progress rises to the total", func(t *testing.T) {
		if len(calls) != 5 || calls[0] != 0 || calls[len(calls)-1] != size {
			t.Fatalf("progress calls %v, want 0 then one per chunk up to %d", calls, size)
		}
		for i := 1; i < len(calls); i++ {
			if calls[i] <= calls[i-1] {
				t.Fatalf("progress not increasing: %v", calls)
			}
		}
	})
	t.Run("worker count does not change the bytes", func(t *testing.T) {
		again := filepath.Join(dir, "again.xz")
		if err := xzFile(context.Background(), src, again, hostXZ{xzPath}, 1, nil); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(again)
		if !bytes.Equal(b, got) {
			t.Fatal("1 worker and 2 workers wrote different bytes")
		}
	})
	t.Run("no temporary file is left", func(t *testing.T) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Fatalf("leftover %s", e.Name())
			}
		}
	})
}

func TestXZPureGoFallbackRoundTripsAndIsReproducible(t *testing.T) {
	xzPath := needXZ(t)
	dir := t.TempDir()
	src, _ := sparseImage(t, dir)
	want, _ := os.ReadFile(src)
	var outs [][]byte
	for _, workers := range []int{1, 3} {
		dst := filepath.Join(dir, fmt.Sprintf("go-%d.xz", workers))
		if err := xzFile(context.Background(), src, dst, goXZ{}, workers, nil); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(dst)
		outs = append(outs, b)
		plain, err := exec.Command(xzPath, "-dc", dst).Output()
		if err != nil {
			t.Fatalf("xz -d of the Go encoder's output: %v", err)
		}
		if !bytes.Equal(plain, want) {
			t.Fatal("xz -d output differs from the input")
		}
		if !bytes.Equal(readAllXZ(t, dst), want) {
			t.Fatal("ulikunitz output differs from the input")
		}
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("1 worker and 3 workers wrote different bytes")
	}
}

func TestXZEmptyFile(t *testing.T) {
	xzPath := needXZ(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "empty")
	os.WriteFile(src, nil, 0o644)
	dst := src + ".xz"
	if err := xzFile(context.Background(), src, dst, hostXZ{xzPath}, 2, nil); err != nil {
		t.Fatal(err)
	}
	plain, err := exec.Command(xzPath, "-dc", dst).Output()
	if err != nil || len(plain) != 0 {
		t.Fatalf("xz -d: %q, %v", plain, err)
	}
}

func TestXZCancelledLeavesNoOutput(t *testing.T) {
	dir := t.TempDir()
	src, _ := sparseImage(t, dir)
	dst := filepath.Join(dir, "out.xz")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := xzFile(ctx, src, dst, goXZ{}, 2, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "disk.img" {
			t.Fatalf("left %s behind", e.Name())
		}
	}
}

func TestXZRejectsADirectory(t *testing.T) {
	err := XZ(context.Background(), t.TempDir(), filepath.Join(t.TempDir(), "x.xz"), nil)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

func TestGzipIsDeterministicAndHeaderless(t *testing.T) {
	in := text(3, 3<<20)
	var a, b bytes.Buffer
	if err := Gzip(&a, bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if err := Gzip(&b, bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two runs differ")
	}
	h := a.Bytes()[:10]
	// ID1 ID2 CM FLG MTIME(4) XFL OS: no FNAME/FCOMMENT flags, mtime 0.
	if h[0] != 0x1f || h[1] != 0x8b || h[3] != 0 || !bytes.Equal(h[4:8], []byte{0, 0, 0, 0}) || h[9] != 255 {
		t.Fatalf("header % x: want no flags, zero mtime, OS 255", h)
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(out, in) {
		t.Fatalf("round trip failed: %v", err)
	}
	if gz, err := exec.LookPath("gzip"); err == nil {
		cmd := exec.Command(gz, "-dc")
		cmd.Stdin = bytes.NewReader(a.Bytes())
		out, err := cmd.Output()
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("gzip -d failed: %v", err)
		}
	}
}

func TestZstdIsDeterministic(t *testing.T) {
	in := text(4, 2<<20)
	enc := func() []byte {
		var b bytes.Buffer
		zw, err := NewZstdWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(in)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a, b := enc(), enc()
	if !bytes.Equal(a, b) {
		t.Fatal("two runs differ")
	}
	d, _ := zstd.NewReader(nil)
	out, err := d.DecodeAll(a, nil)
	if err != nil || !bytes.Equal(out, in) {
		t.Fatalf("round trip failed: %v", err)
	}
}

func FuzzXZSingleBlock(f *testing.F) {
	var b bytes.Buffer
	w, _ := xz.WriterConfig{CheckSum: xz.CRC64}.NewWriter(&b)
	w.Write([]byte("hello, bulkhead"))
	w.Close()
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		blk, err := xzSingleBlock(data, xzCheckCRC64)
		if err == nil && int64(len(blk.data)) < blk.unpadded {
			t.Fatalf("block of %d bytes claims %d unpadded", len(blk.data), blk.unpadded)
		}
	})
}

// BenchmarkXZSparse compresses a 256 MiB sparse image holding 8 MiB of data,
// a small model of a 2.4 GiB image with ~80 MiB of data.
func BenchmarkXZSparse(b *testing.B) {
	xzPath := needXZ(b)
	dir := b.TempDir()
	src := filepath.Join(dir, "bench.img")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	f.Truncate(256 << 20)
	f.WriteAt(text(5, 4<<20), 1<<20)
	f.WriteAt(text(6, 4<<20), 130<<20)
	f.Close()
	b.SetBytes(256 << 20)
	for _, bc := range []struct {
		name string
		enc  blockEncoder
	}{{"xz-utils", hostXZ{xzPath}}, {"pure-go", goXZ{}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(256 << 20)
			out := filepath.Join(dir, "bench.xz")
			for b.Loop() {
				if err := xzFile(context.Background(), src, out, bc.enc, xzWorkers(), nil); err != nil {
					b.Fatal(err)
				}
			}
			if fi, err := os.Stat(out); err == nil {
				b.ReportMetric(float64(fi.Size()), "xz-bytes")
			}
		})
	}
}
