package parttable

import (
	"bytes"
	"testing"
)

// tinyImage renders a table into an in-memory image small enough to be a
// useful fuzz seed.
func tinyImage(t testing.TB, tab *Table, size int64) []byte {
	ws, err := Encode(tab, size)
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, size)
	for _, w := range ws {
		copy(img[w.Off:], w.Data)
	}
	return img
}

// smallGPT is a GPT with a 4-entry array (one sector) on a 16-sector medium:
// legal, and small enough that the fuzzer can mutate and minimise it quickly.
func smallGPT(t testing.TB) []byte {
	const sectors = 16
	l := gptLayout{numEntries: 4, entrySize: gptEntrySize, firstUsable: 3, primaryEntriesLBA: 2}
	l.diskGUID, _ = parseGUID("6ba7b810-9dad-41d1-80b4-00c04fd430c8")
	arr := make([]byte, 4*gptEntrySize)
	typ, _ := parseGUID(GPTTypeLinux)
	id, _ := parseGUID("11111111-2222-4333-8444-555555555555")
	copy(arr[128:], typ[:])
	copy(arr[144:], id[:])
	arr[160], arr[168] = 4, 9 // sectors 4-9
	name, _ := encodeName("data")
	copy(arr[128+56:], name[:])
	img := make([]byte, sectors*SectorSize)
	for _, w := range gptWrites(l, arr, nil, sectors) {
		copy(img[w.Off:], w.Data)
	}
	if _, err := Read(bytes.NewReader(img), int64(len(img))); err != nil {
		t.Fatalf("seed GPT does not read back: %v", err)
	}
	return img
}

func FuzzRead(f *testing.F) {
	f.Add(tinyImage(f, &Table{Kind: KindMBR, DiskID: "0xdeadbeef", Partitions: []Partition{
		{Number: 1, Type: "0c", Start: 1 * SectorSize, Size: 3 * SectorSize, Bootable: true},
		{Number: 3, Type: "83", Start: 4 * SectorSize, Size: 4 * SectorSize},
	}}, 8*SectorSize))
	f.Add(smallGPT(f))
	f.Add(tinyImage(f, &Table{Kind: KindGPT, DiskID: "6ba7b810-9dad-41d1-80b4-00c04fd430c8", Partitions: []Partition{
		{Number: 1, Name: "boot", Type: GPTTypeESP, UUID: "11111111-2222-4333-8444-555555555555", Start: 34 * SectorSize, Size: 10 * SectorSize, Bootable: true},
		{Number: 2, Name: "data", Type: GPTTypeLinux, UUID: "21111111-2222-4333-8444-555555555555", Start: 44 * SectorSize, Size: 18 * SectorSize},
	}}, 96*SectorSize))
	f.Fuzz(func(t *testing.T, img []byte) {
		size := int64(len(img)) / SectorSize * SectorSize
		if size == 0 {
			return
		}
		tab, err := Read(bytes.NewReader(img), size)
		if err != nil {
			return
		}
		for _, p := range tab.Partitions {
			if p.Start < SectorSize || p.Size <= 0 || p.End() > size || p.Start%SectorSize != 0 || p.Size%SectorSize != 0 {
				t.Fatalf("Read accepted partition %+v on a %d-byte medium", p, size)
			}
		}
		if tab.Kind == KindMBR {
			// Whatever Read accepts as an MBR, Encode must write back
			// to the same table.
			again, err := Read(bytes.NewReader(tinyImage(t, tab, size)), size)
			if err != nil {
				t.Fatalf("re-reading the encoded table: %v", err)
			}
			if len(again.Partitions) != len(tab.Partitions) || again.DiskID != tab.DiskID {
				t.Fatalf("MBR round trip changed %+v into %+v", tab, again)
			}
			for i := range again.Partitions {
				if again.Partitions[i] != tab.Partitions[i] {
					t.Fatalf("MBR round trip changed %+v into %+v", tab.Partitions[i], again.Partitions[i])
				}
			}
		}
		// GrowLast may refuse (a GPT whose backup lies beyond this
		// medium, say), but when it succeeds the result must read back
		// and a second call must find nothing to do.
		d := append([]byte(nil), img[:size]...)
		w := &sliceDisk{d}
		if _, _, err := GrowLast(w, size, nil); err != nil {
			return
		}
		if _, err := Read(w, size); err != nil {
			t.Fatalf("Read after GrowLast: %v", err)
		}
		if changed, _, err := GrowLast(w, size, nil); err != nil || changed {
			t.Fatalf("second GrowLast = %v, %v", changed, err)
		}
	})
}

type sliceDisk struct{ b []byte }

func (s *sliceDisk) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(s.b).ReadAt(p, off)
}

func (s *sliceDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(s.b)) {
		return 0, errShort
	}
	return copy(s.b[off:], p), nil
}
