// Package cache owns Bulkhead's content-addressed download cache: every file
// the builder downloads (Debian indexes, .deb packages) is stored under its
// SHA-256 digest, and trees derived from those files (extracted packages) are
// stored under a caller-chosen kind and key.
//
// The cache lives outside the repository ($BULKHEAD_CACHE, else
// $XDG_CACHE_HOME/bulkhead, else ~/.cache/bulkhead) so that a clean checkout,
// `git clean` or a second worktree reuse the same downloads, and a warm cache
// plus a lock file lets a build run without any network.
//
// The package must not know where content comes from (no HTTP, no Debian
// knowledge) and must never hand out a file whose bytes do not match its
// name: entries only appear through an atomic rename after the digest was
// checked, so several builders may share one cache concurrently.
package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// ErrCorrupt is wrapped by errors about content whose SHA-256 does not match
// the digest it was stored or offered under.
var ErrCorrupt = errors.New("content does not match its sha256")

// Cache is a content-addressed store rooted at one directory.
//
// Layout:
//
//	<root>/sha256/<first two hex digits>/<64 hex digits>   blobs
//	<root>/tree/<kind>/<key>/                              derived trees
//
// The two-digit fan-out keeps directories small enough for fast lookups
// on every filesystem; a cache of a few boards holds thousands of .debs.
type Cache struct {
	root string
}

// DefaultRoot returns where the cache lives when the caller did not choose:
// $BULKHEAD_CACHE, else $XDG_CACHE_HOME/bulkhead, else ~/.cache/bulkhead.
// It returns "" only when none of these can be determined (no home
// directory), and Open then reports how to set BULKHEAD_CACHE.
func DefaultRoot() string {
	if d := os.Getenv("BULKHEAD_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "bulkhead")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, ".cache", "bulkhead")
}

// Open creates (if needed) and opens the cache rooted at root. An empty root
// means DefaultRoot().
func Open(root string) (*Cache, error) {
	if root == "" {
		root = DefaultRoot()
	}
	if root == "" {
		return nil, errors.New("open download cache: no home directory to put ~/.cache/bulkhead in: set BULKHEAD_CACHE to a writable directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open download cache %s: %w", root, err)
	}
	for _, d := range []string{filepath.Join(abs, "sha256"), filepath.Join(abs, "tree")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open download cache %s: %w: make it writable or point BULKHEAD_CACHE elsewhere", abs, err)
		}
	}
	return &Cache{root: abs}, nil
}

// Root returns the absolute directory of the cache.
func (c *Cache) Root() string { return c.root }

// validDigest reports whether d is a lowercase hex SHA-256. Digests become
// path names, so anything else (upper case, "..", slashes) is refused rather
// than normalised.
func validDigest(d string) bool {
	if len(d) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (c *Cache) blobPath(digest string) string {
	return filepath.Join(c.root, "sha256", digest[:2], digest)
}

// Path returns the file holding the content with the given SHA-256 and
// whether it is present. An empty file never counts as present: a
// zero-length entry can only come from a crash on a filesystem that lost
// the data but kept the rename, and nothing Bulkhead downloads is empty.
func (c *Cache) Path(digest string) (string, bool) {
	if !validDigest(digest) {
		return "", false
	}
	p := c.blobPath(digest)
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return p, false
	}
	return p, true
}

// Put stores the content read from r under digest and returns its path.
// The content is hashed while it is written to a temporary file next to the
// final one; only if the hash matches is the file synced and renamed into
// place, so a reader of the cache never sees a partial or wrong file. On a
// mismatch the temporary file is deleted and the error wraps ErrCorrupt.
// An error from r (a dropped connection, a size check in the caller's reader)
// is returned wrapped and also leaves nothing behind.
func (c *Cache) Put(digest string, r io.Reader) (string, error) {
	if !validDigest(digest) {
		return "", fmt.Errorf("cache put: %q is not a lowercase hex sha256 digest", digest)
	}
	final := c.blobPath(digest)
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cache put %s: %w", digest, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+digest[:12]+"-*")
	if err != nil {
		return "", fmt.Errorf("cache put %s: %w", digest, err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err != nil {
		return "", fmt.Errorf("cache put %s: after %d bytes: %w", digest, n, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != digest {
		return "", fmt.Errorf("cache put: %w: expected %s, got %s (%d bytes); nothing was stored", ErrCorrupt, digest, got, n)
	}
	// CreateTemp makes 0600 files; cached files are plain public data that
	// other tools (and a builder running as another user with a shared
	// BULKHEAD_CACHE) may read.
	if err := tmp.Chmod(0o644); err != nil {
		return "", fmt.Errorf("cache put %s: %w", digest, err)
	}
	// Sync before rename: otherwise a power cut can leave the final name
	// pointing at a zero-length or partial file on ext4/xfs.
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("cache put %s: sync: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("cache put %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("cache put %s: %w", digest, err)
	}
	keep = true
	syncDir(dir)
	slog.Debug("cache: stored", "sha256", digest, "bytes", n)
	return final, nil
}

// Verify re-hashes the entry stored under digest. A missing entry returns an
// error wrapping fs.ErrNotExist. A corrupt entry (bit rot, a truncated copy,
// someone editing the cache) is deleted and the error wraps ErrCorrupt and
// says so, so the caller can download it again.
func (c *Cache) Verify(digest string) error {
	if !validDigest(digest) {
		return fmt.Errorf("cache verify: %q is not a lowercase hex sha256 digest", digest)
	}
	p := c.blobPath(digest)
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("cache verify %s: %w", digest, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("cache verify %s: %w", p, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest || n == 0 {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("cache entry %s is corrupt (%d bytes hash to %s) and could not be deleted: %v: delete it by hand", p, n, got, rerr)
		}
		return fmt.Errorf("cache entry %s is corrupt: %w (%d bytes hash to %s); it was deleted, run the build again to download it again", p, ErrCorrupt, n, got)
	}
	return nil
}

// validName reports whether s can be one path component of the tree area.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`) &&
		!strings.HasPrefix(s, ".tmp-") && !strings.ContainsRune(s, 0)
}

// Dir returns the derived tree stored under kind and key and whether it is
// present. Trees appear only through PutDir's atomic rename, so a present
// tree is always complete.
func (c *Cache) Dir(kind, key string) (string, bool) {
	if !validName(kind) || !validName(key) {
		return "", false
	}
	p := filepath.Join(c.root, "tree", kind, key)
	fi, err := os.Stat(p)
	return p, err == nil && fi.IsDir()
}

// PutDir creates the tree stored under kind and key by calling build with an
// empty temporary directory on the same filesystem, then renames that
// directory into place. If build fails, nothing is stored. If another
// builder stored the same tree meanwhile, its tree wins, ours is removed,
// and the existing path is returned: trees are derived from content, so
// both are the same.
//
// A tree that is already present is returned without calling build.
// kind and key must be single path components (for example kind "deb" and
// the .deb's SHA-256 as key).
func (c *Cache) PutDir(kind, key string, build func(tmpDir string) error) (string, error) {
	if !validName(kind) || !validName(key) {
		return "", fmt.Errorf("cache tree %q/%q: kind and key must be non-empty single path components", kind, key)
	}
	parent := filepath.Join(c.root, "tree", kind)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("cache tree %s/%s: %w", kind, key, err)
	}
	final := filepath.Join(parent, key)
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, nil
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-"+key+"-*")
	if err != nil {
		return "", fmt.Errorf("cache tree %s/%s: %w", kind, key, err)
	}
	if err := build(tmp); err != nil {
		removeTree(tmp)
		return "", fmt.Errorf("cache tree %s/%s: %w", kind, key, err)
	}
	// MkdirTemp makes the directory 0700; a derived tree is as public as
	// the blob it came from.
	if err := os.Chmod(tmp, 0o755); err != nil {
		removeTree(tmp)
		return "", fmt.Errorf("cache tree %s/%s: %w", kind, key, err)
	}
	if err := syncTree(tmp); err != nil {
		removeTree(tmp)
		return "", fmt.Errorf("cache tree %s/%s: sync: %w", kind, key, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// rename(2) onto a non-empty directory fails with EEXIST or
		// ENOTEMPTY: another builder finished first.
		if fi, serr := os.Stat(final); serr == nil && fi.IsDir() {
			removeTree(tmp)
			return final, nil
		}
		removeTree(tmp)
		return "", fmt.Errorf("cache tree %s/%s: %w", kind, key, err)
	}
	syncDir(parent)
	return final, nil
}

// removeTree deletes a temporary tree even if build left read-only
// directories in it (extracted packages keep their modes, and 0555
// directories are common), which os.RemoveAll alone cannot empty.
func removeTree(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		slog.Debug("cache: could not remove temporary tree", "dir", dir, "err", err)
	}
}

// syncTree fsyncs every regular file and directory under dir so that the
// rename in PutDir publishes durable content. Files without read permission
// for us are skipped: they cannot be opened to sync, and a tree builder that
// makes them is rare enough that a lost write after a power cut is an
// acceptable cost (the cache entry would be rebuilt on a hash mismatch later).
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() && !d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		if err := f.Sync(); err != nil && !d.IsDir() {
			return err
		}
		return nil
	})
}

// syncDir makes a rename durable. Failure only weakens durability, never
// correctness (the rename itself already happened), so it is only logged.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	if err := d.Sync(); err != nil {
		slog.Debug("cache: directory sync failed", "dir", dir, "err", err)
	}
	d.Close()
}
