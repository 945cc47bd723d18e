package tests

// Power-cut torture (issue 5, DESIGN.md invariant 5): record what a device
// writes to its disk during flash -> first boot -> update -> trial ->
// commit -> reboot, replay every crash state of that log offline
// (tests/powercut), boot a sample of them, and cut the power of running
// devices at random instants of scripted updates.
//
// `make test` runs a sample; BULKHEAD_TORTURE=full (`make torture`) runs the
// full enumeration and 100+ cuts, and BULKHEAD_TORTURE_REPORT names the
// report file. BULKHEAD_TORTURE_SEED replays a run's choices;
// BULKHEAD_TORTURE_KEEP=<dir> keeps the recordings for
// tests/powercut/cmd/bh-replay. docs/safety.md ("Power-cut torture") has
// the method and the figures.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
	"github.com/bulkhead-os/bulkhead/tests/powercut"
	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// pcBoards are the boards whose updates the tests record: one GRUB board,
// one U-Boot board. (The Raspberry Pi machines of QEMU have no network
// for the device API.)
var pcBoards = []string{"x86_64", "qemu-aarch64"}

// pcMode is how much a run does.
type pcMode struct {
	Full bool
	// States is how many crash states of each recording are checked
	// offline (0: every enumerated state).
	States int
	Enum   powercut.EnumOptions
	// Boots is how many crash states of each recording are booted, on
	// top of the first and last state of each phase in full mode.
	Boots int
	// Kills is how many power cuts the kill loop makes, over all boards.
	Kills int
	Seed  uint64
}

func pcModeFromEnv(t *testing.T) pcMode {
	m := pcMode{States: 150, Enum: powercut.EnumOptions{Exhaustive: 4, Sampled: 4, TearAll: 8, TearSampled: 4}, Boots: 1, Kills: 5}
	if os.Getenv("BULKHEAD_TORTURE") == "full" {
		m = pcMode{Full: true, Enum: powercut.FullEnum, Boots: 6, Kills: 110}
	}
	m.Seed = pcSeed
	if s := os.Getenv("BULKHEAD_TORTURE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BULKHEAD_TORTURE_SEED=%q: %v", s, err)
		}
		m.Seed = v
	}
	m.Enum.Seed = m.Seed
	return m
}

// pcReadyOrFatalRE matches PID 1's ready line or the initramfs's last
// line before it reboots on a fatal error.
var pcReadyOrFatalRE = regexp.MustCompile(`(?m)^bulkhead: ready version=(\S+) slot=([ab]) board=(\S+) trial=([01])\r?$|bulkhead: initramfs: rebooting in`)

// pcSeed is the seed of this test binary's run unless
// BULKHEAD_TORTURE_SEED gives one.
var pcSeed = uint64(time.Now().UnixNano())

// pcReport collects the figures of a run for BULKHEAD_TORTURE_REPORT.
type pcReport struct {
	mu       sync.Mutex
	Mode     string                  `json:"mode"`
	Seed     uint64                  `json:"seed"`
	Started  time.Time               `json:"started"`
	Boards   map[string]*pcBoardFigs `json:"boards"`
	Failures []string                `json:"failures"`
}

type pcBoardFigs struct {
	LogEntries     int              `json:"log_entries"`
	LogWrites      map[string]int   `json:"log_writes"`
	LogBytes       map[string]int64 `json:"log_bytes"`
	Flushes        int              `json:"flushes"`
	BootStateLog   []string         `json:"boot_state_writes"`
	Enumerated     int              `json:"crash_states_enumerated"`
	Checked        int              `json:"crash_states_checked"`
	ByKind         map[string]int   `json:"crash_states_by_kind"`
	ByPhase        map[string]int   `json:"crash_states_by_phase"`
	Outcomes       map[string]int   `json:"supervisor_resume"`
	DataChecks     int              `json:"data_partition_checks"`
	FailedStates   int              `json:"crash_states_failed"`
	Repaired       int              `json:"crash_states_journal_repaired"`
	FailedByCheck  map[string]int   `json:"crash_states_failed_by_check"`
	Booted         int              `json:"states_booted"`
	Kills          int              `json:"kills"`
	KillPhases     map[string]int   `json:"kills_by_phase"`
	KillOutcomes   map[string]int   `json:"kill_loop_update_outcomes"`
	Failures       int              `json:"failures"`
	RecordDuration string           `json:"record_duration"`
	ReplayDuration string           `json:"replay_duration"`
	BootDuration   string           `json:"boot_duration"`
	KillDuration   string           `json:"kill_duration"`
}

var pcRun = &pcReport{Boards: map[string]*pcBoardFigs{}}

func (r *pcReport) board(name string) *pcBoardFigs {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.Boards[name]
	if b == nil {
		b = &pcBoardFigs{KillPhases: map[string]int{}, KillOutcomes: map[string]int{}}
		r.Boards[name] = b
	}
	return b
}

func (r *pcReport) fail(t *testing.T, board, format string, args ...any) {
	t.Helper()
	msg := board + ": " + fmt.Sprintf(format, args...)
	b := r.board(board)
	r.mu.Lock()
	r.Failures = append(r.Failures, msg)
	b.Failures++
	r.mu.Unlock()
	t.Error(msg)
}

// TestPowerCut records an update cycle on each board with every disk write
// logged and checks its crash states offline; meanwhile it cuts the power
// of the same device at random instants of further updates (the kill
// loop); then it boots a sample of the crash states.
func TestPowerCut(t *testing.T) {
	mode := pcModeFromEnv(t)
	t.Logf("power-cut torture: full=%v seed=%d (BULKHEAD_TORTURE_SEED=%d replays it)", mode.Full, mode.Seed, mode.Seed)
	pcRun.Seed, pcRun.Started = mode.Seed, time.Now()
	pcRun.Mode = "sample"
	if mode.Full {
		pcRun.Mode = "full"
	}
	t.Cleanup(func() { pcWriteReport(t) })
	for i, name := range pcBoards {
		kills := mode.Kills / len(pcBoards)
		if i < mode.Kills%len(pcBoards) {
			kills++
		}
		t.Run(name, func(t *testing.T) {
			img := pcImageFor(t, name)
			t.Parallel()
			pcRecordAndCheck(t, img, mode, kills)
		})
	}
}

// pcRecord runs flash -> first boot -> update to pcVersion2 -> trial ->
// commit -> reboot with every write logged, and cuts the power. The device
// stays for the kill loop.
func pcRecord(t *testing.T, img *pcImage, srv *pcServer) (*powercut.Recording, *pcDevice) {
	dir := t.TempDir()
	if keep := os.Getenv("BULKHEAD_TORTURE_KEEP"); keep != "" {
		// Kept for cmd/bh-replay, with hard links to the slot images.
		dir = filepath.Join(keep, img.board.Name)
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rec := &powercut.Recording{Board: img.board.Name, Release: img.Manifests[img.Factory],
		Base: filepath.Join(dir, "base.img"), Log: filepath.Join(dir, "writes.log"), Images: img.Images()}
	d := pcNewDevice(t, img, pcOptions{Disk: img.Disk, Log: rec.Log, Base: rec.Base})
	start := time.Now()
	d.Start()
	slot, trial, version, off := d.WaitReady(0, 8*time.Minute)
	if slot != "a" || trial || version != img.Factory {
		d.fatal("first boot: ready on slot %s trial=%v version %s, want slot a, %s", slot, trial, version, img.Factory)
	}
	d.WaitSynced(d.con.Synced()+20, 3*time.Minute)
	id := d.StartUpdate(srv.URL(pcVersion2 + ".bundle"))
	o := d.WaitOutcome(id, 20*time.Minute)
	if o.Result != "committed" {
		d.fatal("update %s: %+v", id, o)
	}
	st := d.Status(time.Minute)
	if st.Release.Version != pcVersion2 || st.Boot.Slot != "b" {
		d.fatal("after the update: version %s slot %s, want %s on b", st.Release.Version, st.Boot.Slot, pcVersion2)
	}
	// A normal reboot of the committed slot: the bootloader must not
	// write (invariant 3).
	d.WaitSynced(d.con.Synced()+20, 3*time.Minute)
	off = d.m.Offset()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := d.api.Reboot(ctx)
	cancel()
	if err != nil {
		d.fatal("reboot: %v", err)
	}
	slot, trial, version, _ = d.WaitReady(off, 8*time.Minute)
	if slot != "b" || trial || version != pcVersion2 {
		d.fatal("reboot after the commit: ready on slot %s trial=%v version %s, want b, %s", slot, trial, version, pcVersion2)
	}
	d.WaitSynced(d.con.Synced()+20, 3*time.Minute)
	d.Cut()
	rec.Markers = d.con.Markers()
	if keep := os.Getenv("BULKHEAD_TORTURE_KEEP"); keep != "" {
		kept := *rec
		kept.Base, kept.Log, kept.Images = "base.img", "writes.log", nil
		for _, im := range rec.Images {
			name := filepath.Base(im.Path)
			if err := os.Link(im.Path, filepath.Join(dir, name)); err != nil && !os.IsExist(err) {
				if err := pcCopy(im.Path, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			im.Path = name
			kept.Images = append(kept.Images, im)
		}
		if err := kept.Save(dir); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: recording kept in %s (go run ./tests/powercut/cmd/bh-replay -recording %s)", img.board.Name, dir, dir)
	}
	pcRun.board(img.board.Name).RecordDuration = time.Since(start).Round(time.Second).String()
	t.Logf("%s: recorded flash -> boot -> update -> trial -> commit -> reboot in %s", img.board.Name, time.Since(start).Round(time.Second))
	return rec, d
}

func pcRecordAndCheck(t *testing.T, img *pcImage, mode pcMode, kills int) {
	name := img.board.Name
	srv := pcServe(t, map[string]string{
		pcVersion2 + ".bundle": img.Bundles[pcVersion2],
		pcVersion3 + ".bundle": img.Bundles[pcVersion3],
	})
	rec, d := pcRecord(t, img, srv)

	// The replay runs on the host while the kill loop runs the device.
	// The boots read the log after the replay: it stays open until then.
	scratch, rm, err := powercut.MemoryScratch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rm)
	c, log, done, err := rec.Open(scratch, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	defer c.Close()
	var (
		snaps []pcBootState
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		snaps = pcReplay(t, img, c, log, mode)
	}()
	pcKillLoop(t, img, d, srv, kills, mode.Seed, mode.Full)
	d.Cut()
	wg.Wait()

	figs := pcRun.board(name)
	start := time.Now()
	for _, b := range snaps {
		pcBootCrashState(t, img, rec, b)
		figs.Booted++
	}
	figs.BootDuration = time.Since(start).Round(time.Second).String()
}

// pcReplay checks the crash states of a recording and returns the ones to
// boot. It reports failures with t.Error (it runs in a goroutine).
func pcReplay(t *testing.T, img *pcImage, c *powercut.Checker, log *dmlog.Log, mode pcMode) []pcBootState {
	name := img.board.Name
	figs := pcRun.board(name)
	start := time.Now()
	audit, err := c.Audit()
	if err != nil {
		t.Error(err)
		return nil
	}
	figs.LogEntries, figs.LogWrites, figs.LogBytes, figs.Flushes, figs.BootStateLog = len(log.Entries), audit.Writes, audit.Bytes, audit.Flushes, audit.BootStateWrites
	t.Logf("%s: %d log entries (%d flushes), writes by region %v", name, len(log.Entries), audit.Flushes, audit.Writes)
	for _, w := range audit.BootStateWrites {
		t.Logf("%s: boot state %s", name, w)
	}
	for _, f := range audit.Findings {
		pcRun.fail(t, name, "write log: %s", f.Detail)
	}

	enum := mode.Enum
	if mode.Full {
		enum.Focus = c.OutsideData
	}
	all := powercut.Enumerate(log, enum)
	figs.Enumerated = len(all)
	states := all
	if !mode.Full {
		// Every state around a boot-state write is kept: invariant 2.
		bsWrite := pcBootStateEntries(log, c.Bootstate())
		states = powercut.Sample(all, mode.States, mode.Seed, func(s powercut.CrashState) bool {
			return bsWrite[s.Cut] && s.Kind != powercut.KindSubset
		}, c.Phase)
	}
	boot := pcPickBoots(states, c, mode)
	var snaps []pcBootState
	done := 0
	fixtures := ""
	saved := map[string]bool{}
	repairBooted := false
	rep, err := c.Check(context.Background(), states, func(r *powercut.Result) {
		done++
		if mode.Full && done%5000 == 0 {
			t.Logf("%s: %d/%d crash states checked (%s)", name, done, len(states), time.Since(start).Round(time.Second))
		}
		if r.Failed() {
			// One regression fixture per kind of failure and phase.
			key := r.Phase + "|" + r.Findings[0].Check
			if !saved[key] {
				saved[key] = true
				if fixtures == "" {
					fixtures = pcFixtureDir(t, name)
				}
				f, err := c.Fixture(context.Background(), r, fixtures)
				if err == nil {
					var path string
					path, err = f.Save(fixtures)
					t.Logf("%s: crash state %s kept as %s", name, r.Name, path)
				}
				if err != nil {
					t.Errorf("fixture of %s: %v", r.Name, err)
				}
			}
		}
		// The first state whose data partition needs the initramfs's
		// journal repair is booted too: the real kernel must mount it.
		if !r.Failed() && r.Repaired != 0 && !repairBooted {
			repairBooted, boot[r.Name] = true, true
		}
		if boot[r.Name] {
			v, err := c.View(r.State)
			if err != nil {
				t.Error(err)
				return
			}
			snaps = append(snaps, pcBootState{res: r, snap: v.Snapshot()})
		}
	})
	if err != nil {
		t.Error(err)
		return nil
	}
	figs.Checked, figs.DataChecks, figs.FailedStates, figs.Repaired = rep.Checked, int(rep.Stats["data_checks"]), rep.Failed, rep.Repaired
	figs.FailedByCheck = map[string]int{}
	for _, r := range rep.Failures {
		seen := map[string]bool{}
		for _, f := range r.Findings {
			if !seen[f.Check] {
				seen[f.Check] = true
				figs.FailedByCheck[f.Check]++
			}
		}
	}
	figs.ByKind, figs.ByPhase, figs.Outcomes = map[string]int{}, rep.ByPhase, rep.Outcomes
	for k, n := range rep.ByKind {
		figs.ByKind[string(k)] = n
	}
	figs.ReplayDuration = time.Since(start).Round(time.Second).String()
	t.Logf("%s: %d of %d enumerated crash states checked in %s (%d data partition checks, %d supervisor resumes); by phase %v; supervisor %v",
		name, rep.Checked, len(all), time.Since(start).Round(time.Second), rep.Stats["data_checks"], rep.Stats["resume_runs"], rep.ByPhase, rep.Outcomes)
	for i, r := range rep.Failures {
		if i == 20 {
			pcRun.fail(t, name, "... and %d more failing crash states", len(rep.Failures)-20)
			break
		}
		pcRun.fail(t, name, "crash state %s (phase %q, boot %s trial=%v, %s): %s", r.Name, r.Phase, r.Boot, r.Trial, r.BootState, pcFindings(r))
	}
	return snaps
}

// pcFixtureDir is where failing crash states are kept: next to the report,
// or in a directory that outlives the test.
func pcFixtureDir(t *testing.T, board string) string {
	dir := os.Getenv("BULKHEAD_TORTURE_REPORT")
	if dir != "" {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(srcDir(t), dir)
		}
		dir = filepath.Join(filepath.Dir(dir), "fixtures", board)
		if err := os.MkdirAll(dir, 0o755); err == nil {
			return dir
		}
	}
	dir, err := os.MkdirTemp("", "bulkhead-powercut-fixtures-"+board+"-")
	if err != nil {
		t.Error(err)
	}
	return dir
}

func pcFindings(r *powercut.Result) string {
	var s []string
	for _, f := range r.Findings {
		s = append(s, f.Check+": "+f.Detail)
	}
	return strings.Join(s, "; ")
}

// pcBootStateEntries returns the entries that write a boot-state copy.
func pcBootStateEntries(l *dmlog.Log, bs bootloader.Bootstate) map[int]bool {
	out := map[int]bool{}
	ss := int64(l.SectorSize)
	for _, e := range l.Entries {
		if !e.IsWrite() {
			continue
		}
		from, to := int64(e.Sector)*ss, int64(e.Sector+e.Sectors)*ss
		for _, off := range []int64{bs.OffA, bs.OffB} {
			if from < off+int64(bs.Size) && off < to {
				out[e.Index] = true
			}
		}
	}
	return out
}

// pcPickBoots chooses the crash states to boot: in full mode the first
// and the last of each phase, and mode.Boots random ones.
func pcPickBoots(states []powercut.CrashState, c *powercut.Checker, mode pcMode) map[string]bool {
	out := map[string]bool{}
	if len(states) == 0 {
		return out
	}
	if mode.Full {
		first, last := map[string]string{}, map[string]string{}
		for _, s := range states {
			p := c.Phase(s)
			if _, ok := first[p]; !ok {
				first[p] = s.Name()
			}
			last[p] = s.Name()
		}
		for p := range first {
			out[first[p]], out[last[p]] = true, true
		}
	}
	// In the sample run, a booted state comes from after the slot was
	// verified, so that the supervisor's resume takes a boot or two rather
	// than a new download or read-back of 1 GiB; make torture boots states
	// of every phase.
	var pool []powercut.CrashState
	for _, s := range states {
		p := c.Phase(s)
		if mode.Full || !strings.Contains(p, "download") && !strings.Contains(p, "verifying") && !strings.Contains(p, "ready-to-reboot") {
			pool = append(pool, s)
		}
	}
	rng := rand.New(rand.NewPCG(mode.Seed, 0x626f6f74))
	for i := 0; i < mode.Boots && len(pool) > 0; i++ {
		out[pool[rng.IntN(len(pool))].Name()] = true
	}
	return out
}

type pcBootState struct {
	res  *powercut.Result
	snap *powercut.Snapshot
}

// pcBootCrashState boots a crash state and requires the ready line on the
// slot the bootloader model chose, and the supervisor to finish or roll
// back the update on its own.
func pcBootCrashState(t *testing.T, img *pcImage, rec *powercut.Recording, b pcBootState) {
	r := b.res
	t.Logf("%s: booting crash state %s (phase %q: boot state %s, boots %s trial=%v, update %s, workload record %d, torn journal commit %d)",
		img.board.Name, r.Name, r.Phase, r.BootState, r.Boot, r.Trial, r.UpdateBefore, r.Synced, r.Repaired)
	// Not t.TempDir: the disk grows to about 1 GiB once the supervisor
	// has rewritten a slot, and make torture boots about 25 states per
	// board; kept to the end of the test they filled the disk (found 6).
	dir, err := os.MkdirTemp("", "bulkhead-crash-state-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	disk := filepath.Join(dir, "crash.img")
	if err := pcCopy(rec.Base, disk); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = b.snap.WriteTo(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	d := pcNewDevice(t, img, pcOptions{Disk: disk, InPlace: true})
	d.Start()
	// The ready line, or the initramfs giving up (it reboots, forever).
	line, _, err := d.m.Wait(d.ctx, pcReadyOrFatalRE, 0, 8*time.Minute)
	if err != nil {
		d.fatal("crash state %s: no ready line: %v", r.Name, err)
	}
	if !readyRE.MatchString(line) {
		pcRun.fail(t, img.board.Name, "crash state %s: the machine does not boot: %q (offline: %s)\n%s", r.Name, line, pcFindings(r), pcTail(d.m.Log(), 40))
		d.Cut()
		return
	}
	m := readyRE.FindStringSubmatch(line)
	slot, trial := m[2], m[4] == "1"
	if slot != string(r.Boot) || trial != r.Trial {
		pcRun.fail(t, img.board.Name, "crash state %s: booted slot %s trial=%v, the bootloader model said %s trial=%v", r.Name, slot, trial, r.Boot, r.Trial)
	}
	if r.Repaired != 0 && !strings.Contains(d.m.Log(), "dropped the torn commit") {
		pcRun.fail(t, img.board.Name, "crash state %s: the offline check dropped the torn commit of transaction %d, the initramfs did not say it did:\n%s", r.Name, r.Repaired, pcTail(d.m.Log(), 40))
	}
	st, ok := d.Settle(20 * time.Minute)
	if !ok {
		pcRun.fail(t, img.board.Name, "crash state %s: the supervisor settled the update (%s, last outcome %s) but the device keeps running slot %s while the boot state is %s: nothing brings it back to its committed slot",
			r.Name, st.Update.Phase, pcLastOutcome(st.Update.History), st.Boot.Slot, pcBootStateString(st))
	}
	if rec := d.con.Recovered(); len(rec) > 0 {
		if n := pcRecoveredJournal(rec[0]); n < r.Synced {
			pcRun.fail(t, img.board.Name, "crash state %s: the workload recovered %d records, %d were fsync'd (%s)", r.Name, n, r.Synced, rec[0])
		}
	}
	t.Logf("%s: crash state %s settled: slot %s, version %s, update %s, last outcome %s", img.board.Name, r.Name, st.Boot.Slot, st.Release.Version, st.Update.Phase, pcLastOutcome(st.Update.History))
	d.Cut()
}

func pcBootStateString(st api.Status) string {
	if st.BootState == nil {
		return "unreadable: " + st.BootStateError
	}
	return st.BootState.String()
}

func pcLastOutcome(h []updater.Outcome) string {
	if len(h) == 0 {
		return "none"
	}
	return h[0].Result + " (" + h[0].Reason + ")"
}

// pcRecoveredJournal parses "recovered journal=<n> ...".
func pcRecoveredJournal(line string) uint64 {
	_, rest, ok := strings.Cut(line, "journal=")
	if !ok {
		return 0
	}
	n, _ := strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
	return n
}

// pcWriteReport writes the report of a run to BULKHEAD_TORTURE_REPORT.
func pcWriteReport(t *testing.T) {
	path := os.Getenv("BULKHEAD_TORTURE_REPORT")
	if path == "" {
		return
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(srcDir(t), path)
	}
	pcRun.mu.Lock()
	defer pcRun.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "# Bulkhead power-cut torture report\n\n")
	fmt.Fprintf(&b, "- mode: %s\n- seed: %d (BULKHEAD_TORTURE_SEED=%d replays it)\n- started: %s\n- duration: %s\n- failures: %d\n\n",
		pcRun.Mode, pcRun.Seed, pcRun.Seed, pcRun.Started.UTC().Format(time.RFC3339), time.Since(pcRun.Started).Round(time.Second), len(pcRun.Failures))
	names := make([]string, 0, len(pcRun.Boards))
	for n := range pcRun.Boards {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f := pcRun.Boards[n]
		fmt.Fprintf(&b, "## %s\n\n", n)
		fmt.Fprintf(&b, "| figure | value |\n|---|---|\n")
		fmt.Fprintf(&b, "| recorded run (flash, first boot, update, trial, commit, reboot) | %s |\n", f.RecordDuration)
		fmt.Fprintf(&b, "| log entries / flushes | %d / %d |\n", f.LogEntries, f.Flushes)
		fmt.Fprintf(&b, "| writes by region | %s |\n", pcMap(f.LogWrites))
		fmt.Fprintf(&b, "| crash states enumerated / checked offline / failed | %d / %d / %d |\n", f.Enumerated, f.Checked, f.FailedStates)
		fmt.Fprintf(&b, "| failed states by check | %s |\n", pcMap(f.FailedByCheck))
		fmt.Fprintf(&b, "| by kind | %s |\n", pcMap(f.ByKind))
		fmt.Fprintf(&b, "| by phase | %s |\n", pcMap(f.ByPhase))
		fmt.Fprintf(&b, "| data partition checks (distinct contents) | %d |\n", f.DataChecks)
		fmt.Fprintf(&b, "| states whose torn journal commit the initramfs drops | %d |\n", f.Repaired)
		fmt.Fprintf(&b, "| supervisor resume (before -> after) | %s |\n", pcMap(f.Outcomes))
		fmt.Fprintf(&b, "| replay duration | %s |\n", f.ReplayDuration)
		fmt.Fprintf(&b, "| crash states booted | %d (%s) |\n", f.Booted, f.BootDuration)
		fmt.Fprintf(&b, "| kills | %d (%s), by phase %s |\n", f.Kills, f.KillDuration, pcMap(f.KillPhases))
		fmt.Fprintf(&b, "| outcomes of the cut updates | %s |\n", pcMap(f.KillOutcomes))
		fmt.Fprintf(&b, "| failures | %d |\n\n", f.Failures)
		if len(f.BootStateLog) > 0 {
			fmt.Fprintf(&b, "Boot-state writes in the recorded run:\n\n")
			for _, w := range f.BootStateLog {
				fmt.Fprintf(&b, "- %s\n", w)
			}
			b.WriteString("\n")
		}
	}
	if len(pcRun.Failures) > 0 {
		b.WriteString("## Failures\n\n")
		for _, f := range pcRun.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
	js, err := json.MarshalIndent(pcRun, "", "  ")
	if err != nil {
		t.Errorf("report as JSON: %v", err)
		return
	}
	if err := os.WriteFile(strings.TrimSuffix(path, filepath.Ext(path))+".json", js, 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("report: %s", path)
}

func pcMap[V int | int64](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s []string
	for _, k := range keys {
		s = append(s, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(s, ", ")
}
