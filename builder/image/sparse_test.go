package image

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestSparseReaderReadsExactlyTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(10 << 20); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 4096 * 3, 5<<20 + 17, 10<<20 - 100} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 100), off); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newSparseReader(f)
	if err != nil {
		t.Fatal(err)
	}
	// An odd buffer size crosses range boundaries in the middle of reads.
	got, err := io.ReadAll(io.LimitReader(struct{ io.Reader }{r}, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("sparse reader returned %d bytes that differ from the %d-byte file", len(got), len(want))
	}
}
