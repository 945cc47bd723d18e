package bmap

import (
	"bytes"
	"flag"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.bmap from the current output")

// sparseImage writes a test image: data at the start, a run of blocks, a
// block written explicitly as zeros (which must stay mapped), a write that
// straddles a block boundary, and a partial last block.
func sparseImage(t *testing.T, dir string, seed int64) string {
	t.Helper()
	path := filepath.Join(dir, "x.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 10<<20 + 100
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	chunk := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	writes := []struct {
		off  int64
		data []byte
	}{
		{0, chunk(512)},
		{5 * BlockSize, chunk(3 * BlockSize)},
		{100 * BlockSize, make([]byte, BlockSize)}, // explicit zeros
		{200*BlockSize - 10, chunk(20)},
		{size - 50, chunk(50)},
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestDataRangesSeesExplicitZeros(t *testing.T) {
	img := sparseImage(t, t.TempDir(), 1)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, err := DataRanges(f)
	if err != nil {
		t.Fatal(err)
	}
	got := blockRanges(rs)
	last := int64(10<<20+100-1) / BlockSize
	want := []blockRange{{0, 0}, {5, 7}, {100, 100}, {199, 200}, {last, last}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mapped blocks %v, want %v", got, want)
	}
}

func TestWriteMatchesGolden(t *testing.T) {
	img := sparseImage(t, t.TempDir(), 1)
	var buf bytes.Buffer
	if err := Write(&buf, img); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "sparse.bmap")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("bmap differs from %s (run go test -update if the change is intended):\n%s", golden, buf.Bytes())
	}
}

func TestBmaptoolFlashesTheCompressedImage(t *testing.T) {
	for _, tool := range []string{"bmaptool", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	img := sparseImage(t, dir, 2)
	bm := filepath.Join(dir, "x.bmap")
	f, err := os.Create(bm)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(f, img); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("xz", "-k", "-T1", "-0", img).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "out.img")
	if res, err := exec.Command("bmaptool", "copy", "--bmap", bm, img+".xz", out).CombinedOutput(); err != nil {
		t.Fatalf("bmaptool copy: %v\n%s", err, res)
	}
	if res, err := exec.Command("cmp", img, out).CombinedOutput(); err != nil {
		t.Fatalf("flashed copy differs: %v\n%s", err, res)
	}

	// bmaptool must notice a map whose own checksum is wrong.
	raw, _ := os.ReadFile(bm)
	bad := bytes.Replace(raw, []byte("<ImageSize> "), []byte("<ImageSize>  "), 1)
	os.WriteFile(bm, bad, 0o644)
	if res, err := exec.Command("bmaptool", "copy", "--bmap", bm, img+".xz", out).CombinedOutput(); err == nil {
		t.Fatalf("bmaptool accepted a tampered map:\n%s", res)
	}
}

func TestWriteRefusesAnEmptyImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "empty.img")
	os.WriteFile(p, nil, 0o644)
	if err := Write(&bytes.Buffer{}, p); err == nil {
		t.Error("Write accepted an empty image")
	}
}
