package powercut

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// SlotImage is a content a root slot may hold: a slot image of the build
// (the factory slot, or the image of an update bundle).
type SlotImage struct {
	// Slot is the slot that may hold it.
	Slot bootloader.Slot
	// Path is the slot image file; Size bytes of it count (the bundle
	// manifest's image.size), and their SHA-256 must be SHA256 (the
	// manifest's image.sha256).
	Path   string
	Size   int64
	SHA256 string
	// Version is the OS version inside, for reports.
	Version string
}

// verified remembers the slot images whose digest was checked.
var verified sync.Map

// tracker knows, for one slot image, which sectors of its slot differ
// from it on the disk of the replay's running base.
type tracker struct {
	img   SlotImage
	f     *os.File
	start uint64 // first disk sector of the slot
	n     uint64 // sectors of the image
	diff  []uint64
	count int
}

func newTracker(img SlotImage, base io.ReaderAt, slotOffset int64, ss int) (*tracker, error) {
	f, err := os.Open(img.Path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if img.Size <= 0 || img.Size > fi.Size() || img.Size%int64(ss) != 0 {
		f.Close()
		return nil, fmt.Errorf("slot image %s: size %d (file %d bytes) is not a whole number of %d-byte sectors within the file", img.Path, img.Size, fi.Size(), ss)
	}
	// The reference itself must be what the bundle signs.
	key := fmt.Sprintf("%s|%d|%s|%d", img.Path, img.Size, img.SHA256, fi.ModTime().UnixNano())
	if _, ok := verified.Load(key); !ok {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, img.Size)); err != nil {
			f.Close()
			return nil, err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != img.SHA256 {
			f.Close()
			return nil, fmt.Errorf("slot image %s has sha256 %s, the manifest signs %s", img.Path, got, img.SHA256)
		}
		verified.Store(key, true)
	}
	t := &tracker{img: img, f: f, start: uint64(slotOffset) / uint64(ss), n: uint64(img.Size) / uint64(ss)}
	t.diff = make([]uint64, (t.n+63)/64)
	const chunk = 4 << 20
	a, b := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < img.Size; off += chunk {
		k := min(chunk, img.Size-off)
		if _, err := f.ReadAt(a[:k], off); err != nil {
			f.Close()
			return nil, err
		}
		n, err := base.ReadAt(b[:k], slotOffset+off)
		if err == io.EOF {
			clear(b[n:k])
		} else if err != nil {
			f.Close()
			return nil, err
		}
		for s := int64(0); s < k; s += int64(ss) {
			if !bytes.Equal(a[s:s+int64(ss)], b[s:s+int64(ss)]) {
				t.set(uint64(off+s)/uint64(ss), true)
			}
		}
	}
	return t, nil
}

func (t *tracker) bit(i uint64) bool { return t.diff[i/64]&(1<<(i%64)) != 0 }

func (t *tracker) set(i uint64, v bool) {
	if t.bit(i) == v {
		return
	}
	t.diff[i/64] ^= 1 << (i % 64)
	if v {
		t.count++
	} else {
		t.count--
	}
}

// clip returns the part of disk sectors [from, to) inside the image, as
// image sectors.
func (t *tracker) clip(from, to uint64) (uint64, uint64, bool) {
	lo, hi := max(from, t.start), min(to, t.start+t.n)
	if lo >= hi {
		return 0, 0, false
	}
	return lo - t.start, hi - t.start, true
}

// compare calls fn(image sector, differs) for image sectors [from, to)
// whose disk content is data.
func (t *tracker) compare(data []byte, from, to uint64, ss int, fn func(uint64, bool)) error {
	ref := make([]byte, int(to-from)*ss)
	if _, err := t.f.ReadAt(ref, int64(from)*int64(ss)); err != nil {
		return err
	}
	for i := uint64(0); i < to-from; i++ {
		a := ref[int(i)*ss : int(i+1)*ss]
		b := data[int(i)*ss : int(i+1)*ss]
		fn(from+i, !bytes.Equal(a, b))
	}
	return nil
}

// apply updates the base's differences for the first n sectors of e.
func (t *tracker) apply(l *dmlog.Log, e dmlog.Entry, n uint64) error {
	from, to, ok := t.clip(e.Sector, e.Sector+n)
	if !ok {
		return nil
	}
	off := t.start + from - e.Sector // first data sector of e inside the image
	data, err := l.Data(e, off, off+(to-from))
	if err != nil {
		return err
	}
	return t.compare(data, from, to, l.SectorSize, func(i uint64, d bool) { t.set(i, d) })
}

// differing returns how many sectors differ with the top overlay laid over
// the base.
func (t *tracker) differing(l *dmlog.Log, top *overlay) (int, error) {
	count := t.count
	err := top.within(t.start, t.start+t.n, func(x extent) error {
		e := l.Entries[x.entry]
		from, to, _ := t.clip(x.start, x.end)
		off := x.start - e.Sector
		data, err := l.Data(e, off, off+(to-from))
		if err != nil {
			return err
		}
		return t.compare(data, from, to, l.SectorSize, func(i uint64, d bool) {
			if was := t.bit(i); was != d {
				if d {
					count++
				} else {
					count--
				}
			}
		})
	})
	return count, err
}
