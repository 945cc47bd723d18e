package inbox

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/source"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// fakeUpdater records Start calls and reports a settable phase.
type fakeUpdater struct {
	phase  updater.Phase
	starts []updater.Request
	err    error
}

func (f *fakeUpdater) Status() updater.Status { return updater.Status{Phase: f.phase} }

func (f *fakeUpdater) Start(ctx context.Context, r updater.Request) (string, error) {
	if f.err != nil {
		return "", f.err
	}
	f.starts = append(f.starts, r)
	f.phase = updater.PhaseDownloading
	return "id1", nil
}

func newWatcher(t *testing.T) (*Watcher, *fakeUpdater) {
	u := &fakeUpdater{phase: updater.PhaseIdle}
	return &Watcher{Dir: t.TempDir(), Updater: u, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, u
}

func drop(t *testing.T, w *Watcher, name, content string) string {
	t.Helper()
	p := filepath.Join(w.Dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func scan(t *testing.T, w *Watcher) string {
	t.Helper()
	id, err := w.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestABundleIsInstalledOnceItStopsChanging(t *testing.T) {
	w, u := newWatcher(t)
	p := drop(t, w, "os-2.0.bundle", "bundle bytes")
	if id := scan(t, w); id != "" || len(u.starts) != 0 {
		t.Fatalf("first scan started %q: a file seen once may still be copied", id)
	}
	if id := scan(t, w); id != "id1" {
		t.Fatalf("second scan started %q, want the update", id)
	}
	want := filepath.Join(w.Dir, installing, "os-2.0.bundle")
	if len(u.starts) != 1 || u.starts[0].Source != (source.Spec{Kind: source.KindFile, Location: want}) {
		t.Fatalf("started %+v, want a file update from %s", u.starts, want)
	}
	if exists(p) || !exists(want) {
		t.Fatalf("the bundle was not moved to %s", want)
	}

	// While the update runs nothing is touched.
	scan(t, w)
	if !exists(want) {
		t.Fatal("the bundle of a running update was removed")
	}
	// Once it has ended, whatever the outcome, the bundle goes.
	u.phase = updater.PhaseRolledBack
	if id := scan(t, w); id != "" {
		t.Fatalf("scan after the update started %q", id)
	}
	if exists(want) {
		t.Fatal("the bundle of an ended update is still there")
	}
}

func TestAFileStillBeingWrittenIsNotTaken(t *testing.T) {
	w, u := newWatcher(t)
	p := drop(t, w, "os.bundle", "part")
	scan(t, w)
	if err := os.WriteFile(p, []byte("part and more"), 0o644); err != nil {
		t.Fatal(err)
	}
	if scan(t, w); len(u.starts) != 0 {
		t.Fatal("a bundle that grew since the last scan was taken")
	}
	if scan(t, w); len(u.starts) != 1 {
		t.Fatal("a bundle that stopped changing was not taken")
	}
}

func TestOnlyVisibleBundleFilesAreTaken(t *testing.T) {
	w, u := newWatcher(t)
	drop(t, w, ".hidden.bundle", "x")
	drop(t, w, "os.bundle.part", "x")
	drop(t, w, "notes.txt", "x")
	os.Mkdir(filepath.Join(w.Dir, "dir.bundle"), 0o755)
	for i := 0; i < 3; i++ {
		scan(t, w)
	}
	if len(u.starts) != 0 {
		t.Fatalf("started %+v from files that are not bundles", u.starts)
	}
}

func TestBundlesAreTakenOneAtATimeInNameOrder(t *testing.T) {
	w, u := newWatcher(t)
	drop(t, w, "b.bundle", "b")
	drop(t, w, "a.bundle", "a")
	scan(t, w)
	scan(t, w)
	if len(u.starts) != 1 || filepath.Base(u.starts[0].Source.Location) != "a.bundle" {
		t.Fatalf("started %+v, want a.bundle alone", u.starts)
	}
	scan(t, w) // busy
	u.phase = updater.PhaseCommitted
	scan(t, w)
	if len(u.starts) != 2 || filepath.Base(u.starts[1].Source.Location) != "b.bundle" {
		t.Fatalf("started %+v, want b.bundle next", u.starts)
	}
}

func TestNothingIsTakenWhileAnUpdateRuns(t *testing.T) {
	w, u := newWatcher(t)
	u.phase = updater.PhaseTrial
	drop(t, w, "os.bundle", "x")
	scan(t, w)
	scan(t, w)
	if len(u.starts) != 0 || !exists(filepath.Join(w.Dir, "os.bundle")) {
		t.Fatal("a bundle was taken during a trial")
	}
}

func TestABundleTheUpdaterCannotStartNowStaysForLater(t *testing.T) {
	w, u := newWatcher(t)
	u.err = errors.New("update refused: a trial of slot b is pending")
	p := drop(t, w, "os.bundle", "x")
	scan(t, w)
	if _, err := w.Scan(context.Background()); err == nil {
		t.Fatal("Scan hid the updater's refusal")
	}
	if !exists(p) {
		t.Fatal("the bundle was not put back into the inbox")
	}
	u.err = nil
	scan(t, w) // seen again
	if scan(t, w); len(u.starts) != 1 {
		t.Fatalf("started %d updates once the updater could, want 1", len(u.starts))
	}
}

func TestRunCreatesTheInboxAndStopsWithItsContext(t *testing.T) {
	w, _ := newWatcher(t)
	w.Dir = filepath.Join(w.Dir, "supervisor", "inbox")
	w.Interval = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := w.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v", err)
	}
	if !exists(filepath.Join(w.Dir, installing)) {
		t.Fatal("Run did not create the inbox")
	}
}
