// Command bh-workload is the power-cut tests' data workload (package
// workload has the format): an app-like writer on the data partition that
// fsyncs every record before it reports it as synced. The tests add it to
// test images as a service; it is never part of an image users flash.
//
// At start it reads what the previous run left, prints it ("recovered
// journal=<n> counter=<n> files=<n> bad=<n>"), cuts a torn journal tail,
// does the last valid record's work again (the counter, its file) and goes
// on from there.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead-os/bulkhead/tests/powercut/workload"
)

func main() {
	root := flag.String("root", "/data", "data partition mount point")
	interval := flag.Duration("interval", 10*time.Millisecond, "pause between records")
	flag.Parse()
	if err := run(filepath.Join(*root, workload.Dir), *interval); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(dir string, interval time.Duration) error {
	files := filepath.Join(dir, workload.FilesDir)
	if err := os.MkdirAll(files, 0o755); err != nil {
		return err
	}
	for _, d := range []string{files, dir, filepath.Dir(dir)} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	j, err := os.OpenFile(filepath.Join(dir, workload.JournalFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	c, err := os.OpenFile(filepath.Join(dir, workload.CounterFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	n, err := recoverState(dir, j, c)
	if err != nil {
		return err
	}
	// The cut may have come between the journal record and the rest of
	// its work: do that again before going on.
	redo := n > 0
	for {
		if !redo {
			n++
		}
		redo = false
		if _, err := j.WriteAt(workload.Record(n), int64(n-1)*workload.RecordSize); err != nil {
			return err
		}
		if err := j.Sync(); err != nil {
			return err
		}
		if _, err := c.WriteAt(workload.Record(n), 0); err != nil {
			return err
		}
		if err := c.Sync(); err != nil {
			return err
		}
		if n%workload.FileEvery == 0 {
			if err := writeFile(files, n); err != nil {
				return err
			}
			if old := n - workload.FileEvery*workload.FileWindow; n > workload.FileEvery*workload.FileWindow {
				if err := os.Remove(filepath.Join(files, workload.FileName(old))); err != nil && !os.IsNotExist(err) {
					return err
				}
				if err := syncDir(files); err != nil {
					return err
				}
			}
		}
		fmt.Printf("%s%d\n", workload.SyncedPrefix, n)
		time.Sleep(interval)
	}
}

// recoverState reports what the last run left and returns the last valid
// journal record.
func recoverState(dir string, j, c *os.File) (uint64, error) {
	jb, err := os.ReadFile(j.Name())
	if err != nil {
		return 0, err
	}
	n := workload.JournalValid(jb)
	if int64(len(jb)) > int64(n)*workload.RecordSize {
		if err := j.Truncate(int64(n) * workload.RecordSize); err != nil {
			return 0, err
		}
		if err := j.Sync(); err != nil {
			return 0, err
		}
	}
	cb := make([]byte, workload.RecordSize)
	counter := "none"
	if k, _ := c.ReadAt(cb, 0); k == workload.RecordSize {
		if v, err := workload.ParseRecord(cb); err == nil {
			counter = fmt.Sprint(v)
		} else {
			counter = "bad"
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, workload.FilesDir))
	if err != nil {
		return 0, err
	}
	bad := 0
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, workload.FilesDir, e.Name()))
		if err != nil || workload.CheckFile(e.Name(), b) != "" {
			bad++
		}
	}
	fmt.Printf("%sjournal=%d counter=%s files=%d bad=%d\n", workload.RecoveredPrefix, n, counter, len(entries), bad)
	return n, nil
}

func writeFile(dir string, n uint64) error {
	f, err := os.OpenFile(filepath.Join(dir, workload.FileName(n)), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(workload.FileData(n)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
