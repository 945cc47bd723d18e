package powercut

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// Partition numbers of the fixed layout (docs/architecture.md).
const (
	partBoot = 1
	partA    = 2
	partB    = 3
	partData = 4
)

// Marker ties a console line of the recorded run to the log: Offset is the
// log's size when the line arrived, so every entry the guest had seen
// complete before printing it ends at or before Offset.
type Marker struct {
	Offset int64  `json:"offset"`
	Line   string `json:"line"`
	// Synced is the workload record the line reports as fsync'd (0: none).
	Synced uint64 `json:"synced,omitempty"`
	// Phase names the part of the run that starts with this line ("" if
	// it starts none).
	Phase string `json:"phase,omitempty"`
}

// Config is what a Checker needs.
type Config struct {
	Log *dmlog.Log
	// Base is the disk image before the recorded run, Size its size.
	Base io.ReaderAt
	Size int64
	// Bootstate is the layout of the boot-state copies (FindBootstate).
	Bootstate bootloader.Bootstate
	// Images are the contents each slot may hold.
	Images []SlotImage
	// Markers of the recorded run, in log order.
	Markers []Marker
	// Board and Release describe the OS for the supervisor's Resume.
	Board   string
	Release bundle.Manifest
	// ScratchDir receives temporary copies of data partitions.
	ScratchDir string
	// Workers run crash states in parallel (the data check runs e2fsck).
	Workers int
}

// Finding is one check a crash state failed.
type Finding struct {
	Check  string `json:"check"`
	Detail string `json:"detail"`
}

// Result is the outcome of one crash state.
type Result struct {
	State CrashState `json:"-"`
	Name  string     `json:"state"`
	Phase string     `json:"phase"`
	// Boot is what the bootloader model does with the state.
	BootState bootloader.State `json:"boot_state"`
	Boot      bootloader.Slot  `json:"boot"`
	Trial     bool             `json:"trial"`
	// Image is the version the booted slot holds ("" if incomplete).
	Image string `json:"image,omitempty"`
	// Synced is the workload record the state must hold.
	Synced uint64 `json:"synced"`
	// Repaired is the transaction whose torn commit block the initramfs
	// drops to mount the data partition (0 if none).
	Repaired uint32 `json:"repaired,omitempty"`
	// Update is the supervisor's phase before and after its Resume.
	UpdateBefore updater.Phase `json:"update_before,omitempty"`
	UpdateAfter  updater.Phase `json:"update_after,omitempty"`
	Findings     []Finding     `json:"findings,omitempty"`
}

// Failed reports whether any check failed.
func (r *Result) Failed() bool { return len(r.Findings) > 0 }

func (r *Result) fail(check, format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Check: check, Detail: fmt.Sprintf(format, args...)})
}

// Checker checks crash states of one recorded run.
type Checker struct {
	cfg   Config
	ss    int
	codec bootloader.Codec
	table *parttable.Table
	parts map[int]parttable.Partition
	// trackers are made when a slot is first looked at (reading an
	// image costs a second or two), from the running base.
	tmu      sync.Mutex
	trackers map[bootloader.Slot][]*tracker
	syncedAt []Marker // markers with Synced, by Offset
	phases   []Marker // markers with Phase, by Offset

	// running base: entries [0, durable) applied
	durable  int
	base     *overlay
	dataHash [32]byte // chain over the applied writes that touch the data region

	mu      sync.Mutex
	data    map[[32]byte]*dataOnce
	resumes map[string]*resumeOnce
	// Stats
	DataChecks, Resumes int
	tm                  timing
}

type dataOnce struct {
	once sync.Once
	res  *DataResult
	err  error
}

type resumeOnce struct {
	once sync.Once
	res  ResumeResult
	err  error
}

// NewChecker reads the layout of the base image and prepares the slot
// comparisons (reading every slot image once).
func NewChecker(cfg Config) (*Checker, error) {
	c := &Checker{cfg: cfg, ss: cfg.Log.SectorSize, base: &overlay{}, data: map[[32]byte]*dataOnce{}, resumes: map[string]*resumeOnce{},
		trackers: map[bootloader.Slot][]*tracker{}}
	if c.ss != parttable.SectorSize {
		return nil, fmt.Errorf("log sector size %d: the disks are %d-byte sector disks", c.ss, parttable.SectorSize)
	}
	if cfg.Workers <= 0 {
		c.cfg.Workers = 1
	}
	var err error
	if c.codec, err = cfg.Bootstate.Codec(); err != nil {
		return nil, err
	}
	if c.table, err = parttable.Read(cfg.Base, cfg.Size); err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	c.parts = map[int]parttable.Partition{}
	for _, p := range c.table.Partitions {
		c.parts[p.Number] = p
	}
	for _, n := range []int{partBoot, partA, partB, partData} {
		if _, ok := c.parts[n]; !ok {
			return nil, fmt.Errorf("base image has no partition %d", n)
		}
	}
	for _, e := range cfg.Log.Entries {
		if e.IsWrite() && int64(e.Sector+e.Sectors)*int64(c.ss) > cfg.Size {
			return nil, fmt.Errorf("log entry %s writes past the end of the %d-byte disk", e, cfg.Size)
		}
	}
	for _, img := range cfg.Images {
		p := c.parts[partA]
		if img.Slot == bootloader.SlotB {
			p = c.parts[partB]
		}
		if img.Size > p.Size {
			return nil, fmt.Errorf("slot image %s (%d bytes) does not fit slot %s (%d bytes)", img.Path, img.Size, img.Slot, p.Size)
		}
	}
	for _, m := range cfg.Markers {
		if m.Synced > 0 {
			c.syncedAt = append(c.syncedAt, m)
		}
		if m.Phase != "" {
			c.phases = append(c.phases, m)
		}
	}
	sort.SliceStable(c.syncedAt, func(i, j int) bool { return c.syncedAt[i].Offset < c.syncedAt[j].Offset })
	sort.SliceStable(c.phases, func(i, j int) bool { return c.phases[i].Offset < c.phases[j].Offset })
	return c, nil
}

// OutsideData reports a write that touches anything but the data
// partition (as the image had it, grown to the end of the disk, without
// the backup GPT in the last 33 sectors): the Focus of EnumOptions.
func (c *Checker) OutsideData(e dmlog.Entry) bool {
	from := uint64(c.parts[partData].Start) / uint64(c.ss)
	to := uint64(c.cfg.Size)/uint64(c.ss) - 33
	return e.Sector < from || e.Sector+e.Sectors > to
}

// Bootstate is the layout of the boot-state copies.
func (c *Checker) Bootstate() bootloader.Bootstate { return c.cfg.Bootstate }

// Close releases the slot images.
func (c *Checker) Close() {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	for _, ts := range c.trackers {
		for _, t := range ts {
			t.f.Close()
		}
	}
}

// slotTrackers returns the trackers of slot s, making them on first use.
func (c *Checker) slotTrackers(s bootloader.Slot) ([]*tracker, error) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if ts, ok := c.trackers[s]; ok {
		return ts, nil
	}
	p := c.parts[partA]
	if s == bootloader.SlotB {
		p = c.parts[partB]
	}
	base := &View{log: c.cfg.Log, base: c.cfg.Base, size: c.cfg.Size, layers: []*overlay{c.base}}
	var ts []*tracker
	for _, img := range c.cfg.Images {
		if img.Slot != s {
			continue
		}
		t, err := newTracker(img, base, p.Start, c.ss)
		if err != nil {
			for _, t := range ts {
				t.f.Close()
			}
			return nil, err
		}
		ts = append(ts, t)
	}
	c.trackers[s] = ts
	return ts, nil
}

// Phase returns the phase of the run a crash state belongs to: the last
// phase marker whose line had arrived when the cut's entry was logged.
func (c *Checker) Phase(s CrashState) string {
	var end int64
	if s.Cut >= 0 {
		end = c.cfg.Log.Entries[s.Cut].End
	}
	i := sort.Search(len(c.phases), func(i int) bool { return c.phases[i].Offset > end })
	if i == 0 {
		return "flash"
	}
	return c.phases[i-1].Phase
}

// Synced returns the workload record a crash state must hold: the last one
// reported synced while the log still ended within the state's durable
// entries.
func (c *Checker) Synced(s CrashState) uint64 {
	var end int64
	if s.Durable > 0 {
		end = c.cfg.Log.Entries[s.Durable-1].End
	}
	i := sort.Search(len(c.syncedAt), func(i int) bool { return c.syncedAt[i].Offset > end })
	var n uint64
	for _, m := range c.syncedAt[:i] {
		n = max(n, m.Synced)
	}
	return n
}

// advance applies entries [c.durable, to) to the running base.
func (c *Checker) advance(to int) error {
	dataStart := uint64(c.parts[partData].Start) / uint64(c.ss)
	for ; c.durable < to; c.durable++ {
		e := c.cfg.Log.Entries[c.durable]
		if !e.IsWrite() {
			continue
		}
		c.base.apply(e, e.Sectors)
		for _, ts := range c.trackers {
			for _, t := range ts {
				if err := t.apply(c.cfg.Log, e, e.Sectors); err != nil {
					return err
				}
			}
		}
		if e.Sector+e.Sectors > dataStart {
			c.dataHash = chain(c.dataHash, e.Index, e.Sectors)
		}
	}
	return nil
}

func chain(h [32]byte, idx int, n uint64) [32]byte {
	var b [48]byte
	copy(b[:], h[:])
	binary.LittleEndian.PutUint64(b[32:], uint64(idx))
	binary.LittleEndian.PutUint64(b[40:], n)
	return sha256.Sum256(b[:])
}

// Report sums up a run of checks.
type Report struct {
	Checked int `json:"checked"`
	Failed  int `json:"failed"`
	// Repaired counts the states whose data partition mounts only after
	// the initramfs drops a torn journal commit block.
	Repaired int              `json:"repaired"`
	ByKind   map[Kind]int     `json:"by_kind"`
	ByPhase  map[string]int   `json:"by_phase"`
	Failures []*Result        `json:"failures,omitempty"`
	Outcomes map[string]int   `json:"supervisor_outcomes"`
	Boots    map[string]int   `json:"boots"`
	Results  []*Result        `json:"-"`
	Stats    map[string]int64 `json:"stats"`
}

// Check checks states, which must be in log order (as Enumerate and
// Sample return them). progress, if set, is called after each state.
func (c *Checker) Check(ctx context.Context, states []CrashState, progress func(*Result)) (*Report, error) {
	rep := &Report{ByKind: map[Kind]int{}, ByPhase: map[string]int{}, Outcomes: map[string]int{}, Boots: map[string]int{}}
	for i := 0; i < len(states); {
		// A group shares its durable base; its states run in parallel.
		j := i
		for j < len(states) && states[j].Durable == states[i].Durable {
			j++
		}
		if states[i].Durable < c.durable {
			return nil, fmt.Errorf("crash state %s is out of log order", states[i].Name())
		}
		if err := c.advance(states[i].Durable); err != nil {
			return nil, err
		}
		group := make([]*Result, j-i)
		errs := make([]error, j-i)
		sem := make(chan struct{}, c.cfg.Workers)
		var wg sync.WaitGroup
		for k := i; k < j; k++ {
			sem <- struct{}{}
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				defer func() { <-sem }()
				group[k-i], errs[k-i] = c.checkOne(ctx, states[k])
			}(k)
		}
		wg.Wait()
		for k, r := range group {
			if errs[k] != nil {
				return nil, fmt.Errorf("crash state %s: %w", states[i+k].Name(), errs[k])
			}
			rep.add(r)
			if progress != nil {
				progress(r)
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		i = j
	}
	rep.Stats = c.tm.ms()
	rep.Stats["data_checks"], rep.Stats["resume_runs"] = int64(c.DataChecks), int64(c.Resumes)
	return rep, nil
}

func (rep *Report) add(r *Result) {
	rep.Checked++
	if r.Repaired != 0 {
		rep.Repaired++
	}
	rep.ByKind[r.State.Kind]++
	rep.ByPhase[r.Phase]++
	rep.Boots[fmt.Sprintf("%s trial=%v image=%s", r.Boot, r.Trial, r.Image)]++
	rep.Outcomes[fmt.Sprintf("%s -> %s", r.UpdateBefore, r.UpdateAfter)]++
	rep.Results = append(rep.Results, r)
	if r.Failed() {
		rep.Failed++
		rep.Failures = append(rep.Failures, r)
	}
}

// View returns the disk of a crash state (for booting it, or for tools).
// It is valid until the next Check.
func (c *Checker) View(s CrashState) (*View, error) {
	if s.Durable != c.durable {
		if s.Durable < c.durable {
			return nil, fmt.Errorf("crash state %s is behind the checker", s.Name())
		}
		if err := c.advance(s.Durable); err != nil {
			return nil, err
		}
	}
	v, _ := c.view(s)
	return v, nil
}

func (c *Checker) view(s CrashState) (*View, *overlay) {
	top := &overlay{}
	for _, i := range s.Extra {
		e := c.cfg.Log.Entries[i]
		top.apply(e, e.Sectors)
	}
	if s.Torn >= 0 {
		top.apply(c.cfg.Log.Entries[s.Torn], s.TornSectors)
	}
	return &View{log: c.cfg.Log, base: c.cfg.Base, size: c.cfg.Size, layers: []*overlay{c.base, top}}, top
}

// DumpData writes the data partition of a crash state, as the cut left it
// (before the journal replay of the next mount), to path. Like Fixture, it
// must be called while the Checker stands at the state's base.
func (c *Checker) DumpData(s CrashState, path string) error {
	if s.Durable != c.durable {
		return fmt.Errorf("dump %s: the checker is not at its base", s.Name())
	}
	v, _ := c.view(s)
	parts, err := readTable(v)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	d := parts[partData]
	err = f.Truncate(d.Size)
	if err == nil {
		err = v.CopyRange(f, 0, d.Start, d.Size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkOne runs every check on one state.
func (c *Checker) checkOne(ctx context.Context, s CrashState) (*Result, error) {
	r := &Result{State: s, Name: s.Name(), Phase: c.Phase(s), Synced: c.Synced(s)}
	v, top := c.view(s)

	// The partition table: firmware and bootloader find the slots by it.
	parts, err := readTable(v)
	if err != nil {
		r.fail("partition table", "%v", err)
		return r, nil
	}
	for _, n := range []int{partBoot, partA, partB} {
		if parts[n] != c.parts[n] {
			r.fail("partition table", "partition %d is %+v, the image had %+v", n, parts[n], c.parts[n])
		}
	}
	data := parts[partData]
	if data.Start != c.parts[partData].Start || data.Size < c.parts[partData].Size {
		r.fail("partition table", "data partition is %+v, the image had %+v", data, c.parts[partData])
	}
	if r.Failed() {
		return r, nil
	}

	// The boot state, as every bootloader reads it.
	store := bootloader.NewStore(readOnlyDevice{v}, c.codec, c.cfg.Bootstate.OffA, c.cfg.Bootstate.OffB)
	st, info, err := store.Read()
	if err != nil {
		return nil, err
	}
	r.BootState = st
	if info.Default() {
		r.fail("boot state", "neither copy is valid (a: %s; b: %s): the bootloader falls back to the default", info.Copies[0].Error, info.Copies[1].Error)
	}
	boot, trial, next := bootloader.Decide(st)
	r.Boot, r.Trial = boot, trial
	linux := st
	if next != nil {
		linux = *next
	}
	img, err := c.complete(top, boot)
	if err != nil {
		return nil, err
	}
	if img == nil {
		r.fail("slot", "the bootloader boots slot %s (%s), which holds no complete slot image: %s", boot, st, c.describeSlot(top, boot))
	} else {
		r.Image = img.Version
	}

	// The data partition, as the next mount finds it.
	dr, err := c.dataResult(ctx, v, top, data)
	if err != nil {
		return nil, err
	}
	r.Repaired = dr.Repaired
	if dr.Mount != "" {
		r.fail("data mount", "Linux 6.1 refuses to mount the data partition (%s): the initramfs fails to mount /data and reboots, forever", dr.Mount)
	}
	if dr.Fsck != "" {
		r.fail("data fsck", "%s", dr.Fsck)
	}
	for _, bad := range dr.Workload.Check(r.Synced) {
		r.fail("workload", "%s", bad)
	}

	// The supervisor's state file and what its Resume makes of it.
	if _, err := ParseUpdateState(dr.StateJSON); err != nil {
		r.fail("supervisor state", "%v", err)
		return r, nil
	}
	rr, err := c.resume(ctx, v, top, dr.StateJSON, linux, boot, trial, img)
	if err != nil {
		return nil, err
	}
	r.UpdateBefore, r.UpdateAfter = rr.Before, rr.After
	judgeResume(r, rr, linux, func(s bootloader.Slot) bool {
		im, err := c.complete(top, s)
		return err == nil && im != nil
	})
	return r, nil
}

// readTable returns the partitions of a view by number.
func readTable(v *View) (map[int]parttable.Partition, error) {
	t, err := parttable.Read(v, v.Size())
	if err != nil {
		return nil, err
	}
	parts := map[int]parttable.Partition{}
	for _, p := range t.Partitions {
		parts[p.Number] = p
	}
	return parts, nil
}

// complete returns the slot image slot s holds in full, or nil.
func (c *Checker) complete(top *overlay, s bootloader.Slot) (*SlotImage, error) {
	ts, err := c.slotTrackers(s)
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		n, err := t.differing(c.cfg.Log, top)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return &t.img, nil
		}
	}
	return nil, nil
}

func (c *Checker) describeSlot(top *overlay, s bootloader.Slot) string {
	var parts []string
	ts, err := c.slotTrackers(s)
	if err != nil {
		return err.Error()
	}
	for _, t := range ts {
		n, err := t.differing(c.cfg.Log, top)
		if err != nil {
			return err.Error()
		}
		parts = append(parts, fmt.Sprintf("%d of %d sectors differ from %s (%s)", n, t.n, t.img.Version, t.img.Path))
	}
	if len(parts) == 0 {
		return "no slot image is expected there"
	}
	return strings.Join(parts, "; ")
}

// dataResult checks the data partition, once per distinct content.
func (c *Checker) dataResult(ctx context.Context, v *View, top *overlay, data parttable.Partition) (*DataResult, error) {
	key := c.dataHash
	dataStart := uint64(c.parts[partData].Start) / uint64(c.ss)
	var ents []struct {
		idx int32
		n   uint64
	}
	// The top layer's writes in log order, with what of them applies.
	seen := map[int32]bool{}
	for _, x := range top.ext {
		if x.end > dataStart && !seen[x.entry] {
			seen[x.entry] = true
			ents = append(ents, struct {
				idx int32
				n   uint64
			}{x.entry, 0})
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].idx < ents[j].idx })
	for _, e := range ents {
		// Distinguish torn from whole by the extents that survived.
		var n uint64
		top.within(dataStart, ^uint64(0), func(x extent) error {
			if x.entry == e.idx {
				n += x.end - x.start
			}
			return nil
		})
		key = chain(key, int(e.idx), n)
	}
	key = chain(key, -1, uint64(data.Size))
	c.mu.Lock()
	d := c.data[key]
	if d == nil {
		d = &dataOnce{}
		c.data[key] = d
	}
	c.mu.Unlock()
	d.once.Do(func() {
		c.mu.Lock()
		c.DataChecks++
		c.mu.Unlock()
		d.res, d.err = checkData(ctx, v, data.Start, data.Size, c.cfg.ScratchDir, &c.tm)
	})
	return d.res, d.err
}

// resume runs the supervisor's Resume, once per distinct input.
func (c *Checker) resume(ctx context.Context, v *View, top *overlay, state []byte, bs bootloader.State, boot bootloader.Slot, trial bool, img *SlotImage) (ResumeResult, error) {
	// Resume reads a slot only to verify it; what it finds there is
	// decided by which image, if any, the slot holds in full.
	var holds []string
	for _, s := range []bootloader.Slot{bootloader.SlotA, bootloader.SlotB} {
		im, err := c.complete(top, s)
		if err != nil {
			return ResumeResult{}, err
		}
		name := "partial"
		if im != nil {
			name = im.SHA256
		}
		holds = append(holds, name)
	}
	sum := sha256.Sum256(state)
	key := fmt.Sprintf("%x|%v|%s|%s|%v|%s", sum, state == nil, bs, boot, trial, strings.Join(holds, ","))
	c.mu.Lock()
	o := c.resumes[key]
	if o == nil {
		o = &resumeOnce{}
		c.resumes[key] = o
	}
	c.mu.Unlock()
	o.once.Do(func() {
		c.mu.Lock()
		c.Resumes++
		c.mu.Unlock()
		cur := c.cfg.Release
		if img != nil {
			cur.Version = img.Version
		}
		defer c.tm.add("supervisor resume", time.Now())
		o.res, o.err = simulateResume(ctx, resumeInput{
			state: state, boot: bs, slot: boot, trial: trial, board: c.cfg.Board, current: cur,
			openSlot: func(s bootloader.Slot) (slot.Device, error) {
				p := c.parts[partA]
				if s == bootloader.SlotB {
					p = c.parts[partB]
				}
				return readOnlySlot{r: io.NewSectionReader(v, p.Start, p.Size), size: p.Size}, nil
			},
		}, c.cfg.ScratchDir)
	})
	return o.res, o.err
}

// judgeResume requires that the supervisor, on its own, finishes or
// cleans up the update and that whatever boots or runs next is complete.
// bs is the boot state Linux found; complete tells whether a slot holds a
// whole slot image.
func judgeResume(r *Result, rr ResumeResult, bs bootloader.State, complete func(bootloader.Slot) bool) {
	if rr.Err != nil {
		r.fail("supervisor resume", "Resume failed in phase %s: %v", rr.Before, rr.Err)
	}
	if rr.Stuck {
		r.fail("supervisor resume", "Resume's background work in phase %s did not end", rr.Before)
	}
	for _, s := range rr.Opened {
		if s == bs.Committed || s == r.Boot {
			r.fail("supervisor resume", "Resume opened slot %s, the committed or running slot, in phase %s (invariant 1)", s, rr.Before)
		}
	}
	if len(rr.Wrote) > 0 {
		r.fail("supervisor resume", "Resume wrote slots %v offline in phase %s", rr.Wrote, rr.Before)
	}
	outcome := "no outcome"
	if rr.Outcome != nil {
		outcome = fmt.Sprintf("outcome %s: %q", rr.Outcome.Result, rr.Outcome.Reason)
	}
	switch {
	case !rr.After.Busy():
	case rr.After == updater.PhaseReady && rr.Rebooted:
	default:
		r.fail("supervisor resume", "the update stays in phase %s (from %s) without a reboot: nothing finishes it", rr.After, rr.Before)
	}
	if rr.Rebooted {
		// The boot after the supervisor's reboot.
		if next, _, _ := bootloader.Decide(rr.BootState); !complete(next) {
			r.fail("supervisor resume", "after Resume (phase %s -> %s) the device reboots into slot %s (%s), which holds no complete image", rr.Before, rr.After, next, rr.BootState)
		}
	} else if r.Boot != rr.BootState.Committed && !(r.Trial && rr.BootState.Trial == r.Boot) {
		// Nothing would ever bring the device back to its committed
		// slot, short of someone rebooting it.
		r.fail("supervisor resume", "Resume (phase %s -> %s, %s) leaves the device running slot %s, which is neither committed nor on trial (boot state %s), and does not reboot",
			rr.Before, rr.After, outcome, r.Boot, rr.BootState)
	}
	if rr.BootState.Committed != bs.Committed && !complete(rr.BootState.Committed) {
		r.fail("supervisor resume", "Resume committed slot %s, which holds no complete image", rr.BootState.Committed)
	}
}

// readOnlyDevice lets bootloader.Store read a view.
type readOnlyDevice struct{ io.ReaderAt }

func (readOnlyDevice) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("offline check: read only")
}
func (readOnlyDevice) Sync() error { return nil }

// FindBootstate returns the boot-state layout the bootloader passes to
// Linux (bulkhead.bootstate=...), found in the boot partition's
// bootloader configuration (grub.cfg, boot.scr) of a disk image.
func FindBootstate(r io.ReaderAt, size int64) (bootloader.Bootstate, error) {
	t, err := parttable.Read(r, size)
	if err != nil {
		return bootloader.Bootstate{}, err
	}
	for _, p := range t.Partitions {
		if p.Number != partBoot {
			continue
		}
		const key = bootloader.ArgBootstate + "="
		buf := make([]byte, 1<<20+256)
		for off := int64(0); off < p.Size; off += 1 << 20 {
			n, err := r.ReadAt(buf[:min(int64(len(buf)), p.Size-off)], p.Start+off)
			if err != nil && err != io.EOF {
				return bootloader.Bootstate{}, err
			}
			b := buf[:n]
			for i := 0; ; {
				k := bytes.Index(b[i:], []byte(key))
				if k < 0 {
					break
				}
				i += k + len(key)
				end := i
				for end < len(b) && (b[end] == ':' || b[end] >= '0' && b[end] <= '9' || b[end] >= 'a' && b[end] <= 'z') {
					end++
				}
				if bs, err := bootloader.ParseBootstateArg(string(b[i:end])); err == nil {
					return bs, nil
				}
			}
		}
	}
	return bootloader.Bootstate{}, fmt.Errorf("no %s= in the boot partition", bootloader.ArgBootstate)
}

// SHA256File returns the hex SHA-256 of the first n bytes of a file.
func SHA256File(path string, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
