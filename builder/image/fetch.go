package image

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/lock"
	"github.com/bulkhead-os/bulkhead/builder/resolve"
)

// pkgInput is one pinned Debian package and what the build uses it for.
type pkgInput struct {
	pin  lock.Pin
	role string // kernel, artifact, rootfs
	deb  string // path of the .deb in the cache
}

// fetch checks the lock file against the board, downloads what the cache
// lacks (verified by SHA-256) and unpacks every package once into the cache.
// With a warm cache it reads no index and opens no connection.
func (b *Build) fetch(ctx context.Context) error {
	lf, err := lock.Read(b.cfg.LockFile)
	if err != nil {
		return err
	}
	inputs := resolve.Inputs(b.cfg.Board, b.os.Packages)
	if err := lf.Check(inputs); err != nil {
		return err
	}
	roles := resolve.Roles(b.cfg.Board, lf)
	b.kernelPkg = ""
	var archive *debian.Archive
	b.trees = map[string]string{}
	pins := append([]lock.Pin(nil), lf.Packages...)
	sort.Slice(pins, func(i, j int) bool { return pins[i].Name < pins[j].Name })
	for _, pin := range pins {
		path, ok := b.cfg.Cache.Path(pin.SHA256)
		if !ok {
			if archive == nil {
				archive, err = debian.Open(ctx, debian.Config{
					Sources: b.cfg.Sources,
					Cache:   b.cfg.Cache,
					Progress: func(e debian.Event) {
						b.cfg.Progress(Event{Phase: "download", Item: e.Name, Done: e.Done, Total: e.Total})
					},
				})
				if err != nil {
					return err
				}
			}
			path, err = archive.Fetch(ctx, pin)
			if err != nil {
				return err
			}
		}
		tree, err := b.unpack(pin, path)
		if err != nil {
			return err
		}
		b.trees[pin.Name] = tree
		if roles[pin.Name] == resolve.RoleKernel {
			b.kernelPkg = pin.Name
		}
		b.pins = append(b.pins, pkgInput{pin: pin, role: roles[pin.Name], deb: path})
	}
	return nil
}

// unpack extracts a .deb once into the cache, keyed by its digest. A cached
// .deb whose digest no longer matches is caught here before it is used.
func (b *Build) unpack(pin lock.Pin, debPath string) (string, error) {
	if dir, ok := b.cfg.Cache.Dir("deb", pin.SHA256); ok {
		return dir, nil
	}
	if err := b.cfg.Cache.Verify(pin.SHA256); err != nil {
		return "", fmt.Errorf("%s %s: %w", pin.Name, pin.Version, err)
	}
	b.cfg.Progress(Event{Phase: "unpack", Item: pin.Name})
	return b.cfg.Cache.PutDir("deb", pin.SHA256, func(tmp string) error {
		_, err := debian.Extract(debPath, tmp, nil)
		return err
	})
}

// tree returns the unpacked tree of a package named in the board file.
func (b *Build) tree(name string) (string, error) {
	if t, ok := b.trees[name]; ok {
		return t, nil
	}
	return "", fmt.Errorf("package %s is not in %s: run \"make lock BOARD=%s\"", name, b.cfg.LockFile, b.cfg.Board.Name)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (b *Build) pinOf(name string) lock.Pin {
	for _, in := range b.pins {
		if in.pin.Name == name {
			return in.pin
		}
	}
	return lock.Pin{}
}
