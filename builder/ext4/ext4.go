// Package ext4 turns a directory tree into a reproducible ext4 image: the
// read-only root slots and the data partition.
//
// It owns the choice of ext4 features and mke2fs settings, and the
// normalisation that makes two builds of the same tree byte-identical. The
// filesystem itself is written by e2fsprogs (mke2fs -d, then debugfs), the
// reference implementation, rather than by a Go ext4 writer: go-diskfs's is
// neither reproducible nor safe to modify.
//
// It must not decide what goes into the tree (earlier stages do), must not
// read the clock or the host's /etc/mke2fs.conf into the image, and must
// not need root.
package ext4

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options describe one filesystem image.
type Options struct {
	// Dir is the tree to copy into the image. Modes, symlinks, hard links,
	// device nodes and extended attributes are copied; owners and times
	// are not (see Owners and Time).
	Dir string
	// Output is the image file to create; it is replaced atomically.
	Output string
	// Size of the filesystem in bytes, a multiple of 4096.
	Size int64
	// Label is the volume label (at most 16 bytes).
	Label string
	// UUID is the filesystem UUID, derived from the image identity.
	UUID string
	// HashSeed seeds the directory-index hash; empty means UUID.
	HashSeed string
	// Time becomes every inode's atime, mtime, ctime and crtime and the
	// superblock's creation, check and write times (whole seconds).
	Time time.Time
	// Journal adds an ext4 journal: true for the data partition, false
	// for the read-only root slots, which never need replaying.
	Journal bool
	// Owners maps an image path ("/", "/etc/shadow") to its owner; a nil
	// function or ok=false means root:root. The builder's own uid never
	// reaches the image.
	Owners func(path string) (uid, gid uint32, ok bool)
}

// blockSize is fixed: 4 KiB blocks are what U-Boot's ext4load, the Linux
// page size and bmap's block size have in common.
const blockSize = 4096

// mke2fsConf replaces the host's /etc/mke2fs.conf (via MKE2FS_CONFIG) so
// that the image depends on the e2fsprogs version only, not on how the build
// machine's distribution configured it. The "bulkhead" usage type stops
// mke2fs from picking "small" (1 KiB blocks) for images under 512 MiB.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	bulkhead = {
		inode_ratio = 16384
	}
`

// features are switched off on top of mke2fsConf (which already leaves them
// out) so that the intent survives edits there. Bootloader ext4 drivers
// (U-Boot's ext4load, GRUB's ext2 module, which read the kernel from a root
// slot) refuse incompat features they do not know, and metadata_csum_seed
// is one that older builds of both do not know; orphan_file is new in
// e2fsprogs 1.47's defaults and needs Linux 5.15+ to mount read-write.
// Neither buys Bulkhead anything. What remains (64bit, extents, flex_bg,
// metadata_csum) is read by Debian's Linux 6.1 and U-Boot 2023.01; U-Boot
// only refuses to write metadata_csum filesystems, and it never writes ours.
var features = []string{"^orphan_file", "^metadata_csum_seed"}

// Build creates the image described by opt.
func Build(ctx context.Context, opt Options) error {
	if err := build(ctx, opt); err != nil {
		return fmt.Errorf("ext4: %s: %w", opt.Output, err)
	}
	return nil
}

func build(ctx context.Context, opt Options) error {
	if err := checkOptions(&opt); err != nil {
		return err
	}
	tools, err := findTools()
	if err != nil {
		return err
	}
	entries, use, err := scanTree(opt.Dir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(opt.Output), ".ext4-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	conf := filepath.Join(work, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o644); err != nil {
		return err
	}
	env := toolEnv(conf, opt.Time)

	tmp := filepath.Join(work, "image")
	if err := createSparse(tmp, opt.Size); err != nil {
		return err
	}
	if out, err := run(ctx, env, tools.mke2fs, mke2fsArgs(opt, tmp, true)...); err != nil {
		if bytes.Contains(out, []byte("Could not allocate")) || bytes.Contains(out, []byte("No space left")) {
			return tooSmall(ctx, env, tools, opt, work, use, out)
		}
		return fmt.Errorf("mke2fs: %w\n%s", err, out)
	}
	if err := normalise(ctx, env, tools, opt, tmp, entries); err != nil {
		return err
	}
	if opt.Journal {
		if err := mapJournal(ctx, env, tools, tmp); err != nil {
			return err
		}
	}
	return commit(tmp, opt.Output)
}

func checkOptions(opt *Options) error {
	switch {
	case opt.Dir == "" || opt.Output == "":
		return errors.New("Dir and Output must be set")
	case opt.Size <= 0 || opt.Size%blockSize != 0:
		return fmt.Errorf("size %d is not a positive multiple of %d bytes", opt.Size, blockSize)
	case len(opt.Label) > 16:
		return fmt.Errorf("label %q is longer than ext4's 16 bytes", opt.Label)
	case opt.Time.Unix() < 0:
		return fmt.Errorf("time %v is before 1970: set Time from the release (e.g. SOURCE_DATE_EPOCH)", opt.Time)
	case !isUUID(opt.UUID):
		return fmt.Errorf("UUID %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx: derive one (disk.DeriveUUID)", opt.UUID)
	}
	if opt.HashSeed == "" {
		opt.HashSeed = opt.UUID
	}
	if !isUUID(opt.HashSeed) {
		return fmt.Errorf("hash seed %q is not a UUID", opt.HashSeed)
	}
	if fi, err := os.Stat(opt.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("tree %q is not a directory (%v)", opt.Dir, err)
	}
	return nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !strings.ContainsRune("0123456789abcdefABCDEF", c):
			return false
		}
	}
	return true
}

type tools struct{ mke2fs, debugfs, dumpe2fs string }

// ToolDirs are searched after PATH: Debian keeps e2fsprogs in /sbin, outside
// a normal user's PATH.
var ToolDirs = []string{"/usr/sbin", "/sbin"}

func findTools() (tools, error) {
	var t tools
	for _, p := range []struct {
		name string
		dst  *string
	}{{"mke2fs", &t.mke2fs}, {"debugfs", &t.debugfs}, {"dumpe2fs", &t.dumpe2fs}} {
		path, err := exec.LookPath(p.name)
		if err != nil {
			for _, dir := range ToolDirs {
				if _, serr := os.Stat(filepath.Join(dir, p.name)); serr == nil {
					path, err = filepath.Join(dir, p.name), nil
					break
				}
			}
		}
		if err != nil {
			return t, fmt.Errorf("%s not found: install e2fsprogs (apt-get install e2fsprogs)", p.name)
		}
		*p.dst = path
	}
	return t, nil
}

// toolEnv is the environment of every e2fsprogs run: E2FSPROGS_FAKE_TIME
// replaces the clock (superblock times, the crtime of new inodes, the write
// time debugfs records when it closes the image), and the C locale keeps
// messages parseable.
func toolEnv(conf string, t time.Time) []string {
	env := []string{
		"MKE2FS_CONFIG=" + conf,
		"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(t.Unix(), 10),
		"LC_ALL=C",
	}
	if p, ok := os.LookupEnv("PATH"); ok {
		env = append(env, "PATH="+p)
	}
	return env
}

func mke2fsArgs(opt Options, image string, withTree bool) []string {
	feat := append([]string(nil), features...)
	reserve := "5"
	if !opt.Journal {
		// A read-only slot is never written, so blocks reserved for root
		// would be dead space.
		feat = append(feat, "^has_journal")
		reserve = "0"
	}
	args := []string{
		"-q", "-F",
		"-t", "ext4", "-T", "bulkhead",
		"-b", strconv.Itoa(blockSize),
		"-I", "256",
		"-m", reserve,
		"-o", "Linux",
		"-O", strings.Join(feat, ","),
		// nodiscard: on a regular file mke2fs would punch holes and then
		// trust them to read as zeros, marking inode tables as zeroed
		// although nothing was written. lazy_itable_init=1 makes no such
		// promise (Linux zeroes unused inode tables itself on the first
		// read-write mount), so holes there are harmless after a bmap
		// flash. lazy_journal_init=0 asks for a zeroed journal, which
		// mapJournal then makes real (see there).
		"-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=0,root_owner=0:0,hash_seed=" + strings.ToLower(opt.HashSeed),
		"-U", strings.ToLower(opt.UUID),
		"-L", opt.Label,
	}
	if withTree {
		args = append(args, "-d", opt.Dir)
	}
	return append(args, image, strconv.FormatInt(opt.Size/blockSize, 10))
}

func run(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = nil
	return cmd.CombinedOutput()
}

func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// usage is a lower bound of what a tree needs, for the too-small error.
type usage struct {
	bytes  int64
	inodes int64
}

// scanTree lists every path of the tree as the image names it ("/",
// "/etc/passwd"), in sorted order, and estimates its
// size: data blocks, one block per directory (more for big ones), one per
// symlink too long to live in its inode, hard links counted once.
func scanTree(dir string) ([]string, usage, error) {
	var (
		entries []string
		use     usage
		seen    = map[[2]uint64]bool{}
	)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(rel)
		if rel == "." {
			name = "/"
		}
		if strings.ContainsAny(name, "\n\r\x00") {
			return fmt.Errorf("path %q contains a line break, which debugfs commands cannot express: rename it", name)
		}
		entries = append(entries, name)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && !d.IsDir() {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		use.inodes++
		switch {
		case fi.Mode().IsRegular():
			use.bytes += (fi.Size() + blockSize - 1) / blockSize * blockSize
		case d.IsDir():
			use.bytes += blockSize
		case fi.Mode()&fs.ModeSymlink != 0 && fi.Size() >= 60:
			use.bytes += blockSize
		}
		return nil
	})
	if err != nil {
		return nil, use, fmt.Errorf("scan tree %s: %w", dir, err)
	}
	return entries, use, nil
}

// TooSmallError reports a tree that does not fit the requested size.
type TooSmallError struct {
	Dir                   string
	Size                  int64 // requested filesystem size
	NeedBytes, NeedInodes int64 // lower bound of what the tree needs
	FreeBytes, FreeInodes int64 // what an empty filesystem of Size offers
	Mke2fs                string
}

func (e *TooSmallError) Error() string {
	return fmt.Sprintf("tree %s does not fit: it needs at least %d MiB in %d inodes, a %d MiB ext4 has %d MiB and %d inodes free (%s): set a larger root size in the board file",
		e.Dir, mibUp(e.NeedBytes), e.NeedInodes, e.Size>>20, e.FreeBytes>>20, e.FreeInodes, e.Mke2fs)
}

func mibUp(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// tooSmall measures an empty filesystem of the same size to say how much
// room there was.
func tooSmall(ctx context.Context, env []string, t tools, opt Options, work string, use usage, mkOut []byte) error {
	e := &TooSmallError{Dir: opt.Dir, Size: opt.Size, NeedBytes: use.bytes, NeedInodes: use.inodes, Mke2fs: lastLine(mkOut)}
	probe := filepath.Join(work, "probe")
	if err := createSparse(probe, opt.Size); err != nil {
		return e
	}
	if _, err := run(ctx, env, t.mke2fs, mke2fsArgs(opt, probe, false)...); err != nil {
		return e
	}
	out, err := run(ctx, env, t.dumpe2fs, "-h", probe)
	if err != nil {
		return e
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "Free blocks":
			e.FreeBytes = n * blockSize
		case "Free inodes":
			e.FreeInodes = n
		}
	}
	return e
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// quote makes a path one debugfs argument: inside double quotes, a double
// quote is written twice.
func quote(p string) string {
	return `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
}

// normalise rewrites what mke2fs copied from the host and cannot be told to
// set: every inode's times (mke2fs copies the source's ctime, which nobody
// can set, so two builds would differ in it) and owners, and the
// superblock's creation and check times. Each _extra field (nanoseconds and
// the epoch bits beyond 2038) is cleared before its time is set, because
// setting the time fills in the epoch bits.
func normalise(ctx context.Context, env []string, t tools, opt Options, image string, entries []string) error {
	ts := "@" + strconv.FormatInt(opt.Time.Unix(), 10)
	var cmds strings.Builder
	set := func(p, field, value string) {
		fmt.Fprintf(&cmds, "sif %s %s %s\n", quote(p), field, value)
	}
	paths := append([]string(nil), entries...)
	if !slices.Contains(paths, "/lost+found") {
		paths = append(paths, "/lost+found")
	}
	for _, p := range paths {
		uid, gid := uint32(0), uint32(0)
		if opt.Owners != nil {
			if u, g, ok := opt.Owners(p); ok {
				uid, gid = u, g
			}
		}
		set(p, "uid", strconv.FormatUint(uint64(uid), 10))
		set(p, "gid", strconv.FormatUint(uint64(gid), 10))
		for _, f := range []string{"atime", "mtime", "ctime", "crtime"} {
			set(p, f+"_extra", "0")
			set(p, f, ts)
		}
	}
	for _, f := range []string{"mkfs_time", "lastcheck"} {
		fmt.Fprintf(&cmds, "ssv %s %s\n", f, ts)
	}
	cmdFile := filepath.Join(filepath.Dir(image), "debugfs.cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, t.debugfs, "-w", "-f", cmdFile, image)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs: %w\n%s", err, stderr.Bytes())
	}
	// debugfs exits 0 even when a command fails; anything on stderr
	// besides its version banner is a failure.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !strings.HasPrefix(line, "debugfs ") {
			return fmt.Errorf("debugfs while normalising owners and times: %s", strings.TrimSpace(stderr.String()))
		}
	}
	return nil
}

// mapJournal writes the journal's blocks back so that they are data in the
// image file. mke2fs zeroes the journal with fallocate(ZERO_RANGE), which
// leaves unwritten extents that SEEK_DATA reports as holes (measured on
// ext4); bmap would then skip them, and a card flashed over an older
// Bulkhead image with the same UUID could present stale journal blocks whose
// sequence numbers continue the new journal's, to be replayed after the
// first crash. Writing the zeros makes the flash overwrite them.
func mapJournal(ctx context.Context, env []string, t tools, image string) error {
	out, err := run(ctx, env, t.debugfs, "-R", "blocks <8>", image)
	if err != nil {
		return fmt.Errorf("debugfs blocks <8>: %w\n%s", err, out)
	}
	var blocks []int64
	for _, f := range strings.Fields(string(out)) {
		if n, err := strconv.ParseInt(f, 10, 64); err == nil {
			blocks = append(blocks, n)
		}
	}
	if len(blocks) == 0 {
		return fmt.Errorf("debugfs found no journal blocks in %s:\n%s", image, out)
	}
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 256*blockSize)
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j] == blocks[j-1]+1 && j-i < 256 {
			j++
		}
		b := buf[:(j-i)*blockSize]
		off := blocks[i] * blockSize
		if _, err := f.ReadAt(b, off); err != nil {
			return fmt.Errorf("read journal blocks at %d: %w", blocks[i], err)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			return fmt.Errorf("write journal blocks at %d: %w", blocks[i], err)
		}
		i = j
	}
	return f.Close()
}

// commit syncs the finished image and renames it into place, so a failed
// build never leaves a half-written image at Output.
func commit(tmp, out string) error {
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
