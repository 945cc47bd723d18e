// Package image runs the build of one board's flashable image, phase by
// phase: fetch -> kernel -> compile -> initramfs -> rootfs -> slot -> boot ->
// disk -> outputs. Each phase lives in the file named after it and reads only
// what the Build struct carries.
//
// The package owns the order of the phases and the layout of the image
// (partition sizes, file locations); the formats themselves belong to the
// packages it calls (fat, ext4, parttable, bootloader, bmap, sbom). It never
// writes outside its work directory and the board's deploy directory, and it
// publishes outputs only when every one of them is complete.
package image

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

// Sizes of the disk layout (docs/architecture.md).
const (
	MiB          = int64(1) << 20
	Align        = 4 * MiB
	BootSize     = 256 * MiB
	RootSize     = 1024 * MiB
	DataSize     = 64 * MiB
	StateCopyA   = 2048 * 512
	StateCopyB   = 3072 * 512
	UBootEnvSize = 4096
	GrubEnvSize  = 1024
)

// Config is everything a build depends on. Two builds with equal Configs and
// equal inputs (lock file, sources) produce the same bytes.
type Config struct {
	// SrcDir is the root of the Bulkhead module (Go sources, boards/).
	SrcDir string
	Board  *board.Board
	// LockFile pins every Debian input (boards/<board>.lock).
	LockFile string
	// Name is the OS name, used in file names and os-release.
	Name    string
	Version string
	// Epoch is SOURCE_DATE_EPOCH: every timestamp in the image.
	Epoch time.Time
	// WorkDir holds intermediate files (build/<board>).
	WorkDir string
	// OutDir receives the outputs (deploy/<board>).
	OutDir string
	Cache  *cache.Cache
	// Sources are the Debian mirrors, used only when the cache misses.
	Sources []debian.Source
	// SigningKey is the private key (PEM) that signs the OTA bundle; its
	// public half (SigningKey+".pub") is baked into the image. Empty: no
	// bundle, and the image trusts no update.
	SigningKey string
	// Overlay files are written into the root slot last, over everything
	// else: a user's own files, or a test's deliberately broken variant.
	Overlay []OverlayFile
	// Compress writes the .img.xz (the slowest output).
	Compress bool
	Log      *slog.Logger
	Progress func(Event)
}

// OverlayFile is one file of Config.Overlay.
type OverlayFile struct {
	// Path is absolute inside the slot, e.g. "/boot/initrd.img".
	Path string
	Data []byte
	Mode os.FileMode
}

// Event reports progress of a long phase to the user interface.
type Event struct {
	Phase string
	Item  string
	Done  int64
	Total int64
}

// Result names the published outputs.
type Result struct {
	Image, XZ, Bmap, SBOM, Sums, Bundle string
	// Slot is the root slot filesystem image (input of the OTA bundle).
	Slot string
	Took time.Duration
}

// Build carries one build through its phases.
type Build struct {
	cfg Config
	os  *OSConfig
	log *slog.Logger

	// fetch
	pins  []pkgInput
	trees map[string]string // package name -> extracted tree

	// kernel
	kernelPkg     string
	kernelVersion string
	kernelImage   string // file to install as /boot/vmlinuz
	modules       []moduleFile
	rootModules   []moduleFile
	dtbs          []dtbFile

	// compile
	binDir string

	// initramfs, rootfs, slot, boot, data
	initrd    string
	rootDir   string
	slotImage string
	bootImage string
	dataImage string
	stateArgs string
	rawWrites []parttable.Write
	diskImage string
}

// Run builds the image and publishes it into cfg.OutDir.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Progress == nil {
		cfg.Progress = func(Event) {}
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	osc, err := LoadOSConfig(cfg.SrcDir)
	if err != nil {
		return nil, err
	}
	b := &Build{cfg: cfg, os: osc, log: cfg.Log.With("board", cfg.Board.Name)}
	type phase struct {
		name string
		fn   func(context.Context) error
	}
	run := func(phases []phase) error {
		for _, p := range phases {
			t := time.Now()
			cfg.Progress(Event{Phase: p.name})
			if err := p.fn(ctx); err != nil {
				return fmt.Errorf("%s: %s: %w", cfg.Board.Name, p.name, err)
			}
			b.log.Debug("phase done", "phase", p.name, "took", time.Since(t).Round(time.Millisecond))
		}
		return nil
	}
	if err := run([]phase{{"fetch", b.fetch}, {"compile", b.compile}}); err != nil {
		return nil, err
	}
	key, err := b.inputsKey()
	if err != nil {
		return nil, err
	}
	if res, ok := b.upToDate(key); ok {
		cfg.Progress(Event{Phase: "up to date"})
		res.Took = time.Since(start)
		return res, nil
	}
	if err := run([]phase{
		{"kernel", b.kernel},
		{"initramfs", b.initramfs},
		{"rootfs", b.rootfs},
		{"slot", b.slot},
		{"boot", b.boot},
		{"data", b.data},
		{"disk", b.disk},
	}); err != nil {
		return nil, err
	}
	cfg.Progress(Event{Phase: "outputs"})
	res, err := b.outputs(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("%s: outputs: %w", cfg.Board.Name, err)
	}
	res.Took = time.Since(start)
	return res, nil
}

func (b *Build) work(name string) string {
	return filepath.Join(b.cfg.WorkDir, name)
}

// seed is the image identity every deterministic identifier derives from.
// The disk identity does not include the version: an OTA update keeps the
// partition table of the factory image, and the bootloader configuration on
// the boot partition names the disk.
func (b *Build) seed() string {
	return b.cfg.Name + "/" + b.cfg.Board.Name
}

func recreateDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clean %s: %w", dir, err)
	}
	return os.MkdirAll(dir, 0o755)
}
