package watchdog

import (
	"context"
	"log/slog"
	"time"
)

// Pinger is what a Feeder feeds; *Device is the real one.
type Pinger interface {
	Ping() error
}

// Feeder pings a watchdog at a fixed interval for as long as the system is
// healthy. When Healthy reports an error the Feeder stops pinging, so the
// hardware resets the board one timeout later; that reset is what turns a
// hung trial boot into a failed one that the bootloader counts.
type Feeder struct {
	// Dev is the watchdog to feed.
	Dev Pinger
	// Interval between pings; PID 1 uses a third of the timeout so that two
	// pings may be late before the board resets.
	Interval time.Duration
	// Healthy decides whether to ping. Nil means "PID 1 is alive", the rule
	// for now; the supervisor will later influence it (see cmd/init).
	Healthy func() error
	// Log receives the transitions between healthy and unhealthy.
	Log *slog.Logger
}

// Run feeds the watchdog until ctx is done. It pings once at once, because
// the initramfs's last ping may be most of a timeout ago.
func (f *Feeder) Run(ctx context.Context) {
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(f.Interval)
	defer t.Stop()
	starving := false
	for {
		var reason error
		if f.Healthy != nil {
			reason = f.Healthy()
		}
		switch {
		case reason != nil && !starving:
			log.Warn("watchdog: unhealthy, no longer feeding it", "err", reason)
			starving = true
		case reason == nil && starving:
			log.Info("watchdog: healthy again, feeding it")
			starving = false
		}
		if !starving {
			if err := f.Dev.Ping(); err != nil {
				log.Warn("watchdog: ping failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
