// Package progress shows the builder's long work on a terminal: one line per
// phase, and a percentage for downloads and compression. It only formats; it
// never decides what is slow.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Printer reports progress on w. It is safe for concurrent use.
type Printer struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	phase    string
	item     string
	last     time.Time
	lastPct  int64
	lineOpen bool
}

// New returns a printer on w; on a terminal it redraws one line, elsewhere
// (CI logs) it prints a line at most every few seconds.
func New(w io.Writer) *Printer {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &Printer{w: w, tty: tty}
}

// Report records progress of item within phase; total 0 means a new phase
// or item without a size.
func (p *Printer) Report(phase, item string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if phase != p.phase || item != p.item {
		p.endLine()
		p.phase, p.item, p.lastPct = phase, item, -1
		if item == "" {
			fmt.Fprintf(p.w, "==> %s\n", phase)
		} else if total == 0 {
			fmt.Fprintf(p.w, "    %s %s\n", phase, item)
		}
	}
	if total <= 0 {
		return
	}
	pct := done * 100 / total
	now := time.Now()
	if p.tty {
		if pct != p.lastPct {
			fmt.Fprintf(p.w, "\r    %s %s %3d%% (%s / %s)", phase, item, pct, size(done), size(total))
			p.lineOpen = true
		}
	} else if pct == 100 && p.lastPct != 100 || now.Sub(p.last) > 5*time.Second {
		fmt.Fprintf(p.w, "    %s %s %3d%% (%s / %s)\n", phase, item, pct, size(done), size(total))
		p.last = now
	}
	p.lastPct = pct
}

// Done ends an open progress line.
func (p *Printer) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
}

func (p *Printer) endLine() {
	if p.lineOpen {
		fmt.Fprintln(p.w)
		p.lineOpen = false
	}
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
