// Package initramfs writes initramfs archives: a newc cpio (the only cpio
// format the kernel unpacks, magic "070701"), compressed with gzip by
// default. The archive is a pure function of the file list and Options:
// entries are sorted, parents are added, inode numbers are assigned in
// order, owners are root and every time is Options.Time.
//
// It owns the archive format only. What goes into the initramfs (/init, its
// configuration, the modules) is decided by the image package; this package
// must not add files of its own beyond missing parent directories.
package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/compress"
	"github.com/u-root/u-root/pkg/cpio"
)

// File is one entry of the archive.
type File struct {
	// Path is slash-separated and relative to the archive root, e.g.
	// "init" or "lib/modules/6.1.0-50-arm64/kernel/fs/ext4/ext4.ko"; a
	// leading "/" is ignored.
	Path string
	// Mode holds the permission bits, setuid/setgid/sticky and the type:
	// 0 (regular file), os.ModeDir, os.ModeSymlink, os.ModeDevice (block),
	// os.ModeDevice|os.ModeCharDevice, os.ModeNamedPipe or os.ModeSocket.
	Mode os.FileMode
	// Data is a regular file's content. At most one of Data and Source may
	// be set; neither means an empty file.
	Data []byte
	// Source is the host path of a regular file's content, read while the
	// archive is written.
	Source string
	// Linkname is a symlink's target.
	Linkname string
	// DevMajor and DevMinor number a device node.
	DevMajor, DevMinor uint32
}

// Compression names the compressor of the archive.
type Compression string

// The compressions Options accepts. Debian's kernels unpack all three.
const (
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
	None Compression = "none"
)

// Options control the archive's encoding.
type Options struct {
	// Time is every entry's modification time, typically
	// SOURCE_DATE_EPOCH. The zero Time means the Unix epoch.
	Time time.Time
	// Compression is Gzip (also when empty), Zstd or None.
	Compression Compression
}

// Write writes files to w as a compressed newc archive. Missing parent
// directories are added with mode 0755.
func Write(w io.Writer, files []File, opt Options) error {
	mtime := int64(0)
	if !opt.Time.IsZero() {
		mtime = opt.Time.Unix()
	}
	// newc stores times as 32-bit unsigned seconds.
	if mtime < 0 || mtime > math.MaxUint32 {
		return fmt.Errorf("initramfs: time %v does not fit newc's 32-bit seconds: set SOURCE_DATE_EPOCH between 1970 and 2106", opt.Time)
	}
	records, err := plan(files, uint64(mtime))
	if err != nil {
		return err
	}
	defer func() {
		for _, r := range records {
			if c, ok := r.ReaderAt.(io.Closer); ok {
				c.Close()
			}
		}
	}()

	var out io.WriteCloser
	switch opt.Compression {
	case Gzip, "":
		out, err = compress.NewGzipWriter(w)
	case Zstd:
		out, err = compress.NewZstdWriter(w)
	case None:
		out = nopCloser{w}
	default:
		return fmt.Errorf("initramfs: unknown compression %q: use gzip, zstd or none", opt.Compression)
	}
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	rw := cpio.Newc.Writer(bw)
	for _, r := range records {
		if err := rw.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs: %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// plan validates files, adds missing parents and returns the records in
// archive order.
func plan(files []File, mtime uint64) ([]cpio.Record, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		f.Path = p
		if old, dup := byPath[p]; dup {
			// The same directory listed twice is harmless; anything else
			// would make one entry silently win.
			if !(old.Mode.IsDir() && f.Mode == old.Mode) {
				return nil, fmt.Errorf("initramfs: %s listed twice: remove one entry", p)
			}
			continue
		}
		byPath[p] = f
	}
	for p, f := range byPath {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			parent, ok := byPath[dir]
			if !ok {
				byPath[dir] = File{Path: dir, Mode: os.ModeDir | 0o755}
				continue
			}
			if !parent.Mode.IsDir() {
				return nil, fmt.Errorf("initramfs: %s needs %s to be a directory, but it is listed as %v", f.Path, dir, parent.Mode.Type())
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	subdirs := map[string]int{}
	for p, f := range byPath {
		paths = append(paths, p)
		if f.Mode.IsDir() {
			subdirs[path.Dir(p)]++
		}
	}
	// Byte order puts every directory before its contents (a prefix sorts
	// first), which the kernel needs to create them.
	sort.Strings(paths)

	records := make([]cpio.Record, 0, len(paths))
	for i, p := range paths {
		r, err := record(byPath[p], mtime)
		if err != nil {
			for _, done := range records {
				if c, ok := done.ReaderAt.(io.Closer); ok {
					c.Close()
				}
			}
			return nil, err
		}
		// Inodes only need to be distinct (the kernel links entries
		// sharing one); numbering in archive order keeps them stable.
		r.Ino = uint64(i + 1)
		if byPath[p].Mode.IsDir() {
			r.NLink = uint64(2 + subdirs[p])
		}
		records = append(records, r)
	}
	return records, nil
}

func cleanPath(p string) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("initramfs: path %q contains a NUL byte", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("initramfs: path %q contains \"..\": give paths relative to the archive root", p)
		}
	}
	c := path.Clean("/" + p)[1:]
	if c == "" {
		return "", fmt.Errorf("initramfs: empty path %q: the root directory is implicit", p)
	}
	return c, nil
}

// record converts one File to a cpio record (without an inode number).
func record(f File, mtime uint64) (cpio.Record, error) {
	info := cpio.Info{Name: f.Path, NLink: 1, MTime: mtime}
	info.Mode = uint64(f.Mode.Perm())
	if f.Mode&os.ModeSetuid != 0 {
		info.Mode |= cpio.S_ISUID
	}
	if f.Mode&os.ModeSetgid != 0 {
		info.Mode |= cpio.S_ISGID
	}
	if f.Mode&os.ModeSticky != 0 {
		info.Mode |= cpio.S_ISVTX
	}
	noContent := func(kind string) error {
		if f.Data != nil || f.Source != "" || f.Linkname != "" {
			return fmt.Errorf("initramfs: %s is a %s and cannot have Data, Source or Linkname", f.Path, kind)
		}
		return nil
	}
	var rec cpio.Record
	switch typ := f.Mode.Type(); typ {
	case 0:
		if f.Linkname != "" || f.DevMajor != 0 || f.DevMinor != 0 {
			return rec, fmt.Errorf("initramfs: %s is a regular file but has a Linkname or device numbers: set Mode's type bits", f.Path)
		}
		info.Mode |= cpio.S_IFREG
		switch {
		case f.Data != nil && f.Source != "":
			return rec, fmt.Errorf("initramfs: %s has both Data and Source: set one", f.Path)
		case f.Source != "":
			fi, err := os.Stat(f.Source)
			if err != nil {
				return rec, fmt.Errorf("initramfs: %s: %w", f.Path, err)
			}
			if !fi.Mode().IsRegular() {
				return rec, fmt.Errorf("initramfs: %s: source %s is not a regular file", f.Path, f.Source)
			}
			info.FileSize = uint64(fi.Size())
			rec.ReaderAt = &hostFile{path: f.Source}
		default:
			info.FileSize = uint64(len(f.Data))
			rec.ReaderAt = strings.NewReader(string(f.Data))
		}
		if info.FileSize > math.MaxUint32 {
			return rec, fmt.Errorf("initramfs: %s is %d bytes, over newc's 4 GiB limit", f.Path, info.FileSize)
		}
	case os.ModeDir:
		if err := noContent("directory"); err != nil {
			return rec, err
		}
		info.Mode |= cpio.S_IFDIR
	case os.ModeSymlink:
		if f.Linkname == "" || f.Data != nil || f.Source != "" {
			return rec, fmt.Errorf("initramfs: symlink %s needs a Linkname and no Data or Source", f.Path)
		}
		// Symlinks carry their target as content; their permission bits
		// are meaningless on Linux and always 0777.
		info.Mode = cpio.S_IFLNK | 0o777
		info.FileSize = uint64(len(f.Linkname))
		rec.ReaderAt = strings.NewReader(f.Linkname)
	case os.ModeDevice | os.ModeCharDevice, os.ModeDevice:
		if err := noContent("device"); err != nil {
			return rec, err
		}
		if typ == os.ModeDevice {
			info.Mode |= cpio.S_IFBLK
		} else {
			info.Mode |= cpio.S_IFCHR
		}
		info.Rmajor, info.Rminor = uint64(f.DevMajor), uint64(f.DevMinor)
	case os.ModeNamedPipe:
		if err := noContent("FIFO"); err != nil {
			return rec, err
		}
		info.Mode |= cpio.S_IFIFO
	case os.ModeSocket:
		if err := noContent("socket"); err != nil {
			return rec, err
		}
		info.Mode |= cpio.S_IFSOCK
	default:
		return rec, fmt.Errorf("initramfs: %s has unsupported file type %v", f.Path, typ)
	}
	// Records are built by hand instead of through cpio.MakeReproducible,
	// which would also zero MTime and so ignore Options.Time; UID, GID and
	// the device of the entry itself stay zero.
	rec.Info = info
	return rec, nil
}

// hostFile opens its file on first read and closes it when u-root's writer
// is done with it, so a large module list never holds every file open.
type hostFile struct {
	path string
	f    *os.File
}

func (h *hostFile) ReadAt(p []byte, off int64) (int, error) {
	if h.f == nil {
		f, err := os.Open(h.path)
		if err != nil {
			return 0, err
		}
		h.f = f
	}
	return h.f.ReadAt(p, off)
}

func (h *hostFile) Close() error {
	if h.f == nil {
		return nil
	}
	err := h.f.Close()
	h.f = nil
	return err
}
