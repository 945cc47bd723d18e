package tests

// The kill loop: power cuts (SIGKILL of QEMU) at random instants of
// scripted updates, each followed by an offline check of the disk as the
// cut left it and a boot.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/tests/powercut"
)

// pcKillPhases are the instants of an update the loop aims at, in order.
var pcKillPhases = []string{"download", "slot write", "verify", "reboot", "trial boot", "health check", "commit"}

// TestPowerCutKillLoop cuts the power of each board at random instants of
// scripted updates, mode.Kills times.
func TestPowerCutKillLoop(t *testing.T) {
	mode := pcModeFromEnv(t)
	t.Logf("kill loop: %d cuts per board, seed %d (BULKHEAD_TORTURE_SEED=%d replays the choice of instants)", mode.Kills, mode.Seed, mode.Seed)
	if pcRun.Started.IsZero() {
		pcRun.Seed, pcRun.Started = mode.Seed, time.Now()
	}
	t.Cleanup(func() { pcWriteReport(t) })
	for i, name := range pcBoards {
		t.Run(name, func(t *testing.T) {
			img := pcImageFor(t, name)
			t.Parallel()
			pcKillLoop(t, img, mode, rand.New(rand.NewPCG(mode.Seed, uint64(i))))
		})
	}
}

func pcKillLoop(t *testing.T, img *pcImage, mode pcMode, rng *rand.Rand) {
	name := img.board.Name
	figs := pcRun.board(name)
	start := time.Now()
	srv := pcServe(t, map[string]string{
		pcVersion2 + ".bundle": img.Bundles[pcVersion2],
		pcVersion3 + ".bundle": img.Bundles[pcVersion3],
	})
	d := pcNewDevice(t, img, pcOptions{Disk: img.Disk})
	scratch := t.TempDir()
	d.Start()
	d.WaitReady(0, 8*time.Minute)
	for kills := 0; kills < mode.Kills; {
		st := d.WaitSettled(20 * time.Minute)
		next := pcVersion2
		if st.Release.Version == pcVersion2 {
			next = pcVersion3
		}
		d.WaitSynced(d.con.Synced()+5, 3*time.Minute)
		id := d.StartUpdate(srv.URL(next + ".bundle"))
		// One to three cuts into this update, at instants in order.
		n := min(1+rng.IntN(3), mode.Kills-kills)
		var aims []int
		for range n {
			aims = append(aims, rng.IntN(len(pcKillPhases)))
		}
		slices.Sort(aims)
		for _, a := range aims {
			phase := d.aim(pcKillPhases[a], rng)
			synced := d.con.Synced()
			d.Cut()
			kills++
			figs.Kills++
			figs.KillPhases[phase]++
			t.Logf("%s: cut %d/%d during %s of update %s to %s (workload at record %d)", name, kills, mode.Kills, phase, id, next, synced)

			// The disk as the cut left it.
			r, err := powercut.CheckDisk(context.Background(), powercut.DiskCheck{
				Path: d.m.Disk, Images: img.Images(), Synced: synced, Board: name,
				Release: img.Manifests[img.Factory], ScratchDir: scratch,
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range r.Findings {
				pcRun.fail(t, name, "cut %d (%s, seed %d): %s: %s", kills, phase, mode.Seed, f.Check, f.Detail)
			}

			// And as it boots.
			d.Start()
			slot, trial, _, _ := d.WaitReady(0, 8*time.Minute)
			if slot != string(r.Boot) || trial != r.Trial {
				pcRun.fail(t, name, "cut %d (%s): booted slot %s trial=%v, the bootloader model said %s trial=%v (%s)", kills, phase, slot, trial, r.Boot, r.Trial, r.BootState)
			}
			d.checkRecovered(synced, fmt.Sprintf("cut %d (%s)", kills, phase))
		}
		// The supervisor finishes or rolls back on its own.
		st = d.WaitSettled(20 * time.Minute)
		t.Logf("%s: update %s settled: slot %s, version %s, last outcome %s", name, id, st.Boot.Slot, st.Release.Version, pcLastOutcome(st.Update.History))
	}
	figs.KillDuration = time.Since(start).Round(time.Second).String()
}

// checkRecovered requires the workload's start line of this boot to show
// every record it had reported before the cut.
func (d *pcDevice) checkRecovered(synced uint64, what string) {
	d.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if rec := d.con.Recovered(); len(rec) > 0 {
			line := rec[0]
			if n := pcRecoveredJournal(line); n < synced {
				pcRun.fail(d.t, d.name, "%s: the workload recovered %d records, it had reported %d as fsync'd: %s", what, n, synced, line)
			}
			return
		}
		if time.Now().After(deadline) {
			d.fatal("%s: no workload start line", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var (
	pcShutdownRE = regexp.MustCompile(`shutting down`)
	pcTrialRE    = regexp.MustCompile(`(?m)^bulkhead: ready version=\S+ slot=[ab] board=\S+ trial=1\r?$`)
	pcDoneRE     = regexp.MustCompile(`msg="update finished"`)
)

// aim waits for an instant of the running update and returns what it hit.
// When the update is already past the instant, it cuts at once and says so.
func (d *pcDevice) aim(phase string, rng *rand.Rand) string {
	d.t.Helper()
	delay := func(max time.Duration) { time.Sleep(time.Duration(rng.Int64N(int64(max) + 1))) }
	wait := func(re *regexp.Regexp) bool {
		_, _, err := d.m.Wait(d.ctx, re, 0, 10*time.Minute)
		return err == nil
	}
	progress := func(ok func(api.Status) bool) bool {
		deadline := time.Now().Add(10 * time.Minute)
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
			st, err := d.api.Status(ctx)
			cancel()
			if err == nil {
				if ok(st) {
					return true
				}
				if !st.Update.Phase.Busy() || st.Update.Phase == "trial" || st.Update.Phase == "ready-to-reboot" {
					return false
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		return false
	}
	hit := true
	switch phase {
	case "download":
		hit = progress(func(st api.Status) bool { return st.Update.Phase == "downloading" })
		delay(3 * time.Second)
	case "slot write":
		f := 0.05 + 0.9*rng.Float64()
		hit = progress(func(st api.Status) bool {
			p := st.Update.Progress
			return p.ImageSize > 0 && float64(p.ImageBytes) >= f*float64(p.ImageSize)
		})
	case "verify":
		f := 0.9 * rng.Float64()
		hit = progress(func(st api.Status) bool {
			p := st.Update.Progress
			return st.Update.Phase == "verifying" && p.ImageSize > 0 && float64(p.VerifyBytes) >= f*float64(p.ImageSize)
		})
	case "reboot":
		hit = wait(pcShutdownRE)
		delay(3 * time.Second)
	case "trial boot":
		hit = wait(pcShutdownRE)
		delay(15 * time.Second)
	case "health check":
		hit = wait(pcTrialRE)
		delay(5 * time.Second)
	case "commit":
		hit = wait(pcDoneRE)
		delay(500 * time.Millisecond)
	}
	if !hit {
		return phase + " (missed: the update was past it)"
	}
	return phase
}
