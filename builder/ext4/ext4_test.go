package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/bmap"
)

const mib = 1 << 20

var buildTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// treeItem is one thing makeTree creates.
type treeItem struct {
	path   string
	mode   os.FileMode // permission bits and os.ModeSetuid
	data   string
	link   string // symlink target
	hard   string // hard link to this path
	dir    bool
	owners [2]uint32
}

func treeItems() []treeItem {
	long := strings.Repeat("very-long-target-name/", 5) + "end"
	items := []treeItem{
		{path: "etc", dir: true, mode: 0o755},
		{path: "etc/passwd", mode: 0o644, data: "root:x:0:0:root:/root:/bin/sh\n"},
		{path: "etc/shadow", mode: 0o640, data: "root:*:19000::::::\n", owners: [2]uint32{0, 42}},
		{path: "usr", dir: true, mode: 0o755},
		{path: "usr/bin", dir: true, mode: 0o755},
		{path: "usr/bin/su", mode: os.ModeSetuid | 0o755, data: "\x7fELF pretend setuid binary"},
		{path: "usr/bin/sudoedit", hard: "usr/bin/su"},
		{path: "bin", link: "usr/bin"},
		{path: "long-link", link: long},
		{path: "home", dir: true, mode: 0o755},
		{path: "home/user", dir: true, mode: 0o700, owners: [2]uint32{1000, 1000}},
		{path: "home/user/notes.txt", mode: 0o600, data: "mine", owners: [2]uint32{1000, 1000}},
		{path: "data", dir: true, mode: 0o755},
		{path: "empty", mode: 0o644},
		{path: `odd name with "quotes" and spaces`, mode: 0o644, data: "odd"},
		{path: "big.bin", mode: 0o644, data: strings.Repeat("0123456789abcdef", 64<<10)},
		{path: "many", dir: true, mode: 0o755},
	}
	for i := 0; i < 300; i++ {
		items = append(items, treeItem{path: fmt.Sprintf("many/file-%03d", i), mode: 0o644, data: fmt.Sprint(i)})
	}
	return items
}

// makeTree creates the test tree under dir, forwards or backwards (so that
// readdir order and inode numbers of the source differ), with source times
// that differ between calls.
func makeTree(t *testing.T, dir string, backwards bool, stamp time.Time) {
	t.Helper()
	items := treeItems()
	// Directories first so that files have a parent; the rest in the
	// requested order.
	var order []treeItem
	for _, it := range items {
		if it.dir {
			order = append(order, it)
		}
	}
	var rest []treeItem
	for _, it := range items {
		if !it.dir && it.hard == "" {
			rest = append(rest, it)
		}
	}
	if backwards {
		for i, j := 0, len(rest)-1; i < j; i, j = i+1, j-1 {
			rest[i], rest[j] = rest[j], rest[i]
		}
	}
	order = append(order, rest...)
	for _, it := range items {
		if it.hard != "" {
			order = append(order, it)
		}
	}
	for _, it := range order {
		p := filepath.Join(dir, it.path)
		var err error
		switch {
		case it.dir:
			err = os.Mkdir(p, 0o755)
		case it.link != "":
			err = os.Symlink(it.link, p)
		case it.hard != "":
			err = os.Link(filepath.Join(dir, it.hard), p)
		default:
			err = os.WriteFile(p, []byte(it.data), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		if it.link == "" && it.hard == "" {
			if err := os.Chmod(p, it.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, stamp, stamp); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func owners(path string) (uint32, uint32, bool) {
	for _, it := range treeItems() {
		if "/"+it.path == path && it.owners != [2]uint32{} {
			return it.owners[0], it.owners[1], true
		}
	}
	return 0, 0, false
}

func options(dir, out string, journal bool) Options {
	return Options{
		Dir: dir, Output: out, Size: 64 * mib, Label: "root-a",
		UUID: "0b3a7f2e-5c1d-4e6f-8a9b-0c1d2e3f4a5b", Time: buildTime, Journal: journal, Owners: owners,
	}
}

func needTools(t *testing.T) {
	t.Helper()
	if _, err := findTools(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("e2fsck"); err != nil {
		if _, err := os.Stat("/usr/sbin/e2fsck"); err != nil {
			t.Skip("e2fsck not installed")
		}
	}
}

func buildTree(t *testing.T, journal, backwards bool, stamp time.Time) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	makeTree(t, tree, backwards, stamp)
	out := filepath.Join(dir, "root.ext4")
	if err := Build(context.Background(), options(tree, out, journal)); err != nil {
		t.Fatal(err)
	}
	return out
}

// e2fsckClean fails unless e2fsck -fn finds nothing.
func e2fsckClean(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func debugfs(t *testing.T, img, request string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", request, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", request, err)
	}
	return string(out)
}

func TestBuildMakesACleanFilesystem(t *testing.T) {
	needTools(t)
	for _, journal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%v", journal), func(t *testing.T) {
			img := buildTree(t, journal, false, time.Now())
			e2fsckClean(t, img)
			hdr := debugfs(t, img, "stats")
			for _, want := range []string{
				"Filesystem UUID:          0b3a7f2e-5c1d-4e6f-8a9b-0c1d2e3f4a5b",
				"Filesystem volume name:   root-a",
				"Directory Hash Seed:      0b3a7f2e-5c1d-4e6f-8a9b-0c1d2e3f4a5b",
				"Block size:               4096",
				"Filesystem created:       Mon May  6 07:08:09 2024",
				"Last write time:          Mon May  6 07:08:09 2024",
				"Last checked:             Mon May  6 07:08:09 2024",
			} {
				if !strings.Contains(hdr, want) {
					t.Errorf("superblock lacks %q", want)
				}
			}
			if strings.Contains(hdr, "orphan_file") || strings.Contains(hdr, "metadata_csum_seed") ||
				strings.Contains(hdr, "has_journal") != journal {
				t.Errorf("unexpected features:\n%s", hdr)
			}
		})
	}
}

func TestBuildSetsModesOwnersAndTimes(t *testing.T) {
	needTools(t)
	img := buildTree(t, false, false, time.Now())
	stamp := fmt.Sprintf("0x%08x:00000000", buildTime.Unix())
	cases := []struct {
		path, mode string
		uid, gid   int
	}{
		{"/", "0755", 0, 0},
		{"/etc/shadow", "0640", 0, 42},
		{"/usr/bin/su", "04755", 0, 0},
		{"/usr/bin/sudoedit", "04755", 0, 0},
		{"/home/user", "0700", 1000, 1000},
		{"/home/user/notes.txt", "0600", 1000, 1000},
		{"/bin", "0777", 0, 0},
		{"/long-link", "0777", 0, 0},
		{"/lost+found", "0700", 0, 0},
		{`/odd name with "quotes" and spaces`, "0644", 0, 0},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			st := debugfs(t, img, "stat "+quote(c.path))
			if !strings.Contains(st, "Mode:  "+c.mode) && !strings.Contains(st, "Mode: "+c.mode) {
				t.Errorf("mode is not %s:\n%s", c.mode, st)
			}
			if want := fmt.Sprintf("User: %5d   Group: %5d", c.uid, c.gid); !strings.Contains(st, want) {
				t.Errorf("owner is not %d:%d:\n%s", c.uid, c.gid, st)
			}
			for _, f := range []string{" ctime: ", " atime: ", " mtime: ", "crtime: "} {
				if !strings.Contains(st, f+stamp) {
					t.Errorf("%s is not %s:\n%s", strings.TrimSpace(f), stamp, st)
				}
			}
		})
	}
	if target := debugfs(t, img, "stat /bin"); !strings.Contains(target, `Fast link dest: "usr/bin"`) {
		t.Errorf("/bin is not a symlink to usr/bin:\n%s", target)
	}
}

func TestBuildIsReproducible(t *testing.T) {
	needTools(t)
	for _, journal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%v", journal), func(t *testing.T) {
			a := buildTree(t, journal, false, time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
			b := buildTree(t, journal, true, time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC))
			if ha, hb := hashFile(t, a), hashFile(t, b); ha != hb {
				out, _ := exec.Command("cmp", "-l", a, b).Output()
				t.Errorf("two builds differ:\n%.2000s", out)
			}
		})
	}
}

func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestBuildSurvivesABmapFlashOntoGarbage copies only the image's data
// regions onto a medium full of garbage, as bmaptool does, and checks that
// e2fsck still finds a clean filesystem, and that the journal is mapped.
func TestBuildSurvivesABmapFlashOntoGarbage(t *testing.T) {
	needTools(t)
	img := buildTree(t, true, false, time.Now())
	dirty := filepath.Join(t.TempDir(), "dirty.ext4")
	copyDataOnto(t, img, dirty, 0x5a)
	e2fsckClean(t, dirty)

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, err := bmap.DataRanges(f)
	if err != nil {
		t.Fatal(err)
	}
	mapped := func(block int64) bool {
		for _, r := range rs {
			if r.Offset <= block*blockSize && (block+1)*blockSize <= r.Offset+r.Length {
				return true
			}
		}
		return false
	}
	blocks := strings.Fields(debugfs(t, img, "blocks <8>"))
	if len(blocks) < 1024 {
		t.Fatalf("journal has %d blocks", len(blocks))
	}
	for _, b := range blocks {
		var n int64
		fmt.Sscan(b, &n)
		if !mapped(n) {
			t.Fatalf("journal block %d is a hole in the image", n)
		}
	}
	if used := allocated(t, img); used > 16*mib {
		t.Errorf("image allocates %d bytes; the tree and journal need about 6 MiB", used)
	}
}

func TestBuildMountsReadOnly(t *testing.T) {
	needTools(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	img := buildTree(t, false, false, time.Now())
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,ro", "-t", "ext4", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	for _, it := range treeItems() {
		p := filepath.Join(mnt, it.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", it.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case it.link != "":
			if got, _ := os.Readlink(p); got != it.link {
				t.Errorf("%s -> %q, want %q", it.path, got, it.link)
			}
		case !it.dir && it.hard == "":
			if got, _ := os.ReadFile(p); string(got) != it.data {
				t.Errorf("%s: content differs", it.path)
			}
			if fi.Mode()&(os.ModePerm|os.ModeSetuid) != it.mode {
				t.Errorf("%s: mode %v, want %v", it.path, fi.Mode(), it.mode)
			}
		}
		if [2]uint32{st.Uid, st.Gid} != it.owners {
			t.Errorf("%s: owner %d:%d, want %v", it.path, st.Uid, st.Gid, it.owners)
		}
		if st.Mtim.Sec != buildTime.Unix() {
			t.Errorf("%s: mtime %d, want %d", it.path, st.Mtim.Sec, buildTime.Unix())
		}
	}
	a, _ := os.Stat(filepath.Join(mnt, "usr/bin/su"))
	b, _ := os.Stat(filepath.Join(mnt, "usr/bin/sudoedit"))
	if !os.SameFile(a, b) {
		t.Error("the hard link became a copy")
	}
}

func TestBuildReportsATreeThatDoesNotFit(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "huge"), bytes.Repeat([]byte("x"), 24*mib), 0o644)
	opt := options(tree, filepath.Join(dir, "small.ext4"), false)
	opt.Size = 16 * mib
	err := Build(context.Background(), opt)
	var tooSmall *TooSmallError
	if !errors.As(err, &tooSmall) {
		t.Fatalf("Build error = %v, want a *TooSmallError", err)
	}
	if tooSmall.NeedBytes < 24*mib || tooSmall.FreeBytes <= 0 || tooSmall.FreeBytes >= 16*mib || tooSmall.FreeInodes <= 0 {
		t.Errorf("sizes in %+v are off", tooSmall)
	}
	msg := err.Error()
	for _, want := range []string{"needs at least 25 MiB", "a 16 MiB ext4 has", "set a larger root size in the board file"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if _, err := os.Stat(opt.Output); !os.IsNotExist(err) {
		t.Errorf("a failed build left %s behind (%v)", opt.Output, err)
	}
}

func TestBuildNamesTheMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := ToolDirs
	ToolDirs = nil
	defer func() { ToolDirs = saved }()
	err := Build(context.Background(), options(t.TempDir(), filepath.Join(t.TempDir(), "x"), false))
	if err == nil || !strings.Contains(err.Error(), "mke2fs not found: install e2fsprogs (apt-get install e2fsprogs)") {
		t.Errorf("Build error = %v", err)
	}
}

func TestBuildRefusesBadOptions(t *testing.T) {
	base := options(t.TempDir(), filepath.Join(t.TempDir(), "x"), false)
	cases := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"a size that is not whole blocks", func(o *Options) { o.Size = 1000 }, "multiple of 4096"},
		{"a malformed UUID", func(o *Options) { o.UUID = "root" }, "not of the form"},
		{"a long label", func(o *Options) { o.Label = strings.Repeat("x", 17) }, "16 bytes"},
		{"a missing tree", func(o *Options) { o.Dir = "/nonexistent" }, "not a directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.mod(&o)
			if err := Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Build error = %v, want %q", err, c.want)
			}
		})
	}
}
