// Package console is how the initramfs and PID 1 talk to the kernel console:
// making sure standard input, output and error are open on it, and a log/slog
// handler that prints one short, time-less line per record.
//
// Lines carry no timestamp because early in boot the clock of a board
// without an RTC says 1970, and the serial capture of the test harness adds
// its own.
package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPath is the kernel console device.
const DefaultPath = "/dev/console"

// Ensure makes sure file descriptors 0, 1 and 2 are open, on the console at
// path when they were not. The kernel opens /dev/console for the first
// program before it runs it, but only if the initramfs contains that device
// node; without it, everything this process prints would vanish. Call it
// after devtmpfs is mounted on /dev.
func Ensure(path string) error {
	var missing []int
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			missing = append(missing, fd)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	c, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open console %s: %w", path, err)
	}
	var errs []error
	for _, fd := range missing {
		if fd == c {
			continue
		}
		if err := unix.Dup2(c, fd); err != nil {
			errs = append(errs, fmt.Errorf("console on fd %d: %w", fd, err))
		}
	}
	if c > 2 {
		unix.Close(c)
	}
	return errors.Join(errs...)
}

// LockedWriter serialises writes so that lines written by several goroutines
// (PID 1's log and each service's output) never interleave mid-line.
type LockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLockedWriter wraps w.
func NewLockedWriter(w io.Writer) *LockedWriter { return &LockedWriter{w: w} }

// Write writes p in one call to the underlying writer.
func (l *LockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Handler is a slog.Handler that writes one line per record:
//
//	<prefix><msg> key=value key="value with spaces"
//
// with "warning: " or "error: " before the message for those levels.
type Handler struct {
	w      io.Writer
	prefix string
	level  slog.Leveler
	attrs  string // pre-formatted " k=v" pairs from WithAttrs
	group  string // key prefix from WithGroup, ending in "."
}

// NewHandler returns a Handler writing to w; records below level are dropped.
func NewHandler(w io.Writer, prefix string, level slog.Leveler) *Handler {
	return &Handler{w: w, prefix: prefix, level: level}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.prefix)
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	case r.Level < slog.LevelInfo:
		b.WriteString("debug: ")
	}
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.group, a)
		return true
	})
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String())
	return err
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	for _, a := range as {
		appendAttr(&b, h.group, a)
	}
	h2 := *h
	h2.attrs += b.String()
	return &h2
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group += name + "."
	return &h2
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := group
		if a.Key != "" {
			g += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, g, ga)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteByte('=')
	var v string
	switch a.Value.Kind() {
	case slog.KindDuration:
		v = a.Value.Duration().Round(time.Millisecond).String()
	default:
		v = a.Value.String()
	}
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = strconv.Quote(v)
	}
	b.WriteString(v)
}
