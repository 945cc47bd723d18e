package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/bmap"
	"github.com/bulkhead-os/bulkhead/builder/ext4"
	"github.com/bulkhead-os/bulkhead/builder/fat"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

const mib = 1 << 20

var buildTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

const seed = "raspberrypi3 1.2.3"

// Layout of the test disks: the real one scaled down.
const (
	bootStart, bootSize = 4 * mib, 64 * mib
	rootAStart, rootSz  = bootStart + bootSize, 32 * mib
	rootBStart          = rootAStart + rootSz
	dataStart, dataSize = rootBStart + rootSz, 16 * mib
	mbrDiskSize         = dataStart + dataSize
	gptDiskSize         = mbrDiskSize + 4*mib // room for the backup GPT
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// images builds a boot FAT32, a root ext4 and a data ext4 once per test.
func images(t *testing.T) map[int]string {
	t.Helper()
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot.vfat")
	f, err := os.Create(boot)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(bootSize)
	_, err = fat.Build(f, bootSize, fat.Options{Label: "BOOT", VolumeID: 0x1a2b3c4d, Time: buildTime, HiddenSectors: bootStart / 512}, []fat.File{
		{Path: "config.txt", Data: []byte("kernel=u-boot.bin\n")},
		{Path: "u-boot.bin", Data: bytes.Repeat([]byte{0xea}, 600<<10)},
		{Path: "overlays/disable-bt.dtbo", Data: []byte("dtbo")},
	})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}

	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc/bulkhead"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/bulkhead/release.json"), []byte(`{"name":"bulkhead"}`), 0o644)
	os.WriteFile(filepath.Join(tree, "init"), bytes.Repeat([]byte("init"), 100000), 0o755)
	root := filepath.Join(dir, "root.ext4")
	if err := ext4.Build(context.Background(), ext4.Options{Dir: tree, Output: root, Size: rootSz, Label: "root-a",
		UUID: DeriveUUID(seed, "root-a-fs"), Time: buildTime}); err != nil {
		t.Fatal(err)
	}

	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	data := filepath.Join(dir, "data.ext4")
	if err := ext4.Build(context.Background(), ext4.Options{Dir: empty, Output: data, Size: dataSize, Label: "data",
		UUID: DeriveUUID(seed, "data-fs"), Time: buildTime, Journal: true}); err != nil {
		t.Fatal(err)
	}
	return map[int]string{1: boot, 2: root, 4: data}
}

func mbrTable() *parttable.Table {
	return &parttable.Table{Kind: parttable.KindMBR, DiskID: DeriveMBRID(seed), Partitions: []parttable.Partition{
		{Number: 1, Type: parttable.MBRTypeFAT32LBA, Start: bootStart, Size: bootSize, Bootable: true},
		{Number: 2, Type: parttable.MBRTypeLinux, Start: rootAStart, Size: rootSz},
		{Number: 3, Type: parttable.MBRTypeLinux, Start: rootBStart, Size: rootSz},
		{Number: 4, Type: parttable.MBRTypeLinux, Start: dataStart, Size: dataSize},
	}}
}

func gptTable() *parttable.Table {
	p := func(n int, name, typ string, start, size int64) parttable.Partition {
		return parttable.Partition{Number: n, Name: name, Type: typ, UUID: DeriveUUID(seed, name), Start: start, Size: size}
	}
	return &parttable.Table{Kind: parttable.KindGPT, DiskID: DeriveUUID(seed, "disk"), Partitions: []parttable.Partition{
		p(1, "boot", parttable.GPTTypeESP, bootStart, bootSize),
		p(2, "root-a", parttable.GPTTypeLinux, rootAStart, rootSz),
		p(3, "root-b", parttable.GPTTypeLinux, rootBStart, rootSz),
		p(4, "data", parttable.GPTTypeLinux, dataStart, dataSize),
	}}
}

// bootState is the two boot-state copies at LBA 2048 and 3072.
func bootState() []parttable.Write {
	return []parttable.Write{
		{Off: 2048 * 512, Data: bytes.Repeat([]byte("A"), 4096)},
		{Off: 3072 * 512, Data: bytes.Repeat([]byte("B"), 4096)},
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// extract copies one partition out of the disk image into its own sparse
// file, so that fsck tools (which take no offset) can check it.
func extract(t *testing.T, img string, p parttable.Partition) string {
	t.Helper()
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(t.TempDir(), "part")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	out.Truncate(p.Size)
	rs, err := bmap.DataRanges(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		from, to := max(r.Offset, p.Start), min(r.Offset+r.Length, p.End())
		if from < to {
			io.Copy(io.NewOffsetWriter(out, from-p.Start), io.NewSectionReader(in, from, to-from))
		}
	}
	return path
}

func check(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	if name == "fsck.vfat" && strings.Count(strings.TrimSpace(string(out)), "\n") != 1 {
		t.Fatalf("fsck.vfat has remarks:\n%s", out)
	}
	if name == "sfdisk" && (!strings.Contains(string(out), "No errors detected") || strings.Contains(strings.ToLower(string(out)), "warn")) {
		t.Fatalf("sfdisk --verify:\n%s", out)
	}
}

func TestAssembleMakesAVerifiableDisk(t *testing.T) {
	needTools(t, "sfdisk", "fsck.vfat", "e2fsck")
	contents := images(t)
	for name, c := range map[string]struct {
		table *parttable.Table
		size  int64
	}{"mbr": {mbrTable(), mbrDiskSize}, "gpt": {gptTable(), gptDiskSize}} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.img")
			if err := Assemble(img, c.table, c.size, contents, bootState()); err != nil {
				t.Fatal(err)
			}
			check(t, "sfdisk", "--verify", img)
			parts := map[int]parttable.Partition{}
			for _, p := range c.table.Partitions {
				parts[p.Number] = p
			}
			check(t, "fsck.vfat", "-n", extract(t, img, parts[1]))
			check(t, "e2fsck", "-fn", extract(t, img, parts[2]))
			check(t, "e2fsck", "-fn", extract(t, img, parts[4]))

			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := parttable.Read(f, c.size)
			if err != nil {
				t.Fatal(err)
			}
			if got.DiskID != c.table.DiskID || len(got.Partitions) != 4 {
				t.Errorf("table read back: %+v", got)
			}
			for _, w := range bootState() {
				b := make([]byte, len(w.Data))
				f.ReadAt(b, w.Off)
				if !bytes.Equal(b, w.Data) {
					t.Errorf("boot state at %d not written", w.Off)
				}
			}

			t.Run("holes are preserved", func(t *testing.T) {
				var sum int64
				for _, p := range contents {
					sum += allocated(t, p)
				}
				// The sources, plus the table and the boot state,
				// plus a little for block rounding.
				if used := allocated(t, img); used > sum+256<<10 {
					t.Errorf("disk allocates %d bytes, its parts %d", used, sum)
				}
				rs, err := bmap.DataRanges(f)
				if err != nil {
					t.Fatal(err)
				}
				b := parts[3]
				for _, r := range rs {
					if r.Offset < b.End() && b.Start < r.Offset+r.Length {
						t.Errorf("empty root-b has data at %d-%d", r.Offset, r.Offset+r.Length)
					}
				}
				// Every data block of the disk comes from the table, a
				// raw write, or a data block of a partition image.
				var allowed []bmap.Range
				ws, _ := parttable.Encode(c.table, c.size)
				for _, w := range append(ws, bootState()...) {
					allowed = append(allowed, bmap.Range{Offset: w.Off, Length: int64(len(w.Data))})
				}
				for n, path := range contents {
					src, err := os.Open(path)
					if err != nil {
						t.Fatal(err)
					}
					srs, err := bmap.DataRanges(src)
					src.Close()
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range srs {
						allowed = append(allowed, bmap.Range{Offset: parts[n].Start + r.Offset, Length: r.Length})
					}
				}
				for _, r := range rs {
					for off := r.Offset; off < r.Offset+r.Length; off += 4096 {
						ok := false
						for _, a := range allowed {
							if a.Offset/4096*4096 <= off && off < a.Offset+a.Length {
								ok = true
								break
							}
						}
						if !ok {
							t.Fatalf("disk block at %d holds data although no source has data there", off)
						}
					}
				}
			})

			t.Run("first boot grows the data partition", func(t *testing.T) {
				grown := filepath.Join(dir, "grown.img")
				copyFile(t, img, grown)
				card := c.size + 100*mib + 512
				if err := os.Truncate(grown, card); err != nil {
					t.Fatal(err)
				}
				g, err := os.OpenFile(grown, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer g.Close()
				changed, size, err := parttable.GrowLast(g, card, g.Sync)
				if err != nil || !changed || size != dataSize+100*mib {
					t.Fatalf("GrowLast = %v, %d, %v", changed, size, err)
				}
				check(t, "sfdisk", "--verify", grown)
				p := parts[4]
				p.Size = size
				check(t, "e2fsck", "-fn", extract(t, grown, p))
			})

			t.Run("two runs give the same bytes", func(t *testing.T) {
				img2 := filepath.Join(dir, "disk2.img")
				if err := Assemble(img2, c.table, c.size, contents, bootState()); err != nil {
					t.Fatal(err)
				}
				if hashFile(t, img) != hashFile(t, img2) {
					t.Error("two assemblies differ")
				}
			})
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	fi, _ := in.Stat()
	out.Truncate(fi.Size())
	rs, err := bmap.DataRanges(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		io.Copy(io.NewOffsetWriter(out, r.Offset), io.NewSectionReader(in, r.Offset, r.Length))
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

func TestAssembleRefuses(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, []byte("x"), 0o644)
	big := filepath.Join(dir, "big.img")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(big, rootSz+512)
	unaligned := mbrTable()
	unaligned.Partitions[1].Start += mib
	unaligned.Partitions[1].Size -= mib
	cases := []struct {
		name     string
		table    *parttable.Table
		contents map[int]string
		extra    []parttable.Write
		want     string
	}{
		{"an image larger than its partition", mbrTable(), map[int]string{2: big}, nil,
			"is 33554944 bytes (33 MiB), the partition holds 33554432 bytes (32 MiB): raise the partition size in the board file"},
		{"an image for a missing partition", mbrTable(), map[int]string{5: small}, nil, "which the table does not have"},
		{"a missing image file", mbrTable(), map[int]string{2: filepath.Join(dir, "nope")}, nil, "no such file"},
		{"a raw write inside a partition", mbrTable(), nil, []parttable.Write{{Off: bootStart + 512, Data: []byte("x")}}, "overlaps partition 1"},
		{"a raw write over the MBR", mbrTable(), nil, []parttable.Write{{Off: 0, Data: []byte("x")}}, "overlaps the partition table"},
		{"a raw write over the GPT entries", gptTable(), nil, []parttable.Write{{Off: 20 * 512, Data: []byte("x")}}, "overlaps the partition table"},
		{"overlapping raw writes", mbrTable(), nil, []parttable.Write{{Off: 4096, Data: []byte("xx")}, {Off: 4097, Data: []byte("y")}}, "overlaps raw write 0"},
		{"a partition off the 4 MiB grid", unaligned, nil, nil, "not on a 4 MiB boundary"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "disk.img")
			size := int64(mbrDiskSize)
			if c.table.Kind == parttable.KindGPT {
				size = gptDiskSize
			}
			err := Assemble(out, c.table, size, c.contents, c.extra)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Assemble error = %v, want one containing %q", err, c.want)
			}
			for _, p := range []string{out, out + ".tmp"} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed Assemble left %s (%v)", p, err)
				}
			}
		})
	}
}

func TestAssembleKeepsTheOldImageOnFailure(t *testing.T) {
	out := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(out, []byte("previous image"), 0o644)
	bad := mbrTable()
	bad.Partitions[1].Start = bad.Partitions[0].Start
	if err := Assemble(out, bad, mbrDiskSize, nil, nil); err == nil {
		t.Fatal("Assemble accepted overlapping partitions")
	}
	if b, _ := os.ReadFile(out); string(b) != "previous image" {
		t.Errorf("out was changed by a failed Assemble: %q", b)
	}
}

func TestDerivedIdentifiers(t *testing.T) {
	guid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := DeriveUUID(seed, "root-a"), DeriveUUID(seed, "root-b")
	if !guid.MatchString(a) || !guid.MatchString(b) || a == b || a != DeriveUUID(seed, "root-a") {
		t.Errorf("DeriveUUID: %s %s", a, b)
	}
	if DeriveUUID("ab", "c") == DeriveUUID("a", "bc") {
		t.Error("seed and purpose run together")
	}
	id := DeriveMBRID(seed)
	if !regexp.MustCompile(`^0x[0-9a-f]{8}$`).MatchString(id) || id == "0x00000000" || id != DeriveMBRID(seed) || id == DeriveMBRID("other") {
		t.Errorf("DeriveMBRID = %s", id)
	}
	// Pin the derivation (checked with printf 'bulkhead\0disk' | sha256sum):
	// changing it changes the identity of every image ever built.
	if got := DeriveUUID("bulkhead", "disk"); got != "f6b55ad8-b8f8-4ab3-aac2-ce824401dfe3" {
		t.Errorf("DeriveUUID(bulkhead, disk) = %s", got)
	}
	if got := DeriveMBRID("bulkhead"); got != "0x507077d3" {
		t.Errorf("DeriveMBRID(bulkhead) = %s", got)
	}
}
