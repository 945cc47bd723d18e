package fat

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const mib = 1 << 20

var buildTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// bigData is the 3 MB file, streamed through Open.
func bigData() []byte {
	b := make([]byte, 3_000_001)
	rand.New(rand.NewSource(42)).Read(b)
	return b
}

// testFiles is a boot partition with everything that is hard to get right.
func testFiles() []File {
	big := bigData()
	files := []File{
		// The GRUB boot-state files come first so they get the lowest
		// clusters, as the builder does it.
		{Path: "EFI/bulkhead/state-a.env", Data: bytes.Repeat([]byte("#"), 1024)},
		{Path: "EFI/bulkhead/state-b.env", Data: bytes.Repeat([]byte("#"), 1024)},
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: []byte("MZ pretend efi binary")},
		{Path: "EFI/debian/grub.cfg", Data: []byte("set timeout=0\n")},
		{Path: "config.txt", Data: []byte("arm_64bit=1\nkernel=u-boot.bin\n")},
		{Path: "README.TXT", Data: []byte("upper-case 8.3 name, stored without a long name\n")},
		{Path: "empty", Data: nil},
		{Path: "a very long file name with spaces and.dots.txt", Data: []byte("spaces")},
		{Path: "bcm2710-rpi-3-b.dtb", Data: []byte("dtb 1")},
		{Path: "bcm2710-rpi-3-b-plus.dtb", Data: []byte("dtb 2")},
		{Path: "FOO~1.BIN", Data: []byte("a real FOO~1.BIN that a generated name must not take")},
		{Path: "f o o.bin", Data: []byte("needs FOO~2.BIN")},
		{Path: "deep/er/and/deeper/file.name.with.many.dots", Data: []byte("deep")},
		{Path: "docs/grüße, ½ and 日本.txt", Data: []byte("non-ASCII long name")},
		{Path: "big/u-boot.bin", Size: int64(len(big)), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(big)), nil
		}},
	}
	// 150 long names need about 450 entries: several 2 KiB clusters.
	for i := 0; i < 150; i++ {
		files = append(files, File{Path: fmt.Sprintf("overlays/overlay-number-%03d.dtbo", i), Data: []byte(fmt.Sprintf("overlay %d\n", i))})
	}
	return files
}

func contents(t *testing.T, f File) []byte {
	t.Helper()
	if f.Open == nil {
		return f.Data
	}
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed: %v", name, err)
	}
}

// buildImage builds the test filesystem into a fresh sparse file.
func buildImage(t *testing.T, dir string, size int64, files []File) (string, map[string]Extent) {
	t.Helper()
	path := filepath.Join(dir, "boot.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	ext, err := Build(f, size, Options{Label: "boot", VolumeID: 0x1a2b3c4d, Time: buildTime}, files)
	if err != nil {
		t.Fatal(err)
	}
	return path, ext
}

// fsckClean fails unless fsck.vfat -n exits 0 and prints nothing but its
// banner and the summary line.
func fsckClean(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("fsck.vfat", "-n", img).CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "fsck.fat") || !strings.Contains(lines[1], " files, ") {
		t.Fatalf("fsck.vfat -n %s: %v\n%s", img, err, out)
	}
}

func TestBuildPassesFsckAndReadsBack(t *testing.T) {
	needTool(t, "fsck.vfat")
	needTool(t, "mtype")
	files := testFiles()
	img, ext := buildImage(t, t.TempDir(), 256*mib, files)
	fsckClean(t, img)

	t.Run("mtype reads every file back", func(t *testing.T) {
		for _, f := range files {
			cmd := exec.Command("mtype", "-i", img, "::"+f.Path)
			cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("mtype %s: %v", f.Path, err)
			}
			if !bytes.Equal(out, contents(t, f)) {
				t.Errorf("mtype %s: %d bytes differ from the %d given", f.Path, len(out), len(contents(t, f)))
			}
		}
	})

	t.Run("mdir shows long and short names", func(t *testing.T) {
		out, err := exec.Command("mdir", "-i", img, "::").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"Volume in drive : is BOOT",
			"Serial Number is 1A2B-3C4D",
			"CONFIG   TXT        30 2024-05-06   7:08  config.txt",
			"README   TXT",
			"FOO~1    BIN",
			"FOO~2    BIN        15 2024-05-06   7:08  f o o.bin",
			"BCM271~1 DTB",
			"BCM271~2 DTB",
			"AVERYL~1 TXT",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("mdir output lacks %q:\n%s", want, out)
			}
		}
	})

	imgFile, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer imgFile.Close()
	read := func(off, n int64) []byte {
		b := make([]byte, n)
		if _, err := imgFile.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("extents point at the data", func(t *testing.T) {
		for _, f := range files {
			e := ext[f.Path]
			data := contents(t, f)
			if e.Length != int64(len(data)) || !bytes.Equal(read(e.Offset, e.Length), data) {
				t.Errorf("%s: extent %+v does not hold the file's %d bytes", f.Path, e, len(data))
			}
		}
		if a, b := ext["EFI/bulkhead/state-a.env"], ext["EFI/bulkhead/state-b.env"]; a.Offset >= b.Offset || b.Offset >= ext["EFI/BOOT/BOOTX64.EFI"].Offset {
			t.Errorf("files listed first must get the lowest clusters: %+v %+v", a, b)
		}
	})

	t.Run("every file is one contiguous cluster chain", func(t *testing.T) {
		le := binary.LittleEndian
		boot := read(0, sectorSize)
		cs := int64(boot[13]) * sectorSize
		fatOff := int64(le.Uint16(boot[14:])) * sectorSize
		fatLen := int64(le.Uint32(boot[36:])) * sectorSize
		dataOff := fatOff + 2*fatLen
		raw := make([]byte, fatOff+fatLen)
		copy(raw[fatOff:], read(fatOff, fatLen))
		for _, f := range files {
			e := ext[f.Path]
			if e.Length == 0 {
				continue
			}
			c := uint32((e.Offset-dataOff)/cs) + 2
			n := (e.Length + cs - 1) / cs
			for i := int64(0); i < n; i++ {
				next := le.Uint32(raw[fatOff+4*int64(c):]) & 0x0fffffff
				want := c + 1
				if i == n-1 {
					want = 0x0fffffff
				}
				if next != want {
					t.Fatalf("%s: cluster %d links to %#x, want %#x", f.Path, c, next, want)
				}
				c++
			}
		}
		if a := ext["EFI/bulkhead/state-a.env"]; a.Offset%512 != 0 || (a.Offset-dataOff)%cs != 0 {
			t.Errorf("state-a.env at %d is not at a cluster start", a.Offset)
		}
	})
}

func TestBuildIsReproducible(t *testing.T) {
	a, _ := buildImage(t, t.TempDir(), 256*mib, testFiles())
	b, _ := buildImage(t, t.TempDir(), 256*mib, testFiles())
	if ha, hb := fileHash(t, a), fileHash(t, b); ha != hb {
		t.Errorf("two builds differ: %x vs %x", ha, hb)
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestBuildLeavesHolesThatNoReaderNeeds flashes the image the way bmaptool
// does, copying only the regions the file has data in, onto a medium full
// of garbage, and checks that the result is still a clean filesystem with
// the same files.
func TestBuildLeavesHolesThatNoReaderNeeds(t *testing.T) {
	needTool(t, "fsck.vfat")
	needTool(t, "mtype")
	dir := t.TempDir()
	files := testFiles()
	img, _ := buildImage(t, dir, 256*mib, files)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if used := allocated(t, img); used > 8*mib {
		t.Errorf("image of %d bytes allocates %d bytes; only metadata and data should be written", st.Size(), used)
	}
	dirty := filepath.Join(dir, "dirty.img")
	copyDataOnto(t, img, dirty, 0xa5)
	fsckClean(t, dirty)
	for _, f := range files[:6] {
		cmd := exec.Command("mtype", "-i", dirty, "::"+f.Path)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		out, err := cmd.Output()
		if err != nil || !bytes.Equal(out, contents(t, f)) {
			t.Errorf("%s on a dirty medium: %v, %d bytes", f.Path, err, len(out))
		}
	}
}

func TestBuildMountsAsVfat(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if fs, _ := os.ReadFile("/proc/filesystems"); !bytes.Contains(fs, []byte("\tvfat\n")) {
		t.Skip("this kernel has no vfat driver loaded (not in /proc/filesystems)")
	}
	files := testFiles()
	dir := t.TempDir()
	img, _ := buildImage(t, dir, 256*mib, files)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop,ro", "-t", "vfat", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(mnt, f.Path))
		if err != nil || !bytes.Equal(got, contents(t, f)) {
			t.Errorf("%s through the kernel: %v, %d bytes", f.Path, err, len(got))
		}
	}
}

func TestShortNames(t *testing.T) {
	cases := []struct {
		name     string
		siblings []string
		want     string
		long     bool
	}{
		{"BOOTX64.EFI", nil, "BOOTX64 EFI", false},
		{"config.txt", nil, "CONFIG  TXT", true},
		{"Image", nil, "IMAGE      ", true},
		{"bcm2710-rpi-3-b.dtb", nil, "BCM271~1DTB", true},
		{"bcm2710-rpi-3-b.dtb", []string{"bcm2710-rpi-3-a.dtb"}, "BCM271~2DTB", true},
		{"initrd.img-6.1.0-21-arm64", nil, "INITRD~10-2", true},
		{"my file.txt", nil, "MYFILE~1TXT", true},
		{".hidden", nil, "HIDDEN~1   ", true},
		{"a+b.c", nil, "A_B~1   C  ", true},
		{"grüße.txt", nil, "GR__E~1 TXT", true},
		{"Config.txt", []string{"CONFIG.TXT"}, "CONFIG~1TXT", true},
		{"x.tar.gz", nil, "XTAR~1  GZ ", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var nodes []*node
			for _, s := range c.siblings {
				nodes = append(nodes, &node{name: s})
			}
			n := &node{name: c.name}
			nodes = append(nodes, n)
			if err := assignShortNames(nodes); err != nil {
				t.Fatal(err)
			}
			if string(n.short[:]) != c.want || n.long != c.long {
				t.Errorf("short %q long %v, want %q %v", n.short, n.long, c.want, c.long)
			}
		})
	}
}

func TestLFNChecksum(t *testing.T) {
	// The checksum of "FOO     BAR" as computed by hand from the rotate-add
	// definition in Microsoft's FAT specification.
	var sum byte
	for _, c := range []byte("FOO     BAR") {
		sum = (sum>>1 | sum<<7) + c
	}
	if got := lfnChecksum(packShort("FOO", "BAR")); got != sum {
		t.Errorf("lfnChecksum = %#x, want %#x", got, sum)
	}
}

func TestChooseGeometry(t *testing.T) {
	cases := []struct {
		size    int64
		cluster int64
	}{
		{64 * mib, 512},
		{256 * mib, 2048},
		{512 * mib, 4096},
		{12 << 30, 8192},
	}
	for _, c := range cases {
		g, err := chooseGeometry(c.size)
		if err != nil {
			t.Fatal(err)
		}
		if g.clusterSize() != c.cluster || g.clusters < minClusters || g.dataOffset()%4096 != 0 ||
			uint64(g.fatSectors)*sectorSize < 4*(uint64(g.clusters)+2) ||
			int64(g.reserved+2*g.fatSectors)+int64(g.clusters)*int64(g.spc) > int64(g.totalSectors) {
			t.Errorf("%d MiB: geometry %+v, want %d-byte clusters", c.size/mib, g, c.cluster)
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	cases := []struct {
		name  string
		size  int64
		files []File
		opt   Options
		want  string
	}{
		{"a volume too small for FAT32", 16 * mib, nil, Options{}, "too small for FAT32"},
		{"files that do not fit", 40 * mib, []File{{Path: "big", Data: make([]byte, 40*mib)}}, Options{}, "raise the boot partition size"},
		{"names that differ only in case", 64 * mib, []File{{Path: "EFI/a"}, {Path: "efi/b"}}, Options{}, "differ only in letter case"},
		{"a path used as file and directory", 64 * mib, []File{{Path: "a"}, {Path: "a/b"}}, Options{}, "both a file and a directory"},
		{"a duplicate path", 64 * mib, []File{{Path: "a"}, {Path: "a"}}, Options{}, "listed twice"},
		{"an absolute path", 64 * mib, []File{{Path: "/a"}}, Options{}, "relative"},
		{"a forbidden character", 64 * mib, []File{{Path: "a:b"}}, Options{}, "does not allow"},
		{"a trailing dot", 64 * mib, []File{{Path: "a."}}, Options{}, "ends in a dot"},
		{"a dot-dot component", 64 * mib, []File{{Path: "a/../b"}}, Options{}, "not a file name"},
		{"a long label", 64 * mib, nil, Options{Label: "BULKHEAD-BOOT"}, "longer than 11"},
		{"a label with a slash", 64 * mib, nil, Options{Label: "A/B"}, "contains"},
		{"a short source", 64 * mib, []File{{Path: "a", Size: 10, Open: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("abc")), nil
		}}}, Options{}, "held 3 bytes, Size promised 10"},
		{"a long source", 64 * mib, []File{{Path: "a", Size: 2, Open: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("abc")), nil
		}}}, Options{}, "more than the 2 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(discard{}, c.size, c.opt, c.files)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

type discard struct{}

func (discard) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

func TestDOSTime(t *testing.T) {
	ts := dosTime(time.Date(2024, 5, 6, 7, 8, 9, 500_000_000, time.UTC))
	if ts.date != (44<<9|5<<5|6) || ts.time != (7<<11|8<<5|4) || ts.tenths != 150 {
		t.Errorf("dosTime = %+v", ts)
	}
	if ts := dosTime(time.Unix(0, 0)); ts.date != (0<<9 | 1<<5 | 1) {
		t.Errorf("1970 is not clamped to 1980-01-01: %+v", ts)
	}
}
