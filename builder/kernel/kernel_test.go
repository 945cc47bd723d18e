package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/kmodule"
	"github.com/ulikunitz/xz"
)

// elfObject returns a minimal relocatable ELF file whose only content is a
// .modinfo section holding fields (NUL-terminated key=value strings), the
// part of a kernel module this package reads.
func elfObject(t testing.TB, fields []string, class elf.Class, order binary.ByteOrder) []byte {
	t.Helper()
	var modinfo []byte
	for _, f := range fields {
		modinfo = append(append(modinfo, f...), 0)
	}
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	data := elf.ELFDATA2LSB
	if order == binary.BigEndian {
		data = elf.ELFDATA2MSB
	}
	ident := [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(class), byte(data), byte(elf.EV_CURRENT)}
	var buf bytes.Buffer
	w := func(v any) {
		if err := binary.Write(&buf, order, v); err != nil {
			t.Fatal(err)
		}
	}
	if class == elf.ELFCLASS64 {
		const hdr = 64
		shoff := uint64(hdr + len(modinfo) + len(shstrtab))
		shoff = (shoff + 7) &^ 7
		w(elf.Header64{Ident: ident, Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_AARCH64), Version: 1,
			Shoff: shoff, Ehsize: hdr, Shentsize: 64, Shnum: 3, Shstrndx: 2})
		buf.Write(modinfo)
		buf.Write(shstrtab)
		buf.Write(make([]byte, int(shoff)-buf.Len()))
		w(elf.Section64{})
		w(elf.Section64{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: hdr, Size: uint64(len(modinfo)), Addralign: 1})
		w(elf.Section64{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: uint64(hdr + len(modinfo)), Size: uint64(len(shstrtab)), Addralign: 1})
	} else {
		const hdr = 52
		shoff := uint32(hdr + len(modinfo) + len(shstrtab))
		shoff = (shoff + 3) &^ 3
		w(elf.Header32{Ident: ident, Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_ARM), Version: 1,
			Shoff: shoff, Ehsize: hdr, Shentsize: 40, Shnum: 3, Shstrndx: 2})
		buf.Write(modinfo)
		buf.Write(shstrtab)
		buf.Write(make([]byte, int(shoff)-buf.Len()))
		w(elf.Section32{})
		w(elf.Section32{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint32(elf.SHF_ALLOC), Off: hdr, Size: uint32(len(modinfo)), Addralign: 1})
		w(elf.Section32{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: uint32(hdr + len(modinfo)), Size: uint32(len(shstrtab)), Addralign: 1})
	}
	return buf.Bytes()
}

const testKver = "6.1.0-99-arm64"

// fakeMod is a module of a fake kernel tree.
type fakeMod struct {
	path   string // relative to lib/modules/<kver>/, suffix chooses compression
	fields []string
}

// arm64Image is a minimal arm64 Image header: "MZ" EFI stub, magic at 0x38.
func arm64Image(size int) []byte {
	b := make([]byte, size)
	copy(b, "MZ")
	copy(b[0x38:], "ARM\x64")
	for i := 0x40; i < size; i++ {
		b[i] = byte(i * 7 / 13)
	}
	return b
}

func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeTree writes an extracted-package tree shaped like Debian's.
func fakeTree(t testing.TB, mods []fakeMod, builtin []string) string {
	t.Helper()
	tree := t.TempDir()
	modDir := filepath.Join(tree, "lib/modules", testKver)
	for _, m := range mods {
		obj := elfObject(t, m.fields, elf.ELFCLASS64, binary.LittleEndian)
		var buf bytes.Buffer
		switch {
		case strings.HasSuffix(m.path, ".ko"):
			buf.Write(obj)
		case strings.HasSuffix(m.path, ".ko.xz"):
			w, err := xz.NewWriter(&buf)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(obj)
			w.Close()
		case strings.HasSuffix(m.path, ".ko.zst"):
			w, _ := zstd.NewWriter(&buf)
			w.Write(obj)
			w.Close()
		case strings.HasSuffix(m.path, ".ko.gz"):
			w := gzip.NewWriter(&buf)
			w.Write(obj)
			w.Close()
		}
		writeFile(t, filepath.Join(modDir, m.path), buf.Bytes())
	}
	var lines []string
	for _, b := range builtin {
		lines = append(lines, b+"\n")
	}
	writeFile(t, filepath.Join(modDir, "modules.builtin"), []byte(strings.Join(lines, "")))
	writeFile(t, filepath.Join(modDir, "modules.builtin.modinfo"), []byte("nls_base.file=fs/nls/nls_base\x00crc_itu_t.alias=crypto-crc-itu\x00"))
	writeFile(t, filepath.Join(tree, "boot/vmlinuz-"+testKver), arm64Image(64<<10))
	writeFile(t, filepath.Join(tree, "usr/lib/linux-image-"+testKver, "broadcom/bcm2837-rpi-3-b.dtb"), []byte("\xd0\x0d\xfe\xedrpi3b"))
	writeFile(t, filepath.Join(tree, "usr/lib/linux-image-"+testKver, "broadcom/bcm2837-rpi-3-b-plus.dtb"), []byte("\xd0\x0d\xfe\xedrpi3b+"))
	writeFile(t, filepath.Join(tree, "usr/lib/linux-image-"+testKver, "broadcom/bcm2711-rpi-4-b.dtb"), []byte("\xd0\x0d\xfe\xedrpi4b"))
	// Debian's package links build/ to the headers package, absent here.
	os.Symlink("/usr/src/linux-headers-"+testKver, filepath.Join(modDir, "build"))
	return tree
}

// debianLike mirrors the dependencies of Debian 6.1's storage modules.
var debianLike = []fakeMod{
	{"kernel/fs/ext4/ext4.ko", []string{"alias=fs-ext4", "softdep=pre: crypto-crc32c", "depends=jbd2,mbcache,crc16", "name=ext4"}},
	{"kernel/fs/jbd2/jbd2.ko", []string{"softdep=pre: crypto-crc32c", "depends=", "name=jbd2"}},
	{"kernel/fs/mbcache.ko", []string{"depends=", "name=mbcache"}},
	{"kernel/lib/crc16.ko.xz", []string{"depends=", "name=crc16"}},
	{"kernel/crypto/crc32c_generic.ko.zst", []string{"alias=crypto-crc32c-generic", "alias=crc32c-generic", "alias=crypto-crc32c", "alias=crc32c", "depends=", "name=crc32c_generic"}},
	{"kernel/fs/fat/fat.ko", []string{"depends=nls_base", "name=fat"}},
	{"kernel/fs/fat/vfat.ko.gz", []string{"alias=fs-vfat", "depends=fat", "name=vfat"}},
	{"kernel/fs/nls/nls_cp437.ko", []string{"depends=", "name=nls_cp437"}},
	{"kernel/fs/nls/nls_iso8859-1.ko", []string{"depends=", "name=nls_iso8859_1"}},
	{"kernel/drivers/watchdog/bcm2835_wdt.ko", []string{"alias=of:N*T*Cbrcm,bcm2835-pm-wdt", "depends=", "name=bcm2835_wdt"}},
	{"kernel/drivers/mmc/host/bcm2835.ko", []string{"depends=", "name=bcm2835"}},
	{"kernel/drivers/virtio/virtio_pci_modern_dev.ko", []string{"depends=", "name=virtio_pci_modern_dev"}},
	{"kernel/drivers/virtio/virtio_pci_legacy_dev.ko", []string{"depends=", "name=virtio_pci_legacy_dev"}},
	{"kernel/drivers/virtio/virtio_pci.ko", []string{"depends=virtio_pci_legacy_dev,virtio_pci_modern_dev", "name=virtio_pci"}},
}

var debianBuiltin = []string{"kernel/fs/nls/nls_base.ko", "kernel/drivers/virtio/virtio.ko", "kernel/lib/crc-itu-t.ko"}

func openFake(t testing.TB, mods []fakeMod) *Kernel {
	t.Helper()
	k, err := Open(fakeTree(t, mods, debianBuiltin))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestOpenFindsVersionImageDTBsAndModules(t *testing.T) {
	k := openFake(t, debianLike)
	if k.Version != testKver {
		t.Errorf("Version = %q", k.Version)
	}
	for field, got := range map[string]string{
		"Image":      k.Image,
		"DTBDir":     k.DTBDir,
		"ModulesDir": k.ModulesDir,
	} {
		if !filepath.IsAbs(got) {
			t.Errorf("%s = %q, want an absolute path", field, got)
		}
		if _, err := os.Stat(got); err != nil {
			t.Errorf("%s: %v", field, err)
		}
	}
	if !strings.HasSuffix(k.Image, "boot/vmlinuz-"+testKver) || !strings.HasSuffix(k.DTBDir, "usr/lib/linux-image-"+testKver) {
		t.Errorf("Image %s, DTBDir %s", k.Image, k.DTBDir)
	}
	if len(k.modules) != len(debianLike) {
		t.Errorf("indexed %d modules, want %d", len(k.modules), len(debianLike))
	}
}

func TestOpenRejectsTreesWithoutExactlyOneKernel(t *testing.T) {
	empty := t.TempDir()
	two := fakeTree(t, debianLike[:1], nil)
	os.MkdirAll(filepath.Join(two, "lib/modules/6.1.0-98-arm64"), 0o755)
	noImage := fakeTree(t, debianLike[:1], nil)
	os.Remove(filepath.Join(noImage, "boot/vmlinuz-"+testKver))
	for _, tc := range []struct{ name, tree, want string }{
		{"an empty tree", empty, "no kernel in"},
		{"two versions", two, "2 kernel versions"},
		{"modules without an image", noImage, "has no boot/vmlinuz-" + testKver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.tree)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestClosure(t *testing.T) {
	k := openFake(t, debianLike)
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"ext4 comes after crc32c (softdep alias), jbd2, mbcache and crc16",
			[]string{"ext4"}, []string{"crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"}},
		{"requests keep their order, shared dependencies appear once",
			[]string{"vfat", "ext4", "jbd2"}, []string{"fat", "vfat", "crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"}},
		{"dashes and underscores are the same character",
			[]string{"nls-cp437", "nls_iso8859_1", "bcm2835-wdt"}, []string{"nls_cp437", "nls_iso8859_1", "bcm2835_wdt"}},
		{"built-in modules and built-in dependencies are skipped",
			[]string{"nls_base", "virtio", "virtio_pci", "fat"}, []string{"virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "fat"}},
		{"nothing requested gives nothing", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := k.Closure(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(names(got), tc.want) {
				t.Fatalf("Closure(%v) = %v, want %v", tc.in, names(got), tc.want)
			}
			again, _ := k.Closure(tc.in)
			if !slices.Equal(got, again) {
				t.Fatal("two calls disagree")
			}
		})
	}
	got, _ := k.Closure([]string{"ext4", "nls-iso8859-1"})
	paths := map[string]string{}
	for _, m := range got {
		paths[m.Name] = m.Path
	}
	if paths["crc16"] != "kernel/lib/crc16.ko.xz" || paths["nls_iso8859_1"] != "kernel/fs/nls/nls_iso8859-1.ko" || paths["crc32c_generic"] != "kernel/crypto/crc32c_generic.ko.zst" {
		t.Errorf("paths %v: want the files' own names, relative to lib/modules/<kver>", paths)
	}
}

func TestClosureOfAnUnknownNameListsCloseMatches(t *testing.T) {
	k := openFake(t, debianLike)
	_, err := k.Closure([]string{"ext4", "ext5", "bcm2835_wd", "i6300esb"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`"ext5" (did you mean ext4?)`, `"bcm2835_wd" (did you mean bcm2835_wdt`, `"i6300esb"`, "board file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestClosureSoftDependencies(t *testing.T) {
	k := openFake(t, []fakeMod{
		{"kernel/a.ko", []string{"softdep=pre: b post: c", "depends=d"}},
		{"kernel/b.ko", []string{"depends="}},
		{"kernel/c.ko", []string{"depends="}},
		{"kernel/d.ko", []string{"depends="}},
		// e wants f first, but f needs e: the hard edge wins.
		{"kernel/e.ko", []string{"softdep=pre: f missing-alias", "depends="}},
		{"kernel/f.ko", []string{"depends=e"}},
		// A post target that needs a module still being ordered.
		{"kernel/p.ko", []string{"softdep=post: s", "depends="}},
		{"kernel/n.ko", []string{"depends=p"}},
		{"kernel/s.ko", []string{"depends=n"}},
	})
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"a"}, []string{"b", "d", "a", "c"}},
		{[]string{"e"}, []string{"e", "f"}},
		{[]string{"n"}, []string{"p", "n", "s"}},
	} {
		got, err := k.Closure(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names(got), tc.want) {
			t.Errorf("Closure(%v) = %v, want %v", tc.in, names(got), tc.want)
		}
	}
}

func TestClosureReportsBrokenTrees(t *testing.T) {
	k := openFake(t, []fakeMod{
		{"kernel/a.ko", []string{"depends=b"}},
		{"kernel/b.ko", []string{"depends=a"}},
		{"kernel/c.ko", []string{"depends=gone"}},
		{"kernel/notelf.ko", nil},
	})
	os.WriteFile(filepath.Join(k.ModulesDir, "kernel/notelf.ko"), []byte("not an object"), 0o644)
	for _, tc := range []struct{ in, want string }{
		{"a", "cycle (a -> b -> a)"},
		{"c", "depends on gone, which is neither a module file nor built in"},
		{"notelf", "not an ELF object"},
	} {
		_, err := k.Closure([]string{tc.in})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Closure(%s) err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestModinfoOf32BitBigEndianObjects(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.ko")
	writeFile(t, p, elfObject(t, []string{"depends=x,y-z", "softdep=pre: q", "name=m"}, elf.ELFCLASS32, binary.BigEndian))
	mi, err := readModinfo(p)
	if err != nil {
		t.Fatal(err)
	}
	if mi.name != "m" || !slices.Equal(mi.depends, []string{"x", "y_z"}) || !slices.Equal(mi.pre, []string{"q"}) {
		t.Fatalf("modinfo %+v", mi)
	}
}

func TestDuplicateModulesPreferUpdates(t *testing.T) {
	k := openFake(t, []fakeMod{
		{"kernel/drivers/x.ko", []string{"depends="}},
		{"updates/x.ko", []string{"depends="}},
	})
	got, err := k.Closure([]string{"x"})
	if err != nil || len(got) != 1 || got[0].Path != "updates/x.ko" {
		t.Fatalf("Closure = %v, %v; want updates/x.ko", got, err)
	}
	_, err = Open(fakeTree(t, []fakeMod{{"kernel/a/x.ko", nil}, {"kernel/b/x.ko.xz", nil}}, nil))
	if err == nil || !strings.Contains(err.Error(), "exists twice") {
		t.Fatalf("err = %v", err)
	}
}

func TestWriteModulesDep(t *testing.T) {
	k := openFake(t, debianLike)
	mods, err := k.Closure([]string{"ext4", "vfat", "nls_cp437"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := k.WriteModulesDep(&buf, mods); err != nil {
		t.Fatal(err)
	}
	want := `kernel/crypto/crc32c_generic.ko.zst:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko.xz:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/fat/fat.ko:
kernel/fs/fat/vfat.ko.gz: kernel/fs/fat/fat.ko
kernel/fs/nls/nls_cp437.ko:
`
	if buf.String() != want {
		t.Fatalf("modules.dep:\n%s\nwant:\n%s", buf.String(), want)
	}

	t.Run("u-root's kmodule loads dependencies first", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, "lib/modules", testKver)
		writeFile(t, filepath.Join(dir, "modules.dep"), buf.Bytes())
		for _, m := range mods {
			writeFile(t, filepath.Join(dir, m.Path), nil)
		}
		var mu sync.Mutex
		var loaded []string
		err := kmodule.ProbeOptions("ext4", "", kmodule.ProbeOpts{
			RootDir: root, KVer: testKver, IgnoreProcMods: true,
			DryRunCB: func(p string) {
				mu.Lock()
				defer mu.Unlock()
				loaded = append(loaded, path.Base(p))
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(loaded) != 4 || loaded[3] != "ext4.ko" {
			t.Fatalf("loaded %v, want ext4.ko last of 4", loaded)
		}
	})

	t.Run("a subset missing a dependency is refused", func(t *testing.T) {
		err := k.WriteModulesDep(io.Discard, mods[4:])
		if err == nil || !strings.Contains(err.Error(), "pass the whole Closure") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("modules out of load order are refused", func(t *testing.T) {
		rev := slices.Clone(mods)
		slices.Reverse(rev)
		err := k.WriteModulesDep(io.Discard, rev)
		if err == nil || !strings.Contains(err.Error(), "Closure's order") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestDTBs(t *testing.T) {
	k := openFake(t, debianLike)
	got, err := k.DTBs([]string{"broadcom/bcm2837-rpi-3-*.dtb", "broadcom/bcm2837-rpi-3-b.dtb"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"broadcom/bcm2837-rpi-3-b-plus.dtb", "broadcom/bcm2837-rpi-3-b.dtb"}
	if !slices.Equal(got, want) {
		t.Fatalf("DTBs = %v, want %v", got, want)
	}
	_, err = k.DTBs([]string{"broadcom/bcm2837-rpi3-b.dtb"})
	if err == nil || !strings.Contains(err.Error(), "did you mean broadcom/bcm2837-rpi-3-b.dtb") {
		t.Fatalf("err = %v", err)
	}
	k.DTBDir = ""
	if _, err := k.DTBs([]string{"x.dtb"}); err == nil || !strings.Contains(err.Error(), "ships no device trees") {
		t.Fatalf("err = %v", err)
	}
}

func TestDetectFormat(t *testing.T) {
	zimage := make([]byte, 4096)
	binary.LittleEndian.PutUint32(zimage[0x24:], 0x016f2818)
	bz := make([]byte, 4096)
	copy(bz[0x202:], "HdrS")
	zboot := make([]byte, 4096)
	copy(zboot, "MZ\x00\x00zimg")
	for _, tc := range []struct {
		name string
		data []byte
		want Format
	}{
		{"an arm64 Image", arm64Image(4096), FormatARM64Image},
		{"gzip", []byte("\x1f\x8b\x08\x00" + strings.Repeat("\x00", 100)), FormatGzip},
		{"an ARM zImage", zimage, FormatZImage},
		{"an x86 bzImage", bz, FormatBzImage},
		{"an EFI zboot image", zboot, FormatEFIZboot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DetectFormat(bytes.NewReader(tc.data))
			if err != nil || got != tc.want {
				t.Fatalf("DetectFormat = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := DetectFormat(bytes.NewReader(make([]byte, 4096))); err == nil {
		t.Fatal("zeros recognised")
	}
}

func TestGzipImage(t *testing.T) {
	k := openFake(t, debianLike)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.gz"), filepath.Join(dir, "b.gz")
	if err := k.GzipImage(a); err != nil {
		t.Fatal(err)
	}
	if err := k.GzipImage(b); err != nil {
		t.Fatal(err)
	}
	ga, _ := os.ReadFile(a)
	gb, _ := os.ReadFile(b)
	if !bytes.Equal(ga, gb) {
		t.Fatal("two runs differ")
	}
	zr, err := gzip.NewReader(bytes.NewReader(ga))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() && zr.ModTime.Unix() != 0 {
		t.Errorf("header name %q mtime %v, want none", zr.Name, zr.ModTime)
	}
	plain, _ := io.ReadAll(zr)
	orig, _ := os.ReadFile(k.Image)
	if !bytes.Equal(plain, orig) {
		t.Fatal("gunzip does not give the Image back")
	}

	t.Run("an already gzipped image is copied", func(t *testing.T) {
		os.WriteFile(k.Image, ga, 0o644)
		c := filepath.Join(dir, "c.gz")
		if err := k.GzipImage(c); err != nil {
			t.Fatal(err)
		}
		gc, _ := os.ReadFile(c)
		if !bytes.Equal(gc, ga) {
			t.Fatal("not copied unchanged")
		}
	})
	t.Run("a self-decompressing image is refused", func(t *testing.T) {
		bz := make([]byte, 4096)
		copy(bz[0x202:], "HdrS")
		os.WriteFile(k.Image, bz, 0o644)
		err := k.GzipImage(filepath.Join(dir, "d.gz"))
		if err == nil || !strings.Contains(err.Error(), "x86-bzimage") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "d.gz")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("output written anyway")
		}
	})
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=a,b\x00softdep=pre: x y post: z\x00alias=fs-ext4\x00name=m\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mi := parseModinfo(data)
		for _, d := range mi.depends {
			if d == "" || strings.Contains(d, "-") {
				t.Fatalf("dependency %q", d)
			}
		}
	})
}
