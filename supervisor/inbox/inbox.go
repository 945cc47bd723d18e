// Package inbox installs update bundles dropped into a directory on the
// data partition (/data/supervisor/inbox): the way to update a device
// that has no network, or whose owner has only a card reader. Copy a
// bundle onto the data partition as inbox/<anything>.bundle and the
// supervisor installs it as if `bulkheadctl update <path>` had asked,
// with the same checks, the same state machine and the outcome in the same
// history.
//
// The rules, documented in docs/update-protocol.md:
//   - only regular files named *.bundle, not hidden, in name order; write a
//     file under another name (x.bundle.part) and rename it when complete;
//   - a file is taken once its size and modification time were the same at
//     two scans, so a copy still in progress is not installed half-written;
//   - it is moved to inbox/.installing/ (so a restart does not take it
//     twice, and a download that starts over after a crash finds it) and
//     deleted there once the update has ended, whatever the outcome;
//   - nothing is taken while an update is in progress; if the updater
//     cannot start one now (a trial pending, the running slot not
//     committed) the file goes back to the inbox and is tried again later.
//
// It decides nothing about the bundle: the updater verifies and installs.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/source"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// DefaultDir is the drop directory on a device.
const DefaultDir = "/data/supervisor/inbox"

// Suffix is the name ending of a bundle the watcher takes.
const Suffix = ".bundle"

// installing is the subdirectory a taken bundle is moved to.
const installing = ".installing"

// Updater is the part of *updater.Updater the watcher drives.
type Updater interface {
	Status() updater.Status
	Start(ctx context.Context, req updater.Request) (string, error)
}

// Watcher scans Dir and starts an update for each bundle dropped there.
type Watcher struct {
	Dir     string
	Updater Updater
	// Interval between scans; default 5 s. A file is taken at the earliest
	// on the second scan that sees it.
	Interval time.Duration
	Log      *slog.Logger

	seen    map[string]fileStamp // candidates at the previous scan
	lastErr string
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// Run creates Dir and scans it until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	if w.Interval <= 0 {
		w.Interval = 5 * time.Second
	}
	if err := os.MkdirAll(filepath.Join(w.Dir, installing), 0o700); err != nil {
		return fmt.Errorf("update inbox: %w", err)
	}
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		if _, err := w.Scan(ctx); err != nil {
			w.logOnce(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (w *Watcher) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

// logOnce reports an error the first time it occurs in a row: the scan
// repeats every few seconds.
func (w *Watcher) logOnce(err error) {
	if err.Error() != w.lastErr {
		w.log().Warn("update inbox", "err", err)
	}
	w.lastErr = err.Error()
}

// Scan does one pass: it removes the bundles of ended updates and, if no
// update is in progress, starts one from the first complete bundle. It
// returns the ID of the update it started, if any.
func (w *Watcher) Scan(ctx context.Context) (string, error) {
	if w.Updater.Status().Phase.Busy() {
		return "", nil
	}
	inst := filepath.Join(w.Dir, installing)
	if err := w.clean(inst); err != nil {
		return "", err
	}
	name, err := w.candidate()
	if err != nil || name == "" {
		return "", err
	}
	if err := os.MkdirAll(inst, 0o700); err != nil {
		return "", fmt.Errorf("update inbox: %w", err)
	}
	from, to := filepath.Join(w.Dir, name), filepath.Join(inst, name)
	if err := os.Rename(from, to); err != nil {
		return "", fmt.Errorf("update inbox: take %s: %w", name, err)
	}
	syncDir(inst)
	syncDir(w.Dir)
	id, err := w.Updater.Start(ctx, updater.Request{Source: source.Spec{Kind: source.KindFile, Location: to}})
	if err != nil {
		// Nothing was recorded: the updater refused to begin (a trial
		// is pending, the running slot is not committed, another update
		// just started). Put the file back for a later scan.
		if rerr := os.Rename(to, from); rerr != nil {
			err = errors.Join(err, rerr)
		}
		delete(w.seen, name)
		return "", fmt.Errorf("update inbox: cannot install %s now, will retry: %w", name, err)
	}
	w.lastErr = ""
	delete(w.seen, name)
	w.log().Info("update inbox: installing", "file", name, "id", id)
	return id, nil
}

// clean deletes what is left in .installing: the update it fed has ended
// (no update is busy), and its outcome is in the history.
func (w *Watcher) clean(inst string) error {
	ents, err := os.ReadDir(inst)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update inbox: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(inst, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("update inbox: remove %s: %w", p, err)
		}
		w.log().Info("update inbox: removed the bundle of an ended update", "file", e.Name())
	}
	if len(ents) > 0 {
		syncDir(inst)
	}
	return nil
}

// candidate returns the first bundle whose size and modification time
// have not changed since the previous scan, and remembers the others.
func (w *Watcher) candidate() (string, error) {
	ents, err := os.ReadDir(w.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("update inbox: %w", err)
	}
	var names []string
	now := map[string]fileStamp{}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, Suffix) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		now[n] = fileStamp{size: fi.Size(), mod: fi.ModTime()}
		names = append(names, n)
	}
	sort.Strings(names)
	prev := w.seen
	w.seen = now
	for _, n := range names {
		if p, ok := prev[n]; ok && p == now[n] {
			return n, nil
		}
	}
	return "", nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
