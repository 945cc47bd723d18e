package parttable

import (
	"bytes"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// memDisk is a sparse in-memory medium: unwritten sectors read as zeros and
// copies are cheap, so the torn-write test can clone it at every cut point.
type memDisk struct {
	size int64
	secs map[int64][]byte
}

func newMemDisk(size int64) *memDisk { return &memDisk{size: size, secs: map[int64][]byte{}} }

func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		o := off + int64(i)
		if o >= d.size {
			return i, errShort
		}
		if s, ok := d.secs[o/SectorSize]; ok {
			p[i] = s[o%SectorSize]
		} else {
			p[i] = 0
		}
	}
	return len(p), nil
}

func (d *memDisk) WriteAt(p []byte, off int64) (int, error) {
	for i := range p {
		o := off + int64(i)
		if o >= d.size {
			return i, errShort
		}
		s, ok := d.secs[o/SectorSize]
		if !ok {
			s = make([]byte, SectorSize)
			d.secs[o/SectorSize] = s
		}
		s[o%SectorSize] = p[i]
	}
	return len(p), nil
}

func (d *memDisk) clone() *memDisk {
	c := newMemDisk(d.size)
	for k, v := range d.secs {
		c.secs[k] = bytes.Clone(v)
	}
	return c
}

func (d *memDisk) apply(t *testing.T, ws []Write) {
	t.Helper()
	for _, w := range ws {
		if _, err := d.WriteAt(w.Data, w.Off); err != nil {
			t.Fatal(err)
		}
	}
}

type shortErr struct{}

func (shortErr) Error() string { return "beyond the end of the medium" }

var errShort = shortErr{}

// bulkheadMBR is the factory layout of a Raspberry Pi image.
func bulkheadMBR() *Table {
	return &Table{Kind: KindMBR, DiskID: "0x1a2b3c4d", Partitions: []Partition{
		{Number: 1, Type: "0c", Start: 4 * mib, Size: 256 * mib, Bootable: true},
		{Number: 2, Type: "83", Start: 260 * mib, Size: 1 * gib},
		{Number: 3, Type: "83", Start: 260*mib + gib, Size: 1 * gib},
		{Number: 4, Type: "83", Start: 260*mib + 2*gib, Size: 64 * mib},
	}}
}

// bulkheadGPT is the factory layout of an x86_64 image.
func bulkheadGPT() *Table {
	return &Table{Kind: KindGPT, DiskID: "6ba7b810-9dad-41d1-80b4-00c04fd430c8", Partitions: []Partition{
		{Number: 1, Name: "boot", Type: GPTTypeESP, UUID: "11111111-2222-4333-8444-555555555555", Start: 4 * mib, Size: 256 * mib},
		{Number: 2, Name: "root-a", Type: GPTTypeLinux, UUID: "21111111-2222-4333-8444-555555555555", Start: 260 * mib, Size: 1 * gib},
		{Number: 3, Name: "root-b", Type: GPTTypeLinux, UUID: "31111111-2222-4333-8444-555555555555", Start: 260*mib + gib, Size: 1 * gib, Bootable: true},
		{Number: 4, Name: "data", Type: GPTTypeLinux, UUID: "41111111-2222-4333-8444-555555555555", Start: 260*mib + 2*gib, Size: 64 * mib},
	}}
}

const factorySize = 260*mib + 2*gib + 64*mib + 4*mib

// normalized returns t with MBR PARTUUIDs filled in and partitions sorted, the
// way Read reports a table.
func normalized(t *Table) *Table {
	c := *t
	c.FromBackup = false
	c.Partitions = append([]Partition(nil), t.Partitions...)
	sort.Slice(c.Partitions, func(i, j int) bool { return c.Partitions[i].Number < c.Partitions[j].Number })
	for i := range c.Partitions {
		if c.Kind == KindMBR {
			c.Partitions[i].UUID = strings.TrimPrefix(c.DiskID, "0x") + "-0" + string(rune('0'+c.Partitions[i].Number))
		}
	}
	return &c
}

func TestReadReturnsWhatEncodeWrote(t *testing.T) {
	for name, tab := range map[string]*Table{"mbr": bulkheadMBR(), "gpt": bulkheadGPT()} {
		t.Run(name, func(t *testing.T) {
			ws, err := Encode(tab, factorySize)
			if err != nil {
				t.Fatal(err)
			}
			d := newMemDisk(factorySize)
			d.apply(t, ws)
			got, err := Read(d, factorySize)
			if err != nil {
				t.Fatal(err)
			}
			if want := normalized(tab); !reflect.DeepEqual(got, want) {
				t.Errorf("Read(Encode(x)):\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestEncodeIsDeterministic(t *testing.T) {
	a, err := Encode(bulkheadGPT(), factorySize)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Encode(bulkheadGPT(), factorySize)
	if !reflect.DeepEqual(a, b) {
		t.Error("two encodings of the same table differ")
	}
}

func TestEncodePutsGPTWritesInSafeOrder(t *testing.T) {
	ws, err := Encode(bulkheadGPT(), factorySize)
	if err != nil {
		t.Fatal(err)
	}
	last := factorySize - SectorSize
	want := []int64{last - 32*SectorSize, last, 2 * SectorSize, SectorSize, 0}
	for i, w := range ws {
		if w.Off != want[i] {
			t.Errorf("write %d at %d, want %d", i, w.Off, want[i])
		}
	}
}

func TestEncodeRejectsBadTables(t *testing.T) {
	mut := func(base func() *Table, f func(*Table)) *Table {
		tab := base()
		f(tab)
		return tab
	}
	cases := []struct {
		name string
		tab  *Table
		size int64
		want string
	}{
		{"an unknown kind", mut(bulkheadMBR, func(t *Table) { t.Kind = "apm" }), factorySize, "neither"},
		{"overlapping partitions", mut(bulkheadMBR, func(t *Table) { t.Partitions[1].Start -= mib }), factorySize, "overlaps"},
		{"a partition past the end of the disk", bulkheadMBR(), factorySize - 8*mib, "beyond the last usable sector"},
		{"a GPT partition over the backup header", bulkheadGPT(), factorySize - 4*mib, "beyond the last usable sector"},
		{"an unaligned start", mut(bulkheadMBR, func(t *Table) { t.Partitions[0].Start += 100 }), factorySize, "multiples of 512"},
		{"a disk size that is not whole sectors", bulkheadMBR(), factorySize + 1, "multiple of 512"},
		{"a partition starting at LBA 0", mut(bulkheadMBR, func(t *Table) { t.Partitions[0].Start = 0 }), factorySize, "before the first usable sector"},
		{"a GPT partition over the primary entries", mut(bulkheadGPT, func(t *Table) { t.Partitions[0].Start = 16 * SectorSize }), factorySize, "before the first usable sector"},
		{"a duplicate number", mut(bulkheadMBR, func(t *Table) { t.Partitions[1].Number = 1 }), factorySize, "used twice"},
		{"a fifth MBR partition", mut(bulkheadMBR, func(t *Table) { t.Partitions[3].Number = 5 }), factorySize, "out of range 1-4"},
		{"an MBR extended type", mut(bulkheadMBR, func(t *Table) { t.Partitions[2].Type = "05" }), factorySize, "extended"},
		{"a bad MBR disk ID", mut(bulkheadMBR, func(t *Table) { t.DiskID = "disk" }), factorySize, "0x1a2b3c4d"},
		{"a bad GPT disk GUID", mut(bulkheadGPT, func(t *Table) { t.DiskID = "0x1a2b3c4d" }), factorySize, "not a GUID"},
		{"a shared partition GUID", mut(bulkheadGPT, func(t *Table) { t.Partitions[1].UUID = t.Partitions[0].UUID }), factorySize, "share the GUID"},
		{"a GPT name over 36 characters", mut(bulkheadGPT, func(t *Table) { t.Partitions[0].Name = strings.Repeat("x", 37) }), factorySize, "limit is 36"},
		{"an MBR partition past 2 TiB", mut(bulkheadMBR, func(t *Table) { t.Partitions[3].Size = 3 << 40 }), 4 << 40, "beyond the last usable sector"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Encode(c.tab, c.size)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Encode error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestReadFallsBackToTheBackupGPT(t *testing.T) {
	ws, err := Encode(bulkheadGPT(), factorySize)
	if err != nil {
		t.Fatal(err)
	}
	for _, damage := range []struct {
		name string
		off  int64
	}{{"header", SectorSize}, {"entries", 2 * SectorSize}} {
		t.Run(damage.name, func(t *testing.T) {
			d := newMemDisk(factorySize)
			d.apply(t, ws)
			d.WriteAt([]byte{0xff, 0xff}, damage.off+20)
			got, err := Read(d, factorySize)
			if err != nil {
				t.Fatal(err)
			}
			if !got.FromBackup {
				t.Error("FromBackup = false after damaging the primary")
			}
			got.FromBackup = false
			if want := normalized(bulkheadGPT()); !reflect.DeepEqual(got, want) {
				t.Errorf("backup table %+v, want %+v", got, want)
			}
		})
	}
}

func TestReadRefusesDamagedTables(t *testing.T) {
	ws, _ := Encode(bulkheadGPT(), factorySize)
	d := newMemDisk(factorySize)
	d.apply(t, ws)
	d.WriteAt([]byte{1}, SectorSize+30)
	d.WriteAt([]byte{1}, factorySize-SectorSize+30)
	if _, err := Read(d, factorySize); err == nil || !strings.Contains(err.Error(), "no intact GPT") {
		t.Errorf("both GPT copies damaged: err = %v", err)
	}
	if _, err := Read(newMemDisk(mib), mib); err == nil || !strings.Contains(err.Error(), "no partition table") {
		t.Errorf("blank medium: err = %v", err)
	}
	ws, _ = Encode(bulkheadMBR(), factorySize)
	d = newMemDisk(factorySize)
	d.apply(t, ws)
	if _, err := Read(d, factorySize-64*mib); err == nil || !strings.Contains(err.Error(), "beyond") {
		t.Errorf("MBR on a smaller medium: err = %v", err)
	}
}

func TestCHSFollowsTheConvention(t *testing.T) {
	cases := []struct {
		lba  uint64
		want [3]byte
	}{
		{0, [3]byte{0, 1, 0}},
		{62, [3]byte{0, 63, 0}},
		{63, [3]byte{1, 1, 0}},
		{8192, [3]byte{130, 3, 0}},
		{255 * 63 * 300, [3]byte{0, 1 | 0x40, 300 & 0xff}},
		{255*63*1024 - 1, [3]byte{254, 0xff, 0xff}},
		{1 << 31, [3]byte{0xfe, 0xff, 0xff}},
	}
	for _, c := range cases {
		if got := chs(c.lba); got != c.want {
			t.Errorf("chs(%d) = % x, want % x", c.lba, got, c.want)
		}
	}
}
