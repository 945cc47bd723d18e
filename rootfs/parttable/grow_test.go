package parttable

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestGrowLastReachesTheEndOfAnEnlargedImage(t *testing.T) {
	needTool(t, "sfdisk")
	for name, tab := range map[string]*Table{"mbr": bulkheadMBR(), "gpt": bulkheadGPT()} {
		t.Run(name, func(t *testing.T) {
			ws, err := Encode(tab, factorySize)
			if err != nil {
				t.Fatal(err)
			}
			path := writeImage(t, factorySize, ws)
			// A 16 GB card is rarely a whole number of MiB: grow to an odd size.
			const card = 15_931_539_456 + 7*SectorSize
			if err := os.Truncate(path, card); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			changed, size, err := GrowLast(f, card, f.Sync)
			if err != nil || !changed {
				t.Fatalf("GrowLast = %v, %d, %v; want a change", changed, size, err)
			}
			sfdiskVerify(t, path)
			got, err := Read(f, card)
			if err != nil {
				t.Fatal(err)
			}
			data := got.Partitions[3]
			limit := int64(card)
			if name == "gpt" {
				limit -= 33 * SectorSize
			}
			if data.End()%GrowAlign != 0 || data.End() > limit || limit-data.End() >= GrowAlign || data.Size != size {
				t.Errorf("data partition now ends at %d (size %d, GrowLast said %d); want the last 4 MiB boundary before %d", data.End(), data.Size, size, limit)
			}
			want := normalized(tab)
			want.Partitions[3].Size = size
			compareWithSfdisk(t, path, want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("after growing:\n got %+v\nwant %+v", got, want)
			}

			changed, size2, err := GrowLast(f, card, f.Sync)
			if err != nil || changed || size2 != size {
				t.Errorf("second GrowLast = %v, %d, %v; want false, %d, nil", changed, size2, err, size)
			}
		})
	}
}

func TestGrowLastLeavesAFullTableAlone(t *testing.T) {
	// The MBR data partition fills the medium exactly; the GPT one leaves
	// room for the backup GPT, which rounds down to the end it has.
	for name, c := range map[string]struct {
		tab  *Table
		size int64
	}{"mbr": {bulkheadMBR(), factorySize - 4*mib}, "gpt": {bulkheadGPT(), factorySize}} {
		t.Run(name, func(t *testing.T) {
			ws, _ := Encode(c.tab, c.size)
			d := newMemDisk(c.size)
			d.apply(t, ws)
			before := d.clone()
			changed, size, err := GrowLast(d, c.size, nil)
			if err != nil || changed || size != 64*mib {
				t.Fatalf("GrowLast on a full disk = %v, %d, %v", changed, size, err)
			}
			if !reflect.DeepEqual(before.secs, d.secs) {
				t.Error("GrowLast wrote although nothing needed to change")
			}
		})
	}
}

func TestGrowLastRefusesASmallerMedium(t *testing.T) {
	for name, c := range map[string]struct {
		tab  *Table
		want string
	}{
		"mbr": {bulkheadMBR(), "use a larger disk"},
		"gpt": {bulkheadGPT(), "write the image to a medium of at least that size"},
	} {
		t.Run(name, func(t *testing.T) {
			ws, _ := Encode(c.tab, factorySize)
			d := newMemDisk(factorySize)
			d.apply(t, ws)
			_, _, err := GrowLast(d, factorySize-8*mib, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("GrowLast on a smaller medium: err = %v, want %q", err, c.want)
			}
		})
	}
}

// recorder records the writes GrowLast issues, in order.
type recorder struct {
	*memDisk
	writes []Write
	syncs  []int // number of writes done when sync was called
}

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.writes = append(r.writes, Write{Off: off, Data: append([]byte(nil), p...)})
	return r.memDisk.WriteAt(p, off)
}

// TestTornGPTGrowAlwaysLeavesAValidTable cuts the power after every sector
// of the grow's write sequence, with the sectors of each multi-sector write
// landing front to back and back to front, and checks that what is left
// reads as either the old or the new table and that GrowLast finishes the
// job on the next boot.
func TestTornGPTGrowAlwaysLeavesAValidTable(t *testing.T) {
	ws, err := Encode(bulkheadGPT(), factorySize)
	if err != nil {
		t.Fatal(err)
	}
	const card = 8 * gib
	old := newMemDisk(card)
	old.apply(t, ws)
	oldTable := normalized(bulkheadGPT())

	rec := &recorder{memDisk: old.clone()}
	sync := func() error { rec.syncs = append(rec.syncs, len(rec.writes)); return nil }
	if changed, _, err := GrowLast(rec, card, sync); err != nil || !changed {
		t.Fatalf("GrowLast = %v, %v", changed, err)
	}
	if want := []int{2, 4, 5}; !reflect.DeepEqual(rec.syncs, want) {
		t.Errorf("syncs after writes %v, want %v", rec.syncs, want)
	}
	full := rec.memDisk
	newTable, err := Read(full, card)
	if err != nil {
		t.Fatal(err)
	}

	for _, reverse := range []bool{false, true} {
		// Flatten the writes into single-sector writes in landing order.
		var sectors []Write
		for _, w := range rec.writes {
			var ss []Write
			for o := 0; o < len(w.Data); o += SectorSize {
				ss = append(ss, Write{Off: w.Off + int64(o), Data: w.Data[o : o+SectorSize]})
			}
			if reverse {
				for i, j := 0, len(ss)-1; i < j; i, j = i+1, j-1 {
					ss[i], ss[j] = ss[j], ss[i]
				}
			}
			sectors = append(sectors, ss...)
		}
		sawOld, sawNew := false, false
		for cut := 0; cut <= len(sectors); cut++ {
			d := old.clone()
			d.apply(t, sectors[:cut])
			got, err := Read(d, card)
			if err != nil {
				t.Fatalf("reverse=%v, cut after %d sectors: %v", reverse, cut, err)
			}
			got.FromBackup = false
			switch {
			case reflect.DeepEqual(got, oldTable):
				sawOld = true
			case reflect.DeepEqual(got, newTable):
				sawNew = true
			default:
				t.Fatalf("reverse=%v, cut after %d sectors: table is neither old nor new: %+v", reverse, cut, got)
			}
			if _, _, err := GrowLast(d, card, nil); err != nil {
				t.Fatalf("reverse=%v, cut after %d sectors: repairing GrowLast: %v", reverse, cut, err)
			}
			if !reflect.DeepEqual(d.secs, full.secs) {
				t.Fatalf("reverse=%v, cut after %d sectors: repaired disk differs from an uninterrupted grow", reverse, cut)
			}
		}
		if !sawOld || !sawNew {
			t.Errorf("reverse=%v: saw old %v, new %v; want both", reverse, sawOld, sawNew)
		}
	}
}

func TestTornMBRGrowIsOneSector(t *testing.T) {
	ws, _ := Encode(bulkheadMBR(), factorySize)
	d := &recorder{memDisk: newMemDisk(8 * gib)}
	d.memDisk.apply(t, ws)
	if changed, _, err := GrowLast(d, 8*gib, nil); err != nil || !changed {
		t.Fatalf("GrowLast = %v, %v", changed, err)
	}
	if len(d.writes) != 1 || d.writes[0].Off != 0 || len(d.writes[0].Data) != SectorSize {
		t.Errorf("MBR grow wrote %d writes, want one write of sector 0", len(d.writes))
	}
}
