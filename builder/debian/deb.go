package debian

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// arMember is one member of an ar archive, located by offset so that it can
// be read with a SectionReader without copying.
type arMember struct {
	Name   string
	Offset int64
	Size   int64
}

const (
	arMagic      = "!<arch>\n"
	arHeaderSize = 60
	// A .deb has three members (plus rare "_"-prefixed extras); a limit
	// keeps a hostile archive with millions of empty members cheap.
	arMaxMembers = 64
)

// readAr lists the members of the ar archive in r (total length size). Only
// the common format dpkg writes is accepted: the global magic, 60-byte
// headers with decimal sizes, data padded to an even offset. GNU and BSD
// long-name extensions are not needed for .deb member names and are
// rejected as names containing '/' would be.
func readAr(r io.ReaderAt, size int64) ([]arMember, error) {
	var magic [len(arMagic)]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || string(magic[:]) != arMagic {
		return nil, errors.New("not an ar archive (bad magic)")
	}
	var out []arMember
	off := int64(len(arMagic))
	for off < size {
		if len(out) == arMaxMembers {
			return nil, fmt.Errorf("more than %d ar members", arMaxMembers)
		}
		var h [arHeaderSize]byte
		if _, err := r.ReadAt(h[:], off); err != nil {
			return nil, fmt.Errorf("ar header at offset %d: %w", off, unexpectedEOF(err))
		}
		if h[58] != '`' || h[59] != '\n' {
			return nil, fmt.Errorf("ar header at offset %d: bad terminator", off)
		}
		name := strings.TrimRight(string(h[0:16]), " ")
		// System V ar ends names with '/'.
		name = strings.TrimSuffix(name, "/")
		if name == "" || strings.ContainsAny(name, "/\x00") {
			return nil, fmt.Errorf("ar header at offset %d: unsupported member name %q", off, name)
		}
		sz, err := strconv.ParseInt(strings.TrimRight(string(h[48:58]), " "), 10, 64)
		if err != nil || sz < 0 {
			return nil, fmt.Errorf("ar member %s: bad size %q", name, h[48:58])
		}
		data := off + arHeaderSize
		if sz > size-data {
			return nil, fmt.Errorf("ar member %s: %d bytes, but the archive ends %d bytes after its header", name, sz, size-data)
		}
		out = append(out, arMember{Name: name, Offset: data, Size: sz})
		off = data + sz
		if off%2 == 1 {
			off++
		}
	}
	return out, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// debMembers opens a .deb and returns its control and data tar members.
func debMembers(f *os.File) (control, data arMember, err error) {
	fi, err := f.Stat()
	if err != nil {
		return control, data, err
	}
	members, err := readAr(f, fi.Size())
	if err != nil {
		return control, data, err
	}
	if len(members) == 0 || members[0].Name != "debian-binary" {
		return control, data, errors.New("first ar member is not debian-binary: not a Debian package")
	}
	var ver [4]byte
	n, _ := f.ReadAt(ver[:min(int64(len(ver)), members[0].Size)], members[0].Offset)
	if !bytes.HasPrefix(ver[:n], []byte("2.")) {
		return control, data, fmt.Errorf("debian-binary says %q: only format 2.x packages are supported", bytes.TrimSpace(ver[:n]))
	}
	var haveControl, haveData bool
	for _, m := range members[1:] {
		switch {
		case !haveControl && (m.Name == "control.tar" || strings.HasPrefix(m.Name, "control.tar.")):
			control, haveControl = m, true
		case !haveData && (m.Name == "data.tar" || strings.HasPrefix(m.Name, "data.tar.")):
			data, haveData = m, true
		}
	}
	if !haveControl || !haveData {
		return control, data, errors.New("missing control.tar or data.tar member")
	}
	return control, data, nil
}

// openTarMember returns a tar reader over an ar member, decompressing by
// the member's suffix. The returned closer releases the decompressor.
func openTarMember(f *os.File, m arMember) (*tar.Reader, io.Closer, error) {
	kind := compressionOf(m.Name)
	if kind == "" && m.Name != "control.tar" && m.Name != "data.tar" {
		// data.tar.lzma is long obsolete; a clear error beats a guess.
		return nil, nil, fmt.Errorf("member %s: unsupported compression (want none, xz, zst, gz or bz2)", m.Name)
	}
	rc, err := decompress(io.NewSectionReader(f, m.Offset, m.Size), kind)
	if err != nil {
		return nil, nil, fmt.Errorf("member %s: %w", m.Name, err)
	}
	return tar.NewReader(rc), rc, nil
}

// EntryType is the kind of a tar entry Extract kept.
type EntryType int

// The entry types Extract reports. Devices and FIFOs are reported but not
// created (that needs root).
const (
	TypeFile EntryType = iota + 1
	TypeDir
	TypeSymlink
	TypeHardlink
	TypeCharDevice
	TypeBlockDevice
	TypeFifo
)

func (t EntryType) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeHardlink:
		return "hardlink"
	case TypeCharDevice:
		return "char"
	case TypeBlockDevice:
		return "block"
	case TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("EntryType(%d)", int(t))
}

// Entry describes one kept entry of a package's data.tar, as the package
// wants it installed: Extract runs without root and cannot apply owners or
// make device nodes, so the image builder applies them from here.
type Entry struct {
	// Path is relative to the package root, slash-separated, without a
	// leading "./" ("usr/bin/runc").
	Path string
	// Mode holds the permission bits, setuid/setgid/sticky and the type
	// bits, as fs.FileMode.
	Mode     fs.FileMode
	UID, GID int
	Type     EntryType
	// Linkname is a symlink's target as stored, or the cleaned path of a
	// hard link's target.
	Linkname string
	Size     int64
}

// cleanEntryPath turns a tar name into a path relative to the destination,
// refusing names that would land outside it. "" means the root entry ("./").
func cleanEntryPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute path %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("path %q contains \"..\"", name)
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("path %q contains a NUL byte", name)
	}
	p := path.Clean("/" + name)[1:]
	return p, nil
}

// Extract unpacks the data.tar of the .deb at debPath into dest (created if
// missing) and returns what it kept, in archive order. filter, if not nil,
// chooses entries by cleaned path (directories have no trailing slash);
// parents of kept entries are created as needed.
//
// It runs without privileges: regular files keep their mode bits (including
// setuid where the kernel allows it) and mtime, directories get their mode
// and mtime once their contents are written, symlinks and hard links are
// recreated, owners are not applied and device nodes and FIFOs are only
// reported. Entries with absolute paths or "..", and any write that would go
// through a symlink pointing outside dest, are refused with an error: dest
// is opened as an os.Root, which resolves every path inside it.
func Extract(debPath, dest string, filter func(path string) bool) ([]Entry, error) {
	fail := func(err error) ([]Entry, error) {
		return nil, fmt.Errorf("extract %s: %w", debPath, err)
	}
	f, err := os.Open(debPath)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	_, dataMember, err := debMembers(f)
	if err != nil {
		return fail(err)
	}
	tr, closer, err := openTarMember(f, dataMember)
	if err != nil {
		return fail(err)
	}
	defer closer.Close()
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fail(err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return fail(err)
	}
	defer root.Close()

	x := extractor{root: root, kept: map[string]bool{}}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w", dataMember.Name, err))
		}
		name, err := cleanEntryPath(hdr.Name)
		if err != nil {
			return fail(fmt.Errorf("refusing entry: %w", err))
		}
		if name == "" {
			continue // the "./" entry describes dest itself
		}
		if filter != nil && !filter(name) {
			continue
		}
		e, err := x.entry(hdr, name, tr)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", name, err))
		}
		if e != nil {
			x.entries = append(x.entries, *e)
			x.kept[name] = true
		}
	}
	if err := x.finishDirs(); err != nil {
		return fail(err)
	}
	return x.entries, nil
}

type dirMeta struct {
	name  string
	mode  fs.FileMode
	mtime time.Time
}

type extractor struct {
	root    *os.Root
	entries []Entry
	kept    map[string]bool
	dirs    []dirMeta
}

func (x *extractor) entry(hdr *tar.Header, name string, body io.Reader) (*Entry, error) {
	fi := hdr.FileInfo()
	e := &Entry{Path: name, Mode: fi.Mode(), UID: hdr.Uid, GID: hdr.Gid, Size: hdr.Size}
	perm := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if hdr.Typeflag != tar.TypeDir {
		if err := x.makeParent(name); err != nil {
			return nil, err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		e.Type, e.Size = TypeDir, 0
		if err := x.root.MkdirAll(name, 0o755); err != nil {
			return nil, err
		}
		// Applied after the contents: a 0555 directory would refuse
		// them, and writing them changes the mtime.
		x.dirs = append(x.dirs, dirMeta{name: name, mode: perm, mtime: hdr.ModTime})
	case tar.TypeReg, tar.TypeRegA:
		e.Type = TypeFile
		if err := x.replace(name); err != nil {
			return nil, err
		}
		// O_EXCL: replace removed whatever was there, so the name is
		// created fresh and never opened through a planted symlink.
		out, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		n, err := io.Copy(out, body)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		if n != hdr.Size {
			return nil, fmt.Errorf("wrote %d of %d bytes", n, hdr.Size)
		}
		if err := x.root.Chmod(name, perm); err != nil {
			return nil, err
		}
		if err := x.root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
			return nil, err
		}
	case tar.TypeSymlink:
		e.Type, e.Linkname, e.Size = TypeSymlink, hdr.Linkname, 0
		if err := x.replace(name); err != nil {
			return nil, err
		}
		// The target is data: it may be absolute or point anywhere, as
		// it will in the image. Only writing through it is confined.
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return nil, err
		}
		x.symlinkTime(name, hdr.ModTime)
	case tar.TypeLink:
		target, err := cleanEntryPath(hdr.Linkname)
		if err != nil || target == "" {
			return nil, fmt.Errorf("refusing hard link to %q", hdr.Linkname)
		}
		if !x.kept[target] {
			return nil, fmt.Errorf("hard link to %s, which was not extracted: include it in the filter", target)
		}
		e.Type, e.Linkname, e.Size = TypeHardlink, target, 0
		if err := x.replace(name); err != nil {
			return nil, err
		}
		if err := x.root.Link(target, name); err != nil {
			return nil, err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// Making these needs root; the image builder creates them
		// from the returned entry.
		e.Type = map[byte]EntryType{tar.TypeChar: TypeCharDevice, tar.TypeBlock: TypeBlockDevice, tar.TypeFifo: TypeFifo}[hdr.Typeflag]
		e.Size = 0
	default:
		slog.Debug("debian: skipping tar entry of unsupported type", "path", name, "type", hdr.Typeflag)
		return nil, nil
	}
	return e, nil
}

// makeParent creates the directories above name. Through os.Root, a
// symlinked parent is followed only while it stays inside dest.
func (x *extractor) makeParent(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	return x.root.MkdirAll(dir, 0o755)
}

// replace removes an existing non-directory at name, as dpkg replaces files
// on upgrade; a symlink left by an earlier entry must not redirect the new
// content.
func (x *extractor) replace(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("a directory of that name already exists")
	}
	return x.root.Remove(name)
}

// symlinkTime sets a symlink's own mtime (os.Root has no Lchtimes). The
// parent is opened through the root, so this cannot escape dest either.
// Failure is harmless: the image builder normalises times.
func (x *extractor) symlinkTime(name string, t time.Time) {
	dir, err := x.root.Open(path.Dir(name))
	if err != nil {
		return
	}
	defer dir.Close()
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	if err := unix.UtimesNanoAt(int(dir.Fd()), path.Base(name), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		slog.Debug("debian: could not set symlink time", "path", name, "err", err)
	}
}

// finishDirs applies directory modes and mtimes, deepest first so that
// setting a child's time does not change its parent's afterwards.
func (x *extractor) finishDirs() error {
	slices.SortStableFunc(x.dirs, func(a, b dirMeta) int {
		return strings.Count(b.name, "/") - strings.Count(a.name, "/")
	})
	for _, d := range x.dirs {
		if err := x.root.Chmod(d.name, d.mode|fs.ModeDir); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if err := x.root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}

// Control returns the fields of the package's control file.
func Control(debPath string) (map[string]string, error) {
	fail := func(err error) (map[string]string, error) {
		return nil, fmt.Errorf("control of %s: %w", debPath, err)
	}
	f, err := os.Open(debPath)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	controlMember, _, err := debMembers(f)
	if err != nil {
		return fail(err)
	}
	tr, closer, err := openTarMember(f, controlMember)
	if err != nil {
		return fail(err)
	}
	defer closer.Close()
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fail(errors.New("no control file in " + controlMember.Name))
		}
		if err != nil {
			return fail(err)
		}
		if name, err := cleanEntryPath(hdr.Name); err != nil || name != "control" || hdr.Typeflag != tar.TypeReg {
			continue
		}
		stanzas, err := ParseStanzas(io.LimitReader(tr, 1<<20))
		if err != nil {
			return fail(err)
		}
		if len(stanzas) != 1 {
			return fail(fmt.Errorf("control file has %d stanzas, want 1", len(stanzas)))
		}
		return map[string]string(stanzas[0]), nil
	}
}
