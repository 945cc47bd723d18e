package powercut

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-os/bulkhead/rootfs/jbd2"
	"github.com/bulkhead-os/bulkhead/tests/powercut/workload"
)

// DataResult is what the data partition of a crash state holds, as the
// device would find it after mounting it (the mount replays the journal).
type DataResult struct {
	// Mount says why the device's kernel would refuse to mount the
	// partition even after the initramfs's repair ("" if it mounts it):
	// see rootfs/jbd2.
	Mount string
	// Repaired is the transaction whose torn commit block the initramfs
	// drops before the mount succeeds (0 if none).
	Repaired uint32
	// Replay is e2fsck's output of the journal replay ("" if none was
	// needed).
	Replay string
	// Fsck is the output of e2fsck -fn after the replay when it found
	// a problem, "" when the filesystem is clean.
	Fsck string
	// Workload is what the test workload's files hold.
	Workload workload.State
	// StateJSON is /supervisor/state.json (nil when absent).
	StateJSON []byte
}

// StatePath is the supervisor's update state file inside the data
// filesystem (/data/supervisor/state.json on the device).
const StatePath = "supervisor/state.json"

// checkData copies sectors [start, start+size) of v into a scratch file in
// dir, replays the ext4 journal there as a mount would (e2fsck -E
// journal_only), checks it with e2fsck -fn and reads the workload's files
// and the supervisor state with debugfs. Errors are the tools failing to
// run, not findings.
func checkData(ctx context.Context, v *View, start, size int64, dir string, tm *timing) (*DataResult, error) {
	t0 := time.Now()
	scratch, err := os.CreateTemp(dir, "data-*.ext4")
	if err != nil {
		return nil, err
	}
	defer os.Remove(scratch.Name())
	err = scratch.Truncate(size)
	if err == nil {
		err = v.CopyRange(scratch, 0, start, size)
	}
	if cerr := scratch.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("copy the data partition: %w", err)
	}
	tm.add("data copy", t0)
	return checkImage(ctx, scratch.Name(), dir, tm)
}

// checkDataFile checks a gzipped data partition image (a fixture's).
func checkDataFile(ctx context.Context, gz, dir string) (*DataResult, error) {
	in, err := os.Open(gz)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gz, err)
	}
	scratch, err := os.CreateTemp(dir, "data-*.ext4")
	if err != nil {
		return nil, err
	}
	defer os.Remove(scratch.Name())
	_, err = io.Copy(scratch, zr)
	if cerr := scratch.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gz, err)
	}
	return checkImage(ctx, scratch.Name(), dir, nil)
}

// checkImage runs the data checks on a data partition image, which it
// may change (the journal replay).
func checkImage(ctx context.Context, img, dir string, tm *timing) (*DataResult, error) {
	res := &DataResult{}
	t0 := time.Now()
	// What the initramfs does: mount; if Linux 6.1 refuses a torn commit
	// block, drop it with the product's jbd2.Repair and mount again.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	v, wrote, err := jbd2.Repair(f)
	if err == nil && wrote {
		res.Repaired = v.Seq
		v, err = jbd2.Check(f)
	}
	f.Close()
	if err != nil {
		return nil, err
	}
	res.Mount = v.Refusal
	tm.add("jbd2 scan", t0)
	t0 = time.Now()

	// What the kernel does at mount: replay a journal that needs it.
	out, code, err := run(ctx, "e2fsck", "-E", "journal_only", "-p", img)
	if err != nil {
		return nil, err
	}
	if code&^1 != 0 {
		res.Fsck = fmt.Sprintf("journal replay (e2fsck -E journal_only -p) exited %d:\n%s", code, out)
		return res, nil
	}
	if code == 1 {
		res.Replay = out
	}
	tm.add("journal replay", t0)
	t0 = time.Now()
	out, code, err = run(ctx, "e2fsck", "-fn", img)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		res.Fsck = fmt.Sprintf("e2fsck -fn exited %d:\n%s", code, out)
	}
	tm.add("e2fsck -fn", t0)
	t0 = time.Now()
	defer tm.add("debugfs", t0)

	dump, err := os.MkdirTemp(dir, "dump-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dump)
	cmds := fmt.Sprintf("rdump /%s %s\ndump /%s %s\n", workload.Dir, dump, StatePath, filepath.Join(dump, "state.json"))
	cmd := exec.CommandContext(ctx, "debugfs", "-f", "-", img)
	cmd.Stdin = strings.NewReader(cmds)
	if o, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("debugfs: %v: %s", err, o)
	}
	if b, err := os.ReadFile(filepath.Join(dump, "state.json")); err == nil {
		res.StateJSON = b
	}
	res.Workload, err = readWorkload(filepath.Join(dump, workload.Dir))
	if err != nil {
		return nil, err
	}
	return res, nil
}

// readWorkload reads the workload directory as debugfs dumped it (absent
// before the workload's first start).
func readWorkload(dir string) (workload.State, error) {
	st := workload.State{Files: map[string]string{}}
	j, err := os.ReadFile(filepath.Join(dir, workload.JournalFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	st.Journal = workload.JournalValid(j)
	c, err := os.ReadFile(filepath.Join(dir, workload.CounterFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return st, err
	case len(c) == 0:
	case len(c) < workload.RecordSize:
		st.CounterErr = fmt.Errorf("%d bytes", len(c))
	default:
		st.Counter, st.CounterErr = workload.ParseRecord(c[:workload.RecordSize])
	}
	entries, err := os.ReadDir(filepath.Join(dir, workload.FilesDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, workload.FilesDir, e.Name()))
		if err != nil {
			st.Files[e.Name()] = err.Error()
			continue
		}
		st.Files[e.Name()] = workload.CheckFile(e.Name(), b)
	}
	return st, nil
}

// run runs a tool and returns its combined output and exit code; err only
// when it could not run.
func run(ctx context.Context, name string, args ...string) (string, int, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("%s (e2fsprogs): %w", name, err)
	}
	return out.String(), 0, nil
}

// timing sums the time the checks spend in their steps (Report.Stats).
type timing struct {
	mu sync.Mutex
	d  map[string]time.Duration
}

func (t *timing) add(step string, since time.Time) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.d == nil {
		t.d = map[string]time.Duration{}
	}
	t.d[step] += time.Since(since)
}

func (t *timing) ms() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]int64{}
	for k, v := range t.d {
		out[k+" ms"] = v.Milliseconds()
	}
	return out
}
