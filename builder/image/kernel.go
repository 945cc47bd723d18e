package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulkhead-os/bulkhead/builder/kernel"
)

type moduleFile struct {
	rel string // relative to lib/modules/<kver>/
	src string
}

type dtbFile struct {
	rel string // relative to the slot's /boot/dtbs/
	src string
}

// kernel picks the kernel image, the initramfs modules (with their
// dependency closure, computed from the modules' own .modinfo since Debian's
// package ships no modules.dep) and the board's device trees.
func (b *Build) kernel(ctx context.Context) error {
	tree := b.trees[b.kernelPkg]
	if tree == "" {
		return fmt.Errorf("no kernel package pinned for %s in %s: run \"make lock BOARD=%s\"", b.cfg.Board.Kernel.Package, b.cfg.LockFile, b.cfg.Board.Name)
	}
	k, err := kernel.Open(tree)
	if err != nil {
		return err
	}
	b.kernelVersion = k.Version
	want := append(append([]string(nil), b.cfg.Board.Kernel.InitramfsModules...), b.cfg.Board.Watchdog.Modules...)
	mods, err := k.Closure(want)
	if err != nil {
		return fmt.Errorf("initramfs modules of %s: %w", b.cfg.Board.File, err)
	}
	b.modules = nil
	for _, m := range mods {
		b.modules = append(b.modules, moduleFile{rel: m.Path, src: filepath.Join(k.ModulesDir, m.Path)})
	}
	b.rootModules = nil
	seen := map[string]bool{}
	for _, name := range append(append([]string(nil), b.os.Modules...), b.cfg.Board.Kernel.RootfsModules...) {
		mods, err := k.Closure([]string{name})
		if err != nil {
			// Flavours differ (the rpi kernel has no PC network drivers).
			b.log.Debug("module not in this kernel", "module", name, "err", err)
			continue
		}
		for _, m := range mods {
			if !seen[m.Path] {
				seen[m.Path] = true
				b.rootModules = append(b.rootModules, moduleFile{rel: m.Path, src: filepath.Join(k.ModulesDir, m.Path)})
			}
		}
	}
	dtbs, err := k.DTBs(b.cfg.Board.Kernel.DTBs)
	if err != nil {
		return fmt.Errorf("dtbs of %s: %w", b.cfg.Board.File, err)
	}
	b.dtbs = nil
	for _, d := range dtbs {
		b.dtbs = append(b.dtbs, dtbFile{rel: d, src: filepath.Join(k.DTBDir, d)})
	}
	b.kernelImage = k.Image
	if b.cfg.Board.Kernel.Compress == "gzip" {
		// Compressing 33 MB at the best level takes seconds: do it once per
		// kernel package, in the cache.
		pin := b.pinOf(b.kernelPkg)
		dir, ok := b.cfg.Cache.Dir("vmlinuz-gz", pin.SHA256)
		if !ok {
			dir, err = b.cfg.Cache.PutDir("vmlinuz-gz", pin.SHA256, func(tmp string) error {
				return k.GzipImage(filepath.Join(tmp, "vmlinuz.gz"))
			})
			if err != nil {
				return err
			}
		}
		b.kernelImage = filepath.Join(dir, "vmlinuz.gz")
	}
	if _, err := os.Stat(b.kernelImage); err != nil {
		return fmt.Errorf("kernel image: %w", err)
	}
	return nil
}
