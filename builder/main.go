// Command builder turns a board definition into a flashable Bulkhead image.
//
//	builder image -board raspberrypi3 [-version v] [-no-xz]
//	builder lock  -board raspberrypi3            refresh boards/<board>.lock
//	builder qemu  -board raspberrypi3            boot the built image on this terminal
//	builder keygen -key <path>                    make an update signing key pair
//	builder boards                                list the boards
//
// It is a thin main over the builder/... packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/image"
	"github.com/bulkhead-os/bulkhead/builder/progress"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/builder/resolve"
	"github.com/bulkhead-os/bulkhead/supervisor/keys"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "builder: %v\n", err)
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: builder image|lock|qemu|boards [-board <name>] (see builder/main.go)")
}

type common struct {
	board   string
	version string
	src     string
	verbose bool
	noXZ    bool
	key     string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// defaultKeyPath keeps the signing key out of the repository, in the user's
// configuration directory.
func defaultKeyPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "bulkhead", "signing-key.pem")
}

// ensureKey makes a signing key pair at path on first use, like a newcomer
// expects `make image` to just work; releases should pass their own -key.
func ensureKey(path string) error {
	if path == "" {
		return errors.New("no signing key: pass -key or set BULKHEAD_SIGNING_KEY")
	}
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	pub, priv, err := keys.Generate()
	if err != nil {
		return err
	}
	if err := keys.Save(path, pub, priv); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "builder: made a new update signing key %s (key id %s): devices built with it trust bundles signed by it only; back it up\n", path, keys.IDString(pub))
	return nil
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usage()
	}
	cmd, args := args[0], args[1:]
	if sub := subcommands[cmd]; sub != nil { // update, publish: their own flags
		return sub(ctx, args)
	}
	var c common
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.StringVar(&c.board, "board", os.Getenv("BOARD"), "board name (boards/<name>.yaml)")
	fs.StringVar(&c.version, "version", "0.0.0-dev", "OS version written into the image")
	fs.StringVar(&c.src, "src", ".", "root of the Bulkhead source tree")
	fs.BoolVar(&c.verbose, "v", false, "verbose logs")
	fs.BoolVar(&c.noXZ, "no-xz", false, "skip the .img.xz (the slowest output)")
	fs.StringVar(&c.key, "key", envOr("BULKHEAD_SIGNING_KEY", defaultKeyPath()), "private key that signs update bundles (made on first use)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	boardsDir := filepath.Join(c.src, "boards")

	switch cmd {
	case "boards":
		names, err := board.List(boardsDir)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Println(n)
		}
		return nil
	case "keygen":
		if c.key == "" {
			return errors.New("keygen: pass -key <path>")
		}
		if _, err := os.Stat(c.key); err == nil {
			return fmt.Errorf("keygen: %s exists: refusing to overwrite a signing key", c.key)
		}
		return ensureKey(c.key)
	case "image", "lock", "qemu":
	default:
		return usage()
	}
	if c.board == "" {
		names, _ := board.List(boardsDir)
		return fmt.Errorf("no board given: use -board (or BOARD=) with one of %v", names)
	}
	b, err := board.Load(boardsDir, c.board)
	if err != nil {
		return err
	}
	cch, err := cache.Open(cache.DefaultRoot())
	if err != nil {
		return err
	}
	switch cmd {
	case "lock":
		return lockCmd(ctx, c, b, cch, log)
	case "image":
		_, err := buildImage(ctx, c, b, cch, log)
		return err
	case "qemu":
		res, err := buildImage(ctx, c, b, cch, log)
		if err != nil {
			return err
		}
		return qemu.Interactive(ctx, qemu.Config{Board: b, Image: res.Image, Cache: cch, LockFile: lockPath(c, b)})
	}
	return nil
}

func lockPath(c common, b *board.Board) string {
	return filepath.Join(c.src, "boards", b.Name+".lock")
}

// sources are the Debian mirrors: BULKHEAD_DEBIAN_MIRROR, else the host's apt sources.
func sources() ([]debian.Source, error) {
	return debian.SourcesFor("/", resolve.Release, os.Getenv(debian.MirrorEnv))
}

func lockCmd(ctx context.Context, c common, b *board.Board, cch *cache.Cache, log *slog.Logger) error {
	srcs, err := sources()
	if err != nil {
		return err
	}
	if len(srcs) == 0 {
		return fmt.Errorf("no Debian %s sources in /etc/apt/sources.list*: set BULKHEAD_DEBIAN_MIRROR=\"<mirror URI>\"", resolve.Release)
	}
	p := progress.New(os.Stderr)
	a, err := debian.Open(ctx, debian.Config{Sources: srcs, Cache: cch, Progress: func(e debian.Event) {
		p.Report("index", e.Name, e.Done, e.Total)
	}})
	if err != nil {
		return err
	}
	osc, err := image.LoadOSConfig(c.src)
	if err != nil {
		return err
	}
	f, err := resolve.Lock(ctx, a, b, osc.Packages, osc.Exclude)
	if err != nil {
		return err
	}
	path := lockPath(c, b)
	if err := f.Write(path); err != nil {
		return err
	}
	p.Done()
	fmt.Fprintf(os.Stderr, "builder: wrote %s (%d packages)\n", path, len(f.Packages))
	return nil
}

func buildImage(ctx context.Context, c common, b *board.Board, cch *cache.Cache, log *slog.Logger) (*image.Result, error) {
	epoch, err := sourceDateEpoch(c.src)
	if err != nil {
		return nil, err
	}
	srcs, err := sources()
	if err != nil {
		// A warm cache needs no mirror: report the problem only if a
		// download is needed.
		log.Debug("no Debian sources", "err", err)
	}
	src, err := filepath.Abs(c.src)
	if err != nil {
		return nil, err
	}
	if err := ensureKey(c.key); err != nil {
		return nil, err
	}
	p := progress.New(os.Stderr)
	res, err := image.Run(ctx, image.Config{
		SrcDir:     src,
		Board:      b,
		LockFile:   lockPath(c, b),
		Name:       "bulkhead",
		Version:    c.version,
		Epoch:      time.Unix(epoch, 0).UTC(),
		WorkDir:    filepath.Join(src, "build", b.Name),
		OutDir:     filepath.Join(src, "deploy", b.Name),
		Cache:      cch,
		Sources:    srcs,
		Compress:   !c.noXZ,
		SigningKey: c.key,
		Log:        log,
		Progress:   func(e image.Event) { p.Report(e.Phase, e.Item, e.Done, e.Total) },
	})
	p.Done()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "builder: %s built in %s\n  %s\n", b.Name, res.Took.Round(100*time.Millisecond), res.Image)
	return res, nil
}

// sourceDateEpoch is SOURCE_DATE_EPOCH, else the last commit's time: every
// timestamp in the image comes from it, so rebuilds are byte-identical.
func sourceDateEpoch(src string) (int64, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a Unix time in seconds", s)
		}
		return v, nil
	}
	out, err := exec.Command("git", "-C", src, "log", "-1", "--format=%ct").Output()
	if err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && v > 0 {
			return v, nil
		}
	}
	return 0, errors.New("SOURCE_DATE_EPOCH is not set and there is no git commit to take it from: set SOURCE_DATE_EPOCH=<unix seconds>")
}
