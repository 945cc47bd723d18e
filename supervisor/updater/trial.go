package updater

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/health"
)

// Resume continues or cleans up after the previous run of the supervisor,
// whatever stopped it. Call it once at start, after the API is listening
// (the trial's "supervisor is up" check dials it). Work that takes long
// (a restarted download, health checks) continues in the background; ctx
// bounds it.
func (u *Updater) Resume(ctx context.Context) error {
	phase, upd := u.current()
	bs, err := u.cfg.BootState.Status()
	if err != nil {
		return fmt.Errorf("resume: read boot state: %w", err)
	}
	boot := u.cfg.Boot
	u.log.Debug("resume", "phase", phase, "boot_state", bs.String(), "slot", boot.Slot, "trial", boot.Trial)

	switch phase {
	case PhaseIdle, PhaseCommitted, PhaseRolledBack:
		if phase == PhaseCommitted && u.lastCommitted() == boot.Slot && bootloader.CheckCommit(bs, boot.Slot, boot.Trial) == nil {
			// This supervisor committed the slot it runs, yet the boot
			// state says it is on trial: the copy with the commit was
			// lost (corrupted on the medium) and the older copy, with
			// the trial, won. Committing again keeps the bootloader from
			// falling back to the old version after the tries.
			if err := u.cfg.BootState.Commit(); err != nil {
				return fmt.Errorf("resume: re-commit slot %s: %w", boot.Slot, err)
			}
			u.log.Warn("the boot state had lost the commit of the running slot: committed it again", "slot", boot.Slot, "boot_state", bs.String())
			return nil
		}
		// A rolled-back (or abandoned) trial slot that is still running
		// must make way for the committed slot: a crash between
		// recording the rollback and the reboot lands here.
		if boot.Slot.Valid() && boot.Slot != bs.Committed && bs.Trial != boot.Slot {
			return u.reboot(fmt.Sprintf("slot %s is running but slot %s is committed and no trial is pending", boot.Slot, bs.Committed))
		}
		return nil

	case PhaseDownloading:
		// The slot may hold part of an image; nothing points at it.
		if bs.Trial == upd.Target {
			if err := u.cfg.BootState.AbandonTrial(); err != nil {
				return fmt.Errorf("resume: abandon stale trial: %w", err)
			}
		}
		if upd.Source.Refetchable() && upd.Restarts < u.cfg.MaxRestarts {
			if err := u.transition(PhaseDownloading, func(x *Update) {
				x.Restarts++
				x.Manifest, x.KeyID = nil, ""
			}); err != nil {
				return err
			}
			_, upd = u.current()
			u.log.Info("update interrupted, starting over", "id", upd.ID, "source", upd.Source.String(), "restarts", upd.Restarts)
			u.resetProgress()
			u.goInstall(ctx, upd)
			return nil
		}
		why := "the supervisor stopped during the download and the upload cannot be fetched again: upload the bundle again"
		if upd.Source.Refetchable() {
			why = fmt.Sprintf("the download was interrupted %d times: check the source and start the update again", upd.Restarts+1)
		}
		return u.finish(ResultFailed, why)

	case PhaseVerifying:
		// Every byte was written and flushed before this phase was
		// recorded; verify again (cheap) and arm the trial if the crash
		// came before that.
		if boot.Slot == upd.Target && boot.Trial && bs.Trial == upd.Target {
			// The trial is armed only after every byte was verified, so
			// the power went between arming it and recording that: this
			// is the trial boot (found by the power-cut replay,
			// tests/powercut/testdata).
			return u.enterTrial(ctx, upd)
		}
		if boot.Slot == upd.Target {
			return u.observedRollback(upd, bs)
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.verifyAndArm(ctx, upd, nil)
		}()
		return nil

	case PhaseReady:
		switch {
		case boot.Slot == upd.Target && boot.Trial:
			return u.enterTrial(ctx, upd)
		case boot.ID == upd.BootID:
			// Not rebooted yet.
			if bs.Trial != upd.Target {
				return u.finish(ResultCanceled, "the trial was abandoned before the reboot")
			}
			if !upd.NoReboot {
				return u.reboot("boot the trial slot " + string(upd.Target))
			}
			return nil
		default:
			return u.observedRollback(upd, bs)
		}

	case PhaseTrial:
		if boot.Slot != upd.Target {
			return u.observedRollback(upd, bs)
		}
		switch {
		case bs.Committed == upd.Target:
			// Committed before the crash.
			return u.finish(ResultCommitted, "healthy")
		case bs.Trial != upd.Target:
			// Abandoned before the crash; leave the slot.
			if err := u.finish(ResultRolledBack, "the trial was abandoned"); err != nil {
				return err
			}
			return u.reboot("return to the committed slot " + string(bs.Committed))
		}
		if boot.ID != upd.BootID {
			// A new boot of the trial slot (the previous one hung or
			// reset): its checks start afresh.
			return u.enterTrial(ctx, upd)
		}
		if upd.TrialStarts >= u.cfg.MaxTrialStarts {
			return u.rollback(upd, fmt.Sprintf("the supervisor restarted %d times during the trial", upd.TrialStarts))
		}
		if err := u.transition(PhaseTrial, func(x *Update) { x.TrialStarts++ }); err != nil {
			return err
		}
		_, upd = u.current()
		u.goHealth(ctx, upd)
		return nil
	}
	return fmt.Errorf("resume: unknown phase %q in the state file", phase)
}

// lastCommitted is the slot of the newest outcome if that outcome is a
// commit (SlotNone otherwise).
func (u *Updater) lastCommitted() bootloader.Slot {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.st.History) == 0 || u.st.History[0].Result != ResultCommitted {
		return bootloader.SlotNone
	}
	return u.st.History[0].Slot
}

// observedRollback records that the device did not come back in the trial
// slot: the bootloader used up the trial's tries (or could not boot it)
// and returned to the committed slot by itself.
func (u *Updater) observedRollback(upd *Update, bs bootloader.State) error {
	reason := fmt.Sprintf("slot %s did not pass its trial: the bootloader returned to slot %s", upd.Target, bs.Committed)
	if bs.Trial == upd.Target {
		// A trial is still pending, yet the committed slot runs: the
		// bootloader could not record the trial boot or load its kernel.
		// Retrying could loop forever; give the trial up.
		if err := u.cfg.BootState.AbandonTrial(); err != nil {
			return fmt.Errorf("abandon trial of slot %s: %w", upd.Target, err)
		}
		reason = fmt.Sprintf("slot %s was not booted although its trial was pending (tries left %d): the bootloader booted slot %s", upd.Target, bs.Tries, u.cfg.Boot.Slot)
	} else if bs.Committed == upd.Target {
		// Committed by someone (bulkheadctl mark-good) before a crash.
		return u.finish(ResultCommitted, "committed")
	}
	return u.finish(ResultRolledBack, reason)
}

// enterTrial starts the health checks of a new trial boot.
func (u *Updater) enterTrial(ctx context.Context, upd *Update) error {
	if err := u.transition(PhaseTrial, func(x *Update) {
		x.BootID, x.TrialStarted, x.TrialStarts, x.Health = u.cfg.Boot.ID, u.cfg.Now().UTC(), 1, nil
	}); err != nil {
		return err
	}
	_, upd = u.current()
	u.goHealth(ctx, upd)
	return nil
}

func (u *Updater) goHealth(ctx context.Context, upd *Update) {
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		if err := u.runHealth(ctx, upd); err != nil && !errors.Is(err, context.Canceled) {
			u.log.Error("trial", "err", err)
		}
	}()
}

// runHealth runs rounds of checks until all pass (commit) or the deadline
// passes (roll back). The deadline counts from the trial boot's first
// start, on the monotonic clock of this process for the remainder, so a
// clock step (the clock is set forward to the build time at boot) cannot
// stretch or cut it.
func (u *Updater) runHealth(ctx context.Context, upd *Update) error {
	elapsed := u.cfg.Now().Sub(upd.TrialStarted)
	if elapsed < 0 || elapsed > u.cfg.HealthDeadline {
		elapsed = 0
		if upd.TrialStarts > 1 {
			elapsed = u.cfg.HealthDeadline / 2
		}
	}
	deadline := time.Now().Add(u.cfg.HealthDeadline - elapsed)
	for {
		rs := u.cfg.Health(ctx, upd.NetworkWasUp)
		if phase, cur := u.current(); phase != PhaseTrial || cur == nil || cur.ID != upd.ID {
			return nil // decided meanwhile (mark-good, abandon)
		}
		u.mu.Lock()
		if u.st.Update != nil {
			u.st.Update.Health = rs
		}
		u.mu.Unlock()
		if health.Healthy(rs) {
			return u.commit(upd, "healthy")
		}
		if !time.Now().Before(deadline) {
			return u.rollback(upd, fmt.Sprintf("unhealthy after %s: %s", u.cfg.HealthDeadline, health.Failing(rs)))
		}
		t := time.NewTimer(min(u.cfg.HealthInterval, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// commit makes the trial slot the committed slot.
func (u *Updater) commit(upd *Update, reason string) error {
	bs, err := u.cfg.BootState.Status()
	if err != nil {
		return fmt.Errorf("commit: read boot state: %w", err)
	}
	if err := bootloader.CheckCommit(bs, u.cfg.Boot.Slot, u.cfg.Boot.Trial); err != nil {
		return u.rollback(upd, fmt.Sprintf("cannot commit: %v", err))
	}
	if err := u.cfg.BootState.Commit(); err != nil {
		return fmt.Errorf("commit slot %s: %w", upd.Target, err)
	}
	return u.finish(ResultCommitted, reason)
}

// rollback abandons the trial, records why and reboots into the committed
// slot.
func (u *Updater) rollback(upd *Update, reason string) error {
	bs, err := u.cfg.BootState.Status()
	if err != nil {
		return fmt.Errorf("roll back: read boot state: %w", err)
	}
	if bs.Trial != bootloader.SlotNone {
		if err := u.cfg.BootState.AbandonTrial(); err != nil {
			return fmt.Errorf("roll back: abandon trial of slot %s: %w", upd.Target, err)
		}
	}
	if err := u.finish(ResultRolledBack, reason); err != nil {
		return err
	}
	if u.cfg.Boot.Slot == upd.Target {
		return u.reboot("return to the committed slot " + string(bs.Committed))
	}
	return nil
}

// MarkGood commits the running trial now, without waiting for the health
// checks (bulkheadctl mark-good).
func (u *Updater) MarkGood() error {
	phase, upd := u.current()
	if phase != PhaseTrial || upd == nil || u.cfg.Boot.Slot != upd.Target {
		return fmt.Errorf("%w: phase %s", ErrNotInTrial, phase)
	}
	return u.commit(upd, "marked good by the user")
}

// Abandon gives up the trial: before the reboot it disarms it (the device
// stays on the committed slot), during the trial it rolls back and reboots.
func (u *Updater) Abandon() error {
	phase, upd := u.current()
	switch phase {
	case PhaseReady:
		bs, err := u.cfg.BootState.Status()
		if err != nil {
			return err
		}
		if bs.Trial == upd.Target {
			if err := u.cfg.BootState.AbandonTrial(); err != nil {
				return fmt.Errorf("abandon trial of slot %s: %w", upd.Target, err)
			}
		}
		return u.finish(ResultCanceled, "abandoned by the user before the reboot")
	case PhaseTrial:
		return u.rollback(upd, "abandoned by the user")
	}
	return fmt.Errorf("%w: phase %s", ErrNotInTrial, phase)
}

// RebootNow reboots; in ready-to-reboot that boots the trial.
func (u *Updater) RebootNow(why string) error { return u.reboot(why) }

// ReadBootID reads the kernel's boot ID.
func ReadBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(trimNL(b))
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
