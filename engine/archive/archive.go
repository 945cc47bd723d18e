// Package archive unpacks one OCI layer tar stream into a directory that
// overlayfs can stack.
//
// It owns the safety of extraction: every path is resolved inside the target
// directory (github.com/cyphar/filepath-securejoin), entries that climb out
// with "..", relative symlinks that point above the layer root and hardlinks
// to outside paths are refused, and OCI whiteouts become overlayfs
// whiteouts. It must not decompress, verify digests, fsync or decide where a
// layer lives: the store owns durability and placement, the puller owns the
// network and digests.
package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// ErrUnsafe is wrapped by every error about a layer entry that would write
// outside the layer. A layer that triggers it must be discarded whole.
var ErrUnsafe = errors.New("unsafe layer entry")

// Stats counts what Extract wrote.
type Stats struct {
	Entries int64 // tar entries applied, whiteouts included
	Bytes   int64 // bytes of regular file content written
}

// OCI whiteout names (image-spec layer.md) and their overlayfs equivalents
// (Documentation/filesystems/overlayfs.rst: a 0/0 character device hides a
// lower entry, trusted.overlay.opaque=y hides a lower directory's contents).
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

type dirTime struct {
	path  string
	mtime time.Time
}

// Extract applies the tar stream r to dir, which must exist and should be
// empty (each layer is unpacked on its own and stacked by overlayfs, so no
// lower layer content is present). It reads r up to the end of the archive
// only; the caller drains the rest to let digest verification see every byte.
func Extract(r io.Reader, dir string) (Stats, error) {
	var st Stats
	tr := tar.NewReader(r)
	buf := make([]byte, 128<<10)
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read layer tar: %w", err)
		}
		st.Entries++
		if err := apply(dir, hdr, tr, buf, &st, &dirs); err != nil {
			return st, err
		}
	}
	// Directory times last: creating entries inside a directory moves its
	// mtime, and tools such as make inside a container notice.
	for i := len(dirs) - 1; i >= 0; i-- {
		setTimes(dirs[i].path, dirs[i].mtime)
	}
	return st, nil
}

// cleanName turns a tar entry name into a path relative to the layer root,
// refusing any ".." component: legitimate image builders never emit one, and
// lexical cleaning would silently turn an attack into a different file.
func cleanName(name string) (string, error) {
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: %q contains \"..\": the layer is malformed or malicious; rebuild the image", ErrUnsafe, name)
		}
	}
	rel := strings.TrimPrefix(path.Clean("/"+name), "/")
	return rel, nil
}

// escapes reports whether a relative symlink target, taken from the
// directory dirRel of the link, climbs above the layer root. Absolute
// targets are resolved by the kernel inside the container's root, so they
// are harmless and common (/bin/sh -> /bin/busybox).
func escapes(dirRel, target string) bool {
	if path.IsAbs(target) {
		return false
	}
	depth := 0
	if dirRel != "." && dirRel != "" {
		depth = len(strings.Split(dirRel, "/"))
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

func apply(root string, hdr *tar.Header, tr *tar.Reader, buf []byte, st *Stats, dirs *[]dirTime) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		return nil // the "./" entry: the layer root belongs to the store
	}
	dirRel, base := path.Split(rel)
	dirRel = strings.TrimSuffix(dirRel, "/")
	if dirRel == "" {
		dirRel = "."
	}
	// SecureJoin resolves symlinks created by earlier entries as if dir were
	// "/", so "lib/x" under "lib -> /usr/lib" lands in dir/usr/lib/x and never
	// outside dir.
	parent, err := securejoin.SecureJoin(root, dirRel)
	if err != nil {
		return fmt.Errorf("%w: resolve %q: %v", ErrUnsafe, hdr.Name, err)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create parent of %q: %w", hdr.Name, err)
	}

	if base == whiteoutOpaque {
		if err := unix.Setxattr(parent, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("mark %q opaque: %w (the data filesystem must support trusted.* xattrs, e.g. ext4)", dirRel, err)
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		target := filepath.Join(parent, strings.TrimPrefix(base, whiteoutPrefix))
		if err := removeExisting(target, false); err != nil {
			return err
		}
		if err := unix.Mknod(target, unix.S_IFCHR|0o000, 0); err != nil {
			return fmt.Errorf("whiteout %q: %w (creating device nodes needs root / CAP_MKNOD)", hdr.Name, err)
		}
		return nil
	}

	target := filepath.Join(parent, base)
	if err := removeExisting(target, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(target, 0o700); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create directory %q: %w", hdr.Name, err)
		}
		*dirs = append(*dirs, dirTime{target, hdr.ModTime})
	case tar.TypeReg, tar.TypeRegA:
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("create %q: %w", hdr.Name, err)
		}
		n, err := io.CopyBuffer(f, tr, buf)
		st.Bytes += n
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %q: %w", hdr.Name, err)
		}
	case tar.TypeSymlink:
		if escapes(dirRel, hdr.Linkname) {
			return fmt.Errorf("%w: symlink %q -> %q points outside the layer; rebuild the image without it", ErrUnsafe, hdr.Name, hdr.Linkname)
		}
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return fmt.Errorf("create symlink %q: %w", hdr.Name, err)
		}
	case tar.TypeLink:
		lrel, err := cleanName(hdr.Linkname)
		if err != nil || lrel == "" {
			return fmt.Errorf("%w: hardlink %q -> %q leaves the layer", ErrUnsafe, hdr.Name, hdr.Linkname)
		}
		ldir, lbase := path.Split(lrel)
		lparent, err := securejoin.SecureJoin(root, strings.TrimSuffix(ldir, "/"))
		if err != nil {
			return fmt.Errorf("%w: resolve hardlink source %q: %v", ErrUnsafe, hdr.Linkname, err)
		}
		// link(2) does not follow a symlink source, so the new name shares
		// the inode that is inside the layer, whatever it is.
		if err := os.Link(filepath.Join(lparent, lbase), target); err != nil {
			return fmt.Errorf("create hardlink %q -> %q: %w", hdr.Name, hdr.Linkname, err)
		}
		return nil // a hardlink shares the metadata of its source
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := uint32(unix.S_IFIFO)
		if hdr.Typeflag == tar.TypeChar {
			kind = unix.S_IFCHR
		} else if hdr.Typeflag == tar.TypeBlock {
			kind = unix.S_IFBLK
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := unix.Mknod(target, kind|mode, dev); err != nil {
			return fmt.Errorf("create device %q: %w", hdr.Name, err)
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		// Unknown types (contiguous files, GNU sparse maps the reader did not
		// expand) are rare; skipping one is safer than guessing its meaning.
		return nil
	}

	if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown %q: %w", hdr.Name, err)
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			// Capabilities (security.capability) matter for binaries such as
			// ping; a filesystem that refuses one xattr should not fail the
			// pull, so errors other than "unsupported" are reported.
			if err := unix.Lsetxattr(target, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
				return fmt.Errorf("set xattr %s on %q: %w", name, hdr.Name, err)
			}
		}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// chmod after chown: chown clears the setuid and setgid bits.
		if err := os.Chmod(target, os.FileMode(mode&0o777)|modeBits(mode)); err != nil {
			return fmt.Errorf("chmod %q: %w", hdr.Name, err)
		}
	}
	if hdr.Typeflag != tar.TypeDir {
		setTimes(target, hdr.ModTime)
	}
	return nil
}

// modeBits converts the setuid/setgid/sticky bits of a tar mode to Go's.
func modeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// removeExisting clears target for a new entry. A later entry replaces an
// earlier one of the same name; an existing directory survives only when
// the new entry is a directory too (tar may list a directory twice).
func removeExisting(target string, newIsDir bool) error {
	fi, err := os.Lstat(target)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", target, err)
	}
	if fi.IsDir() && newIsDir {
		return nil
	}
	if err := os.RemoveAll(target); err != nil {
		return fmt.Errorf("replace %s: %w", target, err)
	}
	return nil
}

func setTimes(p string, mtime time.Time) {
	if mtime.IsZero() {
		return
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	// Best effort: times are cosmetic and some filesystems refuse them on
	// symlinks.
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
