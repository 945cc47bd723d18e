package fat

import (
	"bytes"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/bulkhead-os/bulkhead/builder/bmap"
)

// allocated returns the bytes a file really occupies on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// copyDataOnto simulates flashing src with bmaptool onto a used medium: dst
// starts out filled with the byte garbage, then only src's data regions
// are copied over it.
func copyDataOnto(t *testing.T, src, dst string, garbage byte) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, _ := in.Stat()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	fill := bytes.Repeat([]byte{garbage}, 1<<20)
	for off := int64(0); off < fi.Size(); off += int64(len(fill)) {
		n := min(int64(len(fill)), fi.Size()-off)
		if _, err := out.WriteAt(fill[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := bmap.DataRanges(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if _, err := io.Copy(io.NewOffsetWriter(out, r.Offset), io.NewSectionReader(in, r.Offset, r.Length)); err != nil {
			t.Fatal(err)
		}
	}
}
