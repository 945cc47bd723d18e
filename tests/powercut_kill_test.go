package tests

// The kill loop: power cuts (SIGKILL of QEMU) at random instants of
// scripted updates, each followed by an offline check of the disk as the
// cut left it, a boot, and, once the update's cuts are done, the
// supervisor finishing or rolling back the update on its own.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/tests/powercut"
)

// pcKillPhases are the instants of an update the loop aims at, in order.
var pcKillPhases = []string{"download", "slot write", "verify", "reboot", "trial boot", "health check", "commit"}

// pcKillLoop cuts the power of a running device kills times. The device
// may still log its writes (the recording's machine); the log is then
// restarted into a scratch file at every start.
func pcKillLoop(t *testing.T, img *pcImage, d *pcDevice, srv *pcServer, kills int, seed uint64, full bool) {
	name := img.board.Name
	figs := pcRun.board(name)
	rng := rand.New(rand.NewPCG(seed, uint64(len(name))))
	start := time.Now()
	scratch := t.TempDir()
	restart := func() {
		if d.logPath != "" {
			// Only the recording's log is replayed; later runs log
			// into a file that is emptied at every start.
			d.con.mu.Lock()
			d.con.logPath = ""
			d.con.mu.Unlock()
			if err := d.m.LogWrites(filepath.Join(scratch, "scratch.log")); err != nil {
				t.Fatal(err)
			}
		}
		d.Start()
	}
	if !d.Running() {
		restart()
		d.WaitReady(0, 8*time.Minute)
	}
	for done := 0; done < kills; {
		st := d.WaitSettled(20 * time.Minute)
		next := pcVersion2
		if st.Release.Version == pcVersion2 {
			next = pcVersion3
		}
		d.WaitSynced(d.con.Synced()+5, 3*time.Minute)
		from := d.m.Offset()
		id := d.StartUpdate(srv.URL(next + ".bundle"))
		// One to three cuts into this update (all of a short run's),
		// aimed at instants in order.
		n := min(1+rng.IntN(3), kills-done)
		if !full {
			n = kills - done
		}
		var aims []int
		for range n {
			aims = append(aims, rng.IntN(len(pcKillPhases)))
		}
		slices.Sort(aims)
		armed := false
		for i, a := range aims {
			if i > 0 && d.updateEnded(id) {
				// An earlier cut came after the end: the remaining
				// aims of this update have nothing left to hit.
				break
			}
			phase := d.aim(a, from, armed, rng)
			armed = armed || d.stage(from, armed) >= 3 || strings.Contains(d.m.Log(), "phase=ready-to-reboot")
			synced := d.con.Synced()
			d.Cut()
			done++
			figs.Kills++
			figs.KillPhases[phase]++
			t.Logf("%s: cut %d/%d at %s of update %s to %s (workload at record %d)", name, done, kills, phase, id, next, synced)

			// The disk as the cut left it.
			r, err := powercut.CheckDisk(context.Background(), powercut.DiskCheck{
				Path: d.m.Disk, Images: img.Images(), Synced: synced, Board: name,
				Release: img.Manifests[img.Factory], ScratchDir: scratch,
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range r.Findings {
				pcRun.fail(t, name, "cut %d (%s, seed %d): %s: %s", done, phase, seed, f.Check, f.Detail)
			}

			// And as it boots.
			restart()
			from = 0
			slot, trial, _, _ := d.WaitReady(0, 8*time.Minute)
			if slot != string(r.Boot) || trial != r.Trial {
				pcRun.fail(t, name, "cut %d (%s): booted slot %s trial=%v, the bootloader model said %s trial=%v (%s)", done, phase, slot, trial, r.Boot, r.Trial, r.BootState)
			}
			d.checkRecovered(synced, fmt.Sprintf("cut %d (%s)", done, phase))
		}
		// The supervisor finishes or rolls back on its own.
		st = d.WaitSettled(20 * time.Minute)
		outcome := "none"
		for _, o := range st.Update.History {
			if o.ID == id {
				outcome = o.Result
				if o.Result == "failed" && strings.Contains(o.Reason, "network is unreachable") {
					// A restarted download that began before DHCP.
					outcome += " (network not up yet)"
				}
			}
		}
		figs.KillOutcomes[outcome]++
		t.Logf("%s: update %s settled: slot %s, version %s, last outcome %s", name, id, st.Boot.Slot, st.Release.Version, pcLastOutcome(st.Update.History))
	}
	figs.KillDuration = time.Since(start).Round(time.Second).String()
}

// checkRecovered requires the workload's first start line of this boot to
// show every record it had reported before the cut.
func (d *pcDevice) checkRecovered(synced uint64, what string) {
	d.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if rec := d.con.Recovered(); len(rec) > 0 {
			if n := pcRecoveredJournal(rec[0]); n < synced {
				pcRun.fail(d.t, d.name, "%s: the workload recovered %d records, it had reported %d as fsync'd: %s", what, n, synced, rec[0])
			}
			return
		}
		if time.Now().After(deadline) {
			d.fatal("%s: no workload start line", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Stages of an update as the console shows them, by index of
// pcKillPhases; stageEnd when it ended, -1 before it started.
const stageEnd = 7

// stage says how far the update started at console offset from (0 after
// a restart) has come, from the supervisor's and the kernel's lines of
// this boot. armed says the trial was armed before the last cut, so that a
// fresh boot is the trial boot.
func (d *pcDevice) stage(from int, armed bool) int {
	log := d.m.Log()
	if from > len(log) {
		from = 0
	}
	log = log[from:]
	s := -1
	for _, p := range []struct {
		stage int
		text  string
	}{
		{0, "msg=update phase=downloading"},
		{2, "msg=update phase=verifying"},
		{2, "msg=update phase=ready-to-reboot"},
		{5, "msg=update phase=trial"},
		{stageEnd, `msg="update finished"`},
	} {
		if strings.Contains(log, p.text) {
			s = max(s, p.stage)
		}
	}
	if i := strings.Index(log, "phase=ready-to-reboot"); i >= 0 {
		if j := strings.Index(log[i:], "shutting down"); j >= 0 {
			s = max(s, 3) // the reboot into the trial
			if strings.Contains(log[i+j:], "bulkhead: boot slot=") {
				s = max(s, 4) // the bootloader chose the trial
			}
		}
	}
	if armed && from == 0 && strings.Contains(log, "bulkhead: boot slot=") {
		s = max(s, 4)
	}
	if pcTrialRE.MatchString(log) {
		s = max(s, 5)
	}
	return s
}

// aim waits for instant pcKillPhases[a] of the update started at console
// offset from, and returns what it hit. An update already past the instant
// is cut at once, and the label says so.
func (d *pcDevice) aim(a int, from int, armed bool, rng *rand.Rand) string {
	d.t.Helper()
	phase := pcKillPhases[a]
	sleep := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)+1))) }
	status := func() (api.Status, bool) {
		ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
		defer cancel()
		st, err := d.api.Status(ctx)
		return st, err == nil
	}
	frac := 0.05 + 0.9*rng.Float64()
	endedBefore := d.stage(from, armed) == stageEnd
	deadline := time.Now().Add(15 * time.Minute)
	for time.Now().Before(deadline) {
		s := d.stage(from, armed)
		if s > a && (a != 6 || s != stageEnd || endedBefore) {
			return fmt.Sprintf("%s (missed: the update was at %s)", phase, pcStageName(s))
		}
		switch a {
		case 0: // download
			if s >= 0 {
				sleep(0, 3*time.Second)
				return phase
			}
		case 1: // slot write, at a random fraction of the image
			if st, ok := status(); ok && s <= 1 {
				p := st.Update.Progress
				if st.Update.Phase == "downloading" && p.ImageSize > 0 && float64(p.ImageBytes) >= frac*float64(p.ImageSize) {
					return phase
				}
			}
		case 2: // verify, at a random fraction of the read-back
			if st, ok := status(); ok && s == 2 {
				p := st.Update.Progress
				if st.Update.Phase != "verifying" || p.ImageSize > 0 && float64(p.VerifyBytes) >= frac*float64(p.ImageSize) {
					return phase
				}
			}
		case 3: // reboot: shutdown, firmware, bootloader
			if s == 3 {
				sleep(0, 3*time.Second)
				return phase
			}
		case 4: // trial boot: bootloader (after its decrement), kernel, initramfs, services
			if s == 4 {
				sleep(0, 8*time.Second)
				return phase
			}
		case 5: // health checks
			if s == 5 {
				sleep(0, 5*time.Second)
				return phase
			}
		case 6: // right after the commit
			if s == stageEnd {
				sleep(0, 300*time.Millisecond)
				return phase
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.fatal("the update did not reach %s in 15 minutes", phase)
	return ""
}

// updateEnded reports whether the supervisor records update id as ended
// (after a reboot the console no longer shows its end).
func (d *pcDevice) updateEnded(id string) bool {
	st := d.Status(time.Minute) // the API comes up a little after the ready line
	if st.Update.Phase.Busy() {
		return false
	}
	for _, o := range st.Update.History {
		if o.ID == id {
			return true
		}
	}
	return false
}

func pcStageName(s int) string {
	switch {
	case s < 0:
		return "its start"
	case s >= stageEnd:
		return "its end"
	}
	return pcKillPhases[s]
}
