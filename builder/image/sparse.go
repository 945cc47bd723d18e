package image

import (
	"fmt"
	"io"
	"os"

	"github.com/bulkhead-os/bulkhead/builder/bmap"
)

// sparseReader reads a sparse file front to back, serving its holes as
// zeros from memory: a 1 GiB slot image holds ~100 MB of data, and reading
// the rest through the kernel costs more than compressing it.
type sparseReader struct {
	f      *os.File
	ranges []bmap.Range
	size   int64
	pos    int64
}

func newSparseReader(f *os.File) (*sparseReader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	ranges, err := bmap.DataRanges(f)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	return &sparseReader{f: f, ranges: ranges, size: fi.Size()}, nil
}

func (r *sparseReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if int64(len(p)) > r.size-r.pos {
		p = p[:r.size-r.pos]
	}
	for len(r.ranges) > 0 && r.ranges[0].Offset+r.ranges[0].Length <= r.pos {
		r.ranges = r.ranges[1:]
	}
	if len(r.ranges) == 0 || r.pos < r.ranges[0].Offset {
		// In a hole: zeros up to the next data range.
		end := r.size
		if len(r.ranges) > 0 {
			end = r.ranges[0].Offset
		}
		if int64(len(p)) > end-r.pos {
			p = p[:end-r.pos]
		}
		clear(p)
		r.pos += int64(len(p))
		return len(p), nil
	}
	end := r.ranges[0].Offset + r.ranges[0].Length
	if int64(len(p)) > end-r.pos {
		p = p[:end-r.pos]
	}
	n, err := r.f.ReadAt(p, r.pos)
	r.pos += int64(n)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}
