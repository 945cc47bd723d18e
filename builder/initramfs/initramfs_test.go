package initramfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

var epoch = time.Date(2025, 5, 20, 0, 0, 0, 0, time.UTC)

// sample is an initramfs like the builder's: /init from the host, a JSON
// config, a module, device nodes and a symlink.
func sample(t *testing.T) []File {
	t.Helper()
	init := filepath.Join(t.TempDir(), "initramfs-init")
	if err := os.WriteFile(init, bytes.Repeat([]byte("\x7fELF init "), 5000), 0o755); err != nil {
		t.Fatal(err)
	}
	return []File{
		{Path: "init", Mode: 0o755, Source: init},
		{Path: "etc/bulkhead/initramfs.json", Mode: 0o644, Data: []byte(`{"kernel":"6.1.0-50-arm64"}` + "\n")},
		{Path: "/lib/modules/6.1.0-50-arm64/kernel/fs/ext4/ext4.ko", Mode: 0o644, Data: []byte("module")},
		{Path: "dev", Mode: os.ModeDir | 0o755},
		{Path: "dev/console", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, DevMajor: 5, DevMinor: 1},
		{Path: "dev/sda", Mode: os.ModeDevice | 0o660, DevMajor: 8},
		{Path: "sbin/init", Mode: os.ModeSymlink, Linkname: "../init"},
		{Path: "tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
		{Path: "empty", Mode: 0o600},
		{Path: "dev", Mode: os.ModeDir | 0o755}, // listed twice, harmless
	}
}

func build(t *testing.T, files []File, opt Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, files, opt); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteRoundTripsThroughUrootsReader(t *testing.T) {
	archive := gunzip(t, build(t, sample(t), Options{Time: epoch, Compression: Gzip}))
	if !bytes.HasPrefix(archive, []byte("070701")) {
		t.Fatalf("archive starts %q, want newc magic 070701", archive[:6])
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(archive)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]cpio.Record{}
	inodes := map[uint64]bool{}
	for _, r := range recs {
		names = append(names, r.Name)
		byName[r.Name] = r
		if r.Name == cpio.Trailer {
			continue
		}
		if r.MTime != uint64(epoch.Unix()) || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d, want %d 0 0", r.Name, r.MTime, r.UID, r.GID, epoch.Unix())
		}
		if inodes[r.Ino] || r.Ino == 0 {
			t.Errorf("%s: inode %d reused or zero", r.Name, r.Ino)
		}
		inodes[r.Ino] = true
	}
	want := []string{
		"dev", "dev/console", "dev/sda", "empty", "etc", "etc/bulkhead", "etc/bulkhead/initramfs.json", "init",
		"lib", "lib/modules", "lib/modules/6.1.0-50-arm64", "lib/modules/6.1.0-50-arm64/kernel",
		"lib/modules/6.1.0-50-arm64/kernel/fs", "lib/modules/6.1.0-50-arm64/kernel/fs/ext4",
		"lib/modules/6.1.0-50-arm64/kernel/fs/ext4/ext4.ko", "sbin", "sbin/init", "tmp",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("entries\n%v\nwant\n%v", names, want)
	}
	// The reader stops at the trailer without returning it.
	if tail := archive[len(archive)-128:]; !bytes.Contains(tail, []byte(cpio.Trailer+"\x00")) {
		t.Fatalf("archive does not end with a trailer: %q", tail)
	}
	content := func(name string) string {
		b, err := io.ReadAll(io.NewSectionReader(byName[name], 0, int64(byName[name].FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name    string
		mode    uint64
		content string
	}{
		{"init", cpio.S_IFREG | 0o755, strings.Repeat("\x7fELF init ", 5000)},
		{"etc", cpio.S_IFDIR | 0o755, ""},
		{"sbin/init", cpio.S_IFLNK | 0o777, "../init"},
		{"tmp", cpio.S_IFDIR | cpio.S_ISVTX | 0o777, ""},
		{"dev/console", cpio.S_IFCHR | 0o600, ""},
		{"dev/sda", cpio.S_IFBLK | 0o660, ""},
		{"empty", cpio.S_IFREG | 0o600, ""},
	} {
		r := byName[tc.name]
		if r.Mode != tc.mode {
			t.Errorf("%s: mode %o, want %o", tc.name, r.Mode, tc.mode)
		}
		if got := content(tc.name); got != tc.content {
			t.Errorf("%s: content %.20q, want %.20q", tc.name, got, tc.content)
		}
	}
	if c := byName["dev/console"]; c.Rmajor != 5 || c.Rminor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.Rmajor, c.Rminor)
	}
	if d := byName["lib/modules"]; d.NLink != 3 {
		t.Errorf("lib/modules nlink %d, want 3 (one subdirectory)", d.NLink)
	}
}

func TestWriteIsReadableByGNUCpio(t *testing.T) {
	cpioPath, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatalf("install GNU cpio to run this test (apt-get install cpio): %v", err)
	}
	archive := gunzip(t, build(t, sample(t), Options{Time: epoch}))
	cmd := exec.Command(cpioPath, "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"sbin/init -> ../init",
		"drwxr-xr-x   2 root     root            0 May 20  2025 etc/bulkhead\n",
		"-rwxr-xr-x   1 root     root        50000 May 20  2025 init\n",
		"crw-------   1 root     root       5,   1 May 20  2025 dev/console\n",
		"drwxrwxrwt",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("cpio -itv lacks %q:\n%s", want, listing)
		}
	}

	// Extraction gives the files back with their contents.
	dir := t.TempDir()
	files := sample(t)
	files = slices.DeleteFunc(files, func(f File) bool { return f.Mode&os.ModeDevice != 0 }) // needs no privileges
	cmd = exec.Command(cpioPath, "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(gunzip(t, build(t, files, Options{Time: epoch})))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "etc/bulkhead/initramfs.json")); string(got) != `{"kernel":"6.1.0-50-arm64"}`+"\n" {
		t.Errorf("extracted config %q", got)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "sbin/init")); target != "../init" {
		t.Errorf("extracted symlink -> %q", target)
	}
	if fi, err := os.Stat(filepath.Join(dir, "init")); err != nil || !fi.ModTime().Equal(epoch) || fi.Mode().Perm() != 0o755 {
		t.Errorf("extracted init: %v %v", fi, err)
	}
}

func TestWriteIsReproducible(t *testing.T) {
	files := sample(t)
	a := build(t, files, Options{Time: epoch})
	shuffled := slices.Clone(files)
	slices.Reverse(shuffled)
	b := build(t, shuffled, Options{Time: epoch})
	if !bytes.Equal(a, b) {
		t.Fatal("same files in another order gave different bytes")
	}
	if h := a[:10]; !bytes.Equal(h[4:8], []byte{0, 0, 0, 0}) || h[3] != 0 {
		t.Errorf("gzip header % x carries a time or name", h)
	}
	c := build(t, files, Options{Time: epoch.Add(time.Second)})
	if bytes.Equal(a, c) {
		t.Fatal("Options.Time does not reach the archive")
	}
}

func TestWriteCompressions(t *testing.T) {
	files := sample(t)
	plain := build(t, files, Options{Time: epoch, Compression: None})
	if !bytes.HasPrefix(plain, []byte("070701")) {
		t.Fatal("uncompressed archive lacks the newc magic")
	}
	z := build(t, files, Options{Time: epoch, Compression: Zstd})
	d, _ := zstd.NewReader(nil)
	unz, err := d.DecodeAll(z, nil)
	if err != nil || !bytes.Equal(unz, plain) {
		t.Fatalf("zstd archive does not decompress to the plain one: %v", err)
	}
	if !bytes.Equal(gunzip(t, build(t, files, Options{Time: epoch})), plain) {
		t.Fatal("gzip archive does not decompress to the plain one")
	}
	if err := Write(io.Discard, files, Options{Compression: "lz4"}); err == nil || !strings.Contains(err.Error(), "gzip, zstd or none") {
		t.Fatalf("err = %v", err)
	}
}

func TestWriteRejectsBadEntries(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("x"), 0o644)
	for _, tc := range []struct {
		name  string
		files []File
		opt   Options
		want  string
	}{
		{"a path escaping the root", []File{{Path: "../etc/passwd", Data: []byte("x")}}, Options{}, `contains ".."`},
		{"the root itself", []File{{Path: "/", Mode: os.ModeDir}}, Options{}, "root directory is implicit"},
		{"a file listed twice", []File{{Path: "a", Data: []byte("1")}, {Path: "/a", Data: []byte("2")}}, Options{}, "a listed twice"},
		{"a file used as a directory", []File{{Path: "a", Data: []byte("1")}, {Path: "a/b"}}, Options{}, "needs a to be a directory"},
		{"a symlink without target", []File{{Path: "l", Mode: os.ModeSymlink}}, Options{}, "needs a Linkname"},
		{"both Data and Source", []File{{Path: "f", Data: []byte("1"), Source: src}}, Options{}, "both Data and Source"},
		{"a directory as Source", []File{{Path: "f", Source: filepath.Dir(src)}}, Options{}, "not a regular file"},
		{"a missing Source", []File{{Path: "f", Source: src + ".gone"}}, Options{}, "no such file"},
		{"a directory with data", []File{{Path: "d", Mode: os.ModeDir, Data: []byte("x")}}, Options{}, "is a directory"},
		{"a time before 1970", []File{{Path: "f"}}, Options{Time: time.Unix(-1, 0)}, "SOURCE_DATE_EPOCH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(io.Discard, tc.files, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWriteNoticesASourceThatChanged(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("short"), 0o644)
	files := []File{{Path: "f", Source: src}}
	recs, err := plan(files, 0)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(src, []byte("much longer now"), 0o644)
	var buf bytes.Buffer
	if err := cpio.Newc.Writer(&buf).WriteRecord(recs[0]); err == nil {
		t.Fatal("a source that grew after planning was archived silently")
	}
}
