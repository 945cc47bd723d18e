package powercut

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// extent says that disk sectors [start, end) hold the data of one logged
// write (its sector start-e.Sector onwards).
type extent struct {
	start, end uint64
	entry      int32
}

// overlay is what a set of logged writes, applied in log order, changed on
// the disk: sorted, non-overlapping extents, the newest write of each sector.
type overlay struct{ ext []extent }

// apply lays the first n sectors of e over the overlay.
func (o *overlay) apply(e dmlog.Entry, n uint64) {
	if n == 0 {
		return
	}
	start, end := e.Sector, e.Sector+n
	i := sort.Search(len(o.ext), func(k int) bool { return o.ext[k].end > start })
	j := sort.Search(len(o.ext), func(k int) bool { return o.ext[k].start >= end })
	repl := make([]extent, 0, 3)
	if i < j && o.ext[i].start < start {
		repl = append(repl, extent{o.ext[i].start, start, o.ext[i].entry})
	}
	repl = append(repl, extent{start, end, int32(e.Index)})
	if i < j && o.ext[j-1].end > end {
		repl = append(repl, extent{end, o.ext[j-1].end, o.ext[j-1].entry})
	}
	o.ext = slices.Replace(o.ext, i, j, repl...)
}

// within calls fn for every extent that intersects sectors [from, to),
// clipped to it.
func (o *overlay) within(from, to uint64, fn func(x extent) error) error {
	i := sort.Search(len(o.ext), func(k int) bool { return o.ext[k].end > from })
	for ; i < len(o.ext) && o.ext[i].start < to; i++ {
		x := o.ext[i]
		x.start, x.end = max(x.start, from), min(x.end, to)
		if err := fn(x); err != nil {
			return err
		}
	}
	return nil
}

// View is the disk of one crash state: the image before the run with
// layers of logged writes over it, read like a disk.
type View struct {
	log    *dmlog.Log
	base   io.ReaderAt
	size   int64
	layers []*overlay // bottom first
}

// Size is the disk's size in bytes.
func (v *View) Size() int64 { return v.size }

// ReadAt implements io.ReaderAt. Past the end of the base image (a sparse
// file's tail) the disk reads as zeros, as it did to the guest.
func (v *View) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= v.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > v.size-off {
		p = p[:v.size-off]
	}
	n, err := v.base.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
	} else if err != nil {
		return n, err
	}
	ss := int64(v.log.SectorSize)
	from := uint64(off / ss)
	to := uint64((off + int64(len(p)) + ss - 1) / ss)
	for _, l := range v.layers {
		err := l.within(from, to, func(x extent) error {
			e := v.log.Entries[x.entry]
			// Byte range of the extent, clipped to p.
			bs := max(int64(x.start)*ss, off)
			be := min(int64(x.end)*ss, off+int64(len(p)))
			return v.log.ReadData(e, bs-int64(e.Sector)*ss, p[bs-off:be-off])
		})
		if err != nil {
			return 0, err
		}
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// CopyRange copies bytes [off, off+n) of the view to w at offset woff;
// w must read as zeros there already (a new or truncated file). From a
// base file it copies only the extents that hold data (SEEK_DATA), so the
// copy stays sparse and costs what the partition holds, not its size;
// then it lays the logged writes over them.
func (v *View) CopyRange(w io.WriterAt, woff, off, n int64) error {
	if f, ok := v.base.(*os.File); ok {
		if err := copyDataExtents(f, w, woff, off, n); err != nil {
			return err
		}
	} else if err := copyNonZero(v.base, w, woff, off, n, v.size); err != nil {
		return err
	}
	ss := int64(v.log.SectorSize)
	from, to := uint64(off/ss), uint64((off+n+ss-1)/ss)
	for _, l := range v.layers {
		err := l.within(from, to, func(x extent) error {
			e := v.log.Entries[x.entry]
			bs, be := max(int64(x.start)*ss, off), min(int64(x.end)*ss, off+n)
			buf := make([]byte, be-bs)
			if err := v.log.ReadData(e, bs-int64(e.Sector)*ss, buf); err != nil {
				return err
			}
			_, err := w.WriteAt(buf, woff+bs-off)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// copyDataExtents copies the data extents of f in [off, off+n).
func copyDataExtents(f *os.File, w io.WriterAt, woff, off, n int64) error {
	fd := int(f.Fd())
	buf := make([]byte, 1<<20)
	for pos := off; pos < off+n; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err == unix.ENXIO || (err == nil && data >= off+n) {
			return nil // only holes (or the end of the file) from here
		}
		if err != nil {
			return copyNonZero(f, w, woff+pos-off, pos, off+n-pos, off+n)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, off+n)
		for p := data; p < hole; {
			k := min(int64(len(buf)), hole-p)
			m, err := f.ReadAt(buf[:k], p)
			if m > 0 {
				if _, werr := w.WriteAt(buf[:m], woff+p-off); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			p += int64(m)
		}
		pos = hole
	}
	return nil
}

// copyNonZero copies [off, off+n) of r, skipping 64 KiB runs of zeros.
func copyNonZero(r io.ReaderAt, w io.WriterAt, woff, off, n, size int64) error {
	buf := make([]byte, 1<<20)
	for done := int64(0); done < n && off+done < size; {
		k := min(int64(len(buf)), n-done, size-off-done)
		b := buf[:k]
		m, err := r.ReadAt(b, off+done)
		if err == io.EOF {
			clear(b[m:])
		} else if err != nil {
			return err
		}
		for s := int64(0); s < k; s += 64 << 10 {
			chunk := b[s:min(s+64<<10, k)]
			if isZero(chunk) {
				continue
			}
			if _, err := w.WriteAt(chunk, woff+done+s); err != nil {
				return err
			}
		}
		done += k
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Snapshot is a view's disk in a form that outlives the Checker that made
// it: the changes over the base image.
type Snapshot struct {
	log    *dmlog.Log
	layers [][]extent
}

// Snapshot copies the view's changes.
func (v *View) Snapshot() *Snapshot {
	s := &Snapshot{log: v.log}
	for _, l := range v.layers {
		s.layers = append(s.layers, slices.Clone(l.ext))
	}
	return s
}

// WriteTo writes the changes into w, which must hold a copy of the base
// image: w then holds the crash state's disk.
func (s *Snapshot) WriteTo(w io.WriterAt) error {
	ss := int64(s.log.SectorSize)
	for _, l := range s.layers {
		for _, x := range l {
			e := s.log.Entries[x.entry]
			off := x.start - e.Sector
			data, err := s.log.Data(e, off, off+(x.end-x.start))
			if err != nil {
				return err
			}
			if _, err := w.WriteAt(data, int64(x.start)*ss); err != nil {
				return err
			}
		}
	}
	return nil
}
