package service

import "time"

// Backoff is the restart policy: the first restart waits Min, each further
// one twice the last, at most Max; a run that lasted Reset or longer counts
// as healthy and the next restart waits Min again.
type Backoff struct {
	Min, Max, Reset time.Duration
}

// DefaultBackoff is 1 s doubling to 60 s, reset after 60 s of uptime: fast
// enough that a crash costs a second, slow enough that a crash loop does not
// flood the console or wear the flash with logs.
var DefaultBackoff = Backoff{Min: time.Second, Max: time.Minute, Reset: time.Minute}

// Next returns the delay before the next start, given the previous delay
// (0 before the first restart) and how long the run that just ended lasted.
func (b Backoff) Next(prev, uptime time.Duration) time.Duration {
	if prev <= 0 || uptime >= b.Reset {
		return b.Min
	}
	next := prev * 2
	if next > b.Max {
		next = b.Max
	}
	return next
}

// Clock is the time source of the restart loop; tests substitute one that
// does not sleep.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
