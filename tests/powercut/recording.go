package powercut

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// Recording is a recorded run kept on disk (BULKHEAD_TORTURE_KEEP of the
// power-cut tests), for replaying it again with cmd/bh-replay. Paths are
// relative to the recording's directory.
type Recording struct {
	Board   string          `json:"board"`
	Release bundle.Manifest `json:"release"`
	// Base is the disk image before the run, Log its write log.
	Base string `json:"base"`
	Log  string `json:"log"`
	// Images are the slot images the slots may hold.
	Images  []SlotImage `json:"images"`
	Markers []Marker    `json:"markers"`
}

// RecordingFile is the recording's description in its directory.
const RecordingFile = "recording.json"

// Save writes the description into dir.
func (r *Recording) Save(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, RecordingFile), append(b, '\n'), 0o644)
}

// LoadRecording reads a recording's description and makes its paths
// absolute.
func LoadRecording(dir string) (*Recording, error) {
	b, err := os.ReadFile(filepath.Join(dir, RecordingFile))
	if err != nil {
		return nil, err
	}
	var r Recording
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, RecordingFile), err)
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	r.Base, r.Log = abs(r.Base), abs(r.Log)
	for i := range r.Images {
		r.Images[i].Path = abs(r.Images[i].Path)
	}
	return &r, nil
}

// Open opens the recording's files and returns a Checker for it; close
// the Checker and call done when finished.
func (r *Recording) Open(scratch string, workers int) (c *Checker, log *dmlog.Log, done func(), err error) {
	lf, err := os.Open(r.Log)
	if err != nil {
		return nil, nil, nil, err
	}
	bf, err := os.Open(r.Base)
	if err != nil {
		lf.Close()
		return nil, nil, nil, err
	}
	done = func() { lf.Close(); bf.Close() }
	fail := func(err error) (*Checker, *dmlog.Log, func(), error) {
		done()
		return nil, nil, nil, err
	}
	lfi, err := lf.Stat()
	if err != nil {
		return fail(err)
	}
	bfi, err := bf.Stat()
	if err != nil {
		return fail(err)
	}
	if log, err = dmlog.ParseLog(lf, lfi.Size()); err != nil {
		return fail(err)
	}
	bs, err := FindBootstate(bf, bfi.Size())
	if err != nil {
		return fail(err)
	}
	c, err = NewChecker(Config{
		Log: log, Base: bf, Size: bfi.Size(), Bootstate: bs, Images: r.Images, Markers: r.Markers,
		Board: r.Board, Release: r.Release, ScratchDir: scratch, Workers: workers,
	})
	if err != nil {
		return fail(err)
	}
	return c, log, done, nil
}

// MemoryScratch makes a directory for a Checker's ScratchDir, in /dev/shm
// when the host has one with room for the copies, else in the default
// temporary directory; remove it with the returned func. Every data check
// writes a sparse copy of the data partition, lets e2fsck replay its
// journal and deletes it: on a disk filesystem the block allocation and
// journaling of these short-lived files cost as much as the checks
// themselves (the first 3,000 states of the x86_64 enumeration: 48 s on
// ext4, 29 s on tmpfs). Containers often get a 64 MiB /dev/shm, too small
// for even one copy to be sure: those fall back to the disk.
func MemoryScratch() (string, func(), error) {
	const room = 1 << 30 // Workers copies of a partition grown to the disk's end, with margin
	dir := os.TempDir()
	var fs unix.Statfs_t
	if unix.Statfs("/dev/shm", &fs) == nil && uint64(fs.Bavail)*uint64(fs.Bsize) >= room && unix.Access("/dev/shm", unix.W_OK) == nil {
		dir = "/dev/shm"
	}
	dir, err := os.MkdirTemp(dir, "bulkhead-powercut-")
	if err != nil {
		return "", nil, fmt.Errorf("scratch directory for the data checks: %w", err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
