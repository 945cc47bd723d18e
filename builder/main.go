// Command builder turns a board definition into a flashable Bulkhead image.
//
//	builder image -board raspberrypi3 [-version v] [-no-xz]
//	builder lock  -board raspberrypi3            refresh boards/<board>.lock
//	builder qemu  -board raspberrypi3            boot the built image on this terminal
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
	"os/signal"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/image"
	"github.com/bulkhead-os/bulkhead/builder/progress"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/builder/resolve"
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
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usage()
	}
	cmd, args := args[0], args[1:]
	var c common
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.StringVar(&c.board, "board", os.Getenv("BOARD"), "board name (boards/<name>.yaml)")
	fs.StringVar(&c.version, "version", "0.0.0-dev", "OS version written into the image")
	fs.StringVar(&c.src, "src", ".", "root of the Bulkhead source tree")
	fs.BoolVar(&c.verbose, "v", false, "verbose logs")
	fs.BoolVar(&c.noXZ, "no-xz", false, "skip the .img.xz (the slowest output)")
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
	f, err := resolve.Lock(ctx, a, b, nil)
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
	epoch := int64(0)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a Unix time", s)
		}
		epoch = v
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
	p := progress.New(os.Stderr)
	res, err := image.Run(ctx, image.Config{
		SrcDir:   src,
		Board:    b,
		LockFile: lockPath(c, b),
		Name:     "bulkhead",
		Version:  c.version,
		Epoch:    time.Unix(epoch, 0).UTC(),
		WorkDir:  filepath.Join(src, "build", b.Name),
		OutDir:   filepath.Join(src, "deploy", b.Name),
		Cache:    cch,
		Sources:  srcs,
		Compress: !c.noXZ,
		Log:      log,
		Progress: func(e image.Event) { p.Report(e.Phase, e.Item, e.Done, e.Total) },
	})
	p.Done()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "builder: %s built in %s\n  %s\n", b.Name, res.Took.Round(100*time.Millisecond), res.Image)
	return res, nil
}
