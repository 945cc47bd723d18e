package parttable

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sfdiskTable is the part of `sfdisk --json` the tests compare.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Device     string `json:"device"`
		FirstLBA   int64  `json:"firstlba"`
		LastLBA    int64  `json:"lastlba"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
			Attrs    string `json:"attrs"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed: %v", name, err)
	}
}

// writeImage creates a sparse image file of size bytes holding ws.
func writeImage(t *testing.T, size int64, ws []Write) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if _, err := f.WriteAt(w.Data, w.Off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// sfdiskVerify fails the test unless sfdisk finds nothing to complain about.
func sfdiskVerify(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--verify", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") ||
		strings.Contains(strings.ToLower(string(out)), "warn") || strings.Contains(string(out), "mismatch") {
		t.Fatalf("sfdisk --verify %s: %v\n%s", path, err, out)
	}
}

func sfdiskJSON(t *testing.T, path string) *sfdiskTable {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var st sfdiskTable
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("sfdisk --json output: %v\n%s", err, out)
	}
	return &st
}

// compareWithSfdisk checks that sfdisk sees exactly the table tab.
func compareWithSfdisk(t *testing.T, path string, tab *Table) {
	t.Helper()
	st := sfdiskJSON(t, path).PartitionTable
	wantLabel := map[string]string{KindMBR: "dos", KindGPT: "gpt"}[tab.Kind]
	if st.Label != wantLabel || !strings.EqualFold(st.ID, tab.DiskID) {
		t.Errorf("sfdisk sees label %q id %q, want %q %q", st.Label, st.ID, wantLabel, tab.DiskID)
	}
	byNumber := map[int]Partition{}
	for _, p := range tab.Partitions {
		byNumber[p.Number] = p
	}
	if len(st.Partitions) != len(byNumber) {
		t.Fatalf("sfdisk sees %d partitions, want %d", len(st.Partitions), len(byNumber))
	}
	for _, sp := range st.Partitions {
		n, err := strconv.Atoi(strings.TrimPrefix(sp.Node, st.Device))
		if err != nil {
			t.Fatalf("node %q: %v", sp.Node, err)
		}
		p, ok := byNumber[n]
		if !ok {
			t.Errorf("sfdisk sees unexpected partition %d", n)
			continue
		}
		if sp.Start*SectorSize != p.Start || sp.Size*SectorSize != p.Size {
			t.Errorf("partition %d: sfdisk start %d size %d sectors, want %d %d", n, sp.Start, sp.Size, p.Start/SectorSize, p.Size/SectorSize)
		}
		switch tab.Kind {
		case KindMBR:
			st, _ := parseMBRType(sp.Type)
			pt, _ := parseMBRType(p.Type)
			if st != pt || sp.Bootable != p.Bootable {
				t.Errorf("partition %d: sfdisk type %s bootable %v, want %s %v", n, sp.Type, sp.Bootable, p.Type, p.Bootable)
			}
		case KindGPT:
			if !strings.EqualFold(sp.Type, p.Type) || !strings.EqualFold(sp.UUID, p.UUID) || sp.Name != p.Name {
				t.Errorf("partition %d: sfdisk type %s uuid %s name %q, want %s %s %q", n, sp.Type, sp.UUID, sp.Name, p.Type, p.UUID, p.Name)
			}
			if p.Bootable != strings.Contains(sp.Attrs, "LegacyBIOSBootable") {
				t.Errorf("partition %d: sfdisk attrs %q, bootable %v", n, sp.Attrs, p.Bootable)
			}
		}
	}
}

func TestSfdiskReadsEncodedTables(t *testing.T) {
	needTool(t, "sfdisk")
	small := &Table{Kind: KindGPT, DiskID: "00000000-0000-4000-8000-000000000001", Partitions: []Partition{
		{Number: 7, Name: "ünïcode", Type: GPTTypeLinux, UUID: "00000000-0000-4000-8000-000000000002", Start: 34 * SectorSize, Size: 100 * SectorSize},
	}}
	for name, c := range map[string]struct {
		tab  *Table
		size int64
	}{
		"raspberry pi mbr":          {bulkheadMBR(), factorySize},
		"x86_64 gpt":                {bulkheadGPT(), factorySize},
		"gpt with a sparse entry":   {small, 1 * mib},
		"mbr beyond 1024 cylinders": {bulkheadMBR(), 32 * gib},
	} {
		t.Run(name, func(t *testing.T) {
			ws, err := Encode(c.tab, c.size)
			if err != nil {
				t.Fatal(err)
			}
			path := writeImage(t, c.size, ws)
			sfdiskVerify(t, path)
			compareWithSfdisk(t, path, c.tab)
		})
	}
}
