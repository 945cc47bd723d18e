package powercut

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
)

// Fixture is a failing crash state kept as a regression test
// (testdata/*.json, run by TestRegressionFixtures): what the checks read
// from that state's disk, small enough to keep in the repository.
//
// The slots are not kept (a slot image is 1 GiB): Slots says which image
// each slot held in full, and a run serves a small synthetic image for a
// complete slot, with the manifest digests of the state file changed to
// match it.
type Fixture struct {
	// Name is the crash state, Board and Phase where it came from.
	Name  string `json:"name"`
	Board string `json:"board"`
	Phase string `json:"phase"`
	// Found is what it failed when it was recorded.
	Found []Finding `json:"found"`
	// Bootstate is the layout (bulkhead.bootstate); CopyA and CopyB the
	// two boot-state copies as they were on the disk.
	Bootstate string `json:"bootstate"`
	CopyA     []byte `json:"copy_a"`
	CopyB     []byte `json:"copy_b"`
	// Slots names the version each slot held in full ("" if neither).
	Slots map[bootloader.Slot]string `json:"slots"`
	// StateJSON is /data/supervisor/state.json ("" when absent).
	StateJSON string `json:"state_json,omitempty"`
	Absent    bool   `json:"state_json_absent,omitempty"`
	// Synced is the workload record the state must hold.
	Synced uint64 `json:"synced"`
	// Data, if set, names the gzipped data partition next to the
	// fixture (kept when a data check failed).
	Data string `json:"data,omitempty"`
	// Release is the running OS's manifest fields for Resume.
	Release bundle.Manifest `json:"release"`
}

// Fixture captures a crash state. It must be called while the Checker
// stands at the state's base (from Check's progress callback).
func (c *Checker) Fixture(ctx context.Context, r *Result, dir string) (*Fixture, error) {
	v, top := c.view(r.State)
	if r.State.Durable != c.durable {
		return nil, fmt.Errorf("fixture of %s: the checker is not at its base", r.Name)
	}
	f := &Fixture{Name: r.Name, Board: c.cfg.Board, Phase: r.Phase, Found: r.Findings, Bootstate: c.cfg.Bootstate.String(),
		Slots: map[bootloader.Slot]string{}, Synced: r.Synced, Release: c.cfg.Release}
	f.Release.Image, f.Release.Payload = bundle.Image{}, bundle.Payload{}
	size := c.codec.Size()
	f.CopyA, f.CopyB = make([]byte, size), make([]byte, size)
	if _, err := v.ReadAt(f.CopyA, c.cfg.Bootstate.OffA); err != nil {
		return nil, err
	}
	if _, err := v.ReadAt(f.CopyB, c.cfg.Bootstate.OffB); err != nil {
		return nil, err
	}
	for _, s := range []bootloader.Slot{bootloader.SlotA, bootloader.SlotB} {
		im, err := c.complete(top, s)
		if err != nil {
			return nil, err
		}
		if im != nil {
			f.Slots[s] = im.Version
		} else {
			f.Slots[s] = ""
		}
	}
	t, err := readTable(v)
	if err != nil {
		return nil, err
	}
	data := t[partData]
	dr, err := c.dataResult(ctx, v, top, data)
	if err != nil {
		return nil, err
	}
	f.StateJSON, f.Absent = string(dr.StateJSON), dr.StateJSON == nil
	dataFailed := false
	for _, x := range r.Findings {
		dataFailed = dataFailed || x.Check == "data mount" || x.Check == "data fsck" || x.Check == "workload"
	}
	if dataFailed {
		f.Data = fixtureFile(r.Name) + ".data.gz"
		if err := writeGzip(filepath.Join(dir, f.Data), io.NewSectionReader(v, data.Start, data.Size)); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// Save writes the fixture into dir as <name>.json.
func (f *Fixture) Save(dir string) (string, error) {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, fixtureFile(f.Name)+".json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

func fixtureFile(name string) string {
	r := strings.NewReplacer("/", "_", "@", "-", "{", "", "}", "", ",", "+", ":", "-", "#", "", ".", "")
	return r.Replace(name)
}

// LoadFixture reads a fixture file.
func LoadFixture(path string) (*Fixture, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f Fixture
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("fixture %s: %w", path, err)
	}
	return &f, nil
}

// syntheticImage stands in for a complete slot image in fixture runs.
var syntheticImage = bytes.Repeat([]byte("bulkhead powercut synthetic slot image\n"), 1<<20/39+1)[:1<<20]

// Run checks the fixture again the way Check checked its crash state:
// the boot state, the slot it boots, the data partition if kept, and the
// supervisor's Resume.
func (f *Fixture) Run(ctx context.Context, dir, scratch string) (*Result, error) {
	bs, err := bootloader.ParseBootstateArg(f.Bootstate)
	if err != nil {
		return nil, err
	}
	codec, err := bs.Codec()
	if err != nil {
		return nil, err
	}
	disk := &copiesDisk{bs: bs, a: f.CopyA, b: f.CopyB}
	st, info, err := bootloader.NewStore(disk, codec, bs.OffA, bs.OffB).Read()
	if err != nil {
		return nil, err
	}
	r := &Result{Name: f.Name, Phase: f.Phase, BootState: st, Synced: f.Synced}
	if info.Default() {
		r.fail("boot state", "neither copy is valid (a: %s; b: %s)", info.Copies[0].Error, info.Copies[1].Error)
	}
	boot, trial, next := bootloader.Decide(st)
	r.Boot, r.Trial = boot, trial
	linux := st
	if next != nil {
		linux = *next
	}
	complete := func(s bootloader.Slot) bool { return f.Slots[s] != "" }
	if !complete(boot) {
		r.fail("slot", "the bootloader boots slot %s (%s), which held no complete slot image", boot, st)
	} else {
		r.Image = f.Slots[boot]
	}
	if f.Data != "" {
		dr, err := checkDataFile(ctx, filepath.Join(dir, f.Data), scratch)
		if err != nil {
			return nil, err
		}
		if dr.Mount != "" {
			r.fail("data mount", "Linux 6.1 refuses to mount the data partition (%s)", dr.Mount)
		}
		if dr.Fsck != "" {
			r.fail("data fsck", "%s", dr.Fsck)
		}
		for _, bad := range dr.Workload.Check(f.Synced) {
			r.fail("workload", "%s", bad)
		}
	}
	var state []byte
	if !f.Absent {
		state = []byte(f.StateJSON)
	}
	if _, err := ParseUpdateState(state); err != nil {
		r.fail("supervisor state", "%v", err)
		return r, nil
	}
	state, err = syntheticDigests(state)
	if err != nil {
		return nil, err
	}
	rr, err := simulateResume(ctx, resumeInput{
		state: state, boot: linux, slot: boot, trial: trial, board: f.Board, current: f.Release,
		openSlot: func(s bootloader.Slot) (slot.Device, error) {
			img := make([]byte, 2*len(syntheticImage))
			if complete(s) {
				copy(img, syntheticImage)
			}
			return readOnlySlot{r: bytes.NewReader(img), size: int64(len(img))}, nil
		},
	}, scratch)
	if err != nil {
		return nil, err
	}
	r.UpdateBefore, r.UpdateAfter = rr.Before, rr.After
	judgeResume(r, rr, linux, complete)
	return r, nil
}

// syntheticDigests points the state file's manifest at syntheticImage.
func syntheticDigests(state []byte) ([]byte, error) {
	if state == nil {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(state, &m); err != nil {
		return nil, err
	}
	upd, _ := m["update"].(map[string]any)
	man, _ := upd["manifest"].(map[string]any)
	if man == nil {
		return state, nil
	}
	sum := sha256.Sum256(syntheticImage)
	man["image"] = map[string]any{"size": len(syntheticImage), "sha256": hex.EncodeToString(sum[:])}
	return json.Marshal(m)
}

// copiesDisk is a disk that holds nothing but the two boot-state copies.
type copiesDisk struct {
	bs   bootloader.Bootstate
	a, b []byte
}

func (d *copiesDisk) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for _, c := range []struct {
		off  int64
		data []byte
	}{{d.bs.OffA, d.a}, {d.bs.OffB, d.b}} {
		lo, hi := max(off, c.off), min(off+int64(len(p)), c.off+int64(len(c.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], c.data[lo-c.off:hi-c.off])
		}
	}
	return len(p), nil
}
func (d *copiesDisk) WriteAt([]byte, int64) (int, error) { return 0, fmt.Errorf("read only") }
func (d *copiesDisk) Sync() error                        { return nil }

func writeGzip(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	if _, err := io.Copy(zw, r); err != nil {
		f.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
