package powercut

import (
	"context"
	"fmt"
	"os"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// DiskCheck describes a disk image to check as it stands: the disk of a
// machine whose power was just cut (the kill loop).
type DiskCheck struct {
	Path   string
	Images []SlotImage
	// Synced is the last workload record the machine reported before the
	// cut.
	Synced     uint64
	Board      string
	Release    bundle.Manifest
	ScratchDir string
}

// CheckDisk runs the checks of a crash state on a disk image.
func CheckDisk(ctx context.Context, o DiskCheck) (*Result, error) {
	f, err := os.Open(o.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	bs, err := FindBootstate(f, fi.Size())
	if err != nil {
		return nil, err
	}
	c, err := NewChecker(Config{
		Log: dmlog.Empty(512), Base: f, Size: fi.Size(), Bootstate: bs, Images: o.Images,
		Markers: []Marker{{Offset: 0, Synced: o.Synced, Phase: "after the cut"}},
		Board:   o.Board, Release: o.Release, ScratchDir: o.ScratchDir, Workers: 1,
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rep, err := c.Check(ctx, []CrashState{{Kind: KindPrefix, Torn: -1, Cut: -1}}, nil)
	if err != nil {
		return nil, err
	}
	if len(rep.Results) != 1 {
		return nil, fmt.Errorf("check %s: %d results", o.Path, len(rep.Results))
	}
	return rep.Results[0], nil
}
