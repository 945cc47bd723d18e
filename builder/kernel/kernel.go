// Package kernel reads an unpacked Debian linux-image package (a tree made
// by extracting the .deb): it finds the kernel version, the boot image, the
// device trees and the modules, and computes which modules an initramfs
// needs, in load order, from the modules' own .modinfo sections.
//
// Debian's package ships modules.order and modules.builtin but no
// modules.dep (depmod runs in the package's postinst), so this package is
// the builder's depmod. It only reads the tree; it never modifies it, never
// runs tools from it and never decides which modules a board needs (the
// board file does).
package kernel

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Kernel is one kernel version inside an unpacked package tree. Paths are
// absolute (the tree joined with the package's own layout).
type Kernel struct {
	// Version is the kernel release (uname -r), e.g. "6.1.0-50-arm64".
	Version string
	// Image is the boot image, boot/vmlinuz-<Version>.
	Image string
	// DTBDir is usr/lib/linux-image-<Version>, or "" when the package ships
	// no device trees (x86).
	DTBDir string
	// ModulesDir is lib/modules/<Version> (or usr/lib/modules/<Version>).
	ModulesDir string

	tree string
	// modules maps each module name (underscores) to its path relative to
	// ModulesDir.
	modules map[string]string
	// builtin holds the names of modules compiled into the image.
	builtin map[string]bool
	// builtinAliases are the aliases of built-in modules.
	builtinAliases []alias

	mu   sync.Mutex
	info map[string]*modinfo // by path relative to ModulesDir

	aliasOnce sync.Once
	aliases   []alias
	aliasErr  error
}

// Module is a loadable module of the kernel.
type Module struct {
	// Name is the module name with underscores, as the kernel reports it.
	Name string
	// Path is relative to the kernel's lib/modules/<version>/, e.g.
	// "kernel/fs/ext4/ext4.ko"; on the device the module lives at
	// /lib/modules/<version>/<Path>.
	Path string
}

// Open reads the kernel in tree, the root of an extracted linux-image
// package. The tree must hold exactly one kernel version.
func Open(tree string) (*Kernel, error) {
	tree, err := filepath.Abs(tree)
	if err != nil {
		return nil, fmt.Errorf("kernel tree %s: %w", tree, err)
	}
	kver, modDir, err := findVersion(tree)
	if err != nil {
		return nil, err
	}
	k := &Kernel{
		Version:    kver,
		Image:      filepath.Join(tree, "boot", "vmlinuz-"+kver),
		ModulesDir: modDir,
		tree:       tree,
		info:       map[string]*modinfo{},
	}
	if fi, err := os.Stat(k.Image); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("kernel %s in %s has no boot/vmlinuz-%s: extract the linux-image-%s package (not only linux-modules) into the tree", kver, tree, kver, kver)
	}
	if fi, err := os.Stat(filepath.Join(tree, "usr", "lib", "linux-image-"+kver)); err == nil && fi.IsDir() {
		k.DTBDir = filepath.Join(tree, "usr", "lib", "linux-image-"+kver)
	}
	if err := k.indexModules(); err != nil {
		return nil, err
	}
	return k, nil
}

// findVersion returns the single kernel release found in tree and its
// modules directory.
func findVersion(tree string) (string, string, error) {
	versions := map[string]string{} // release -> modules dir
	for _, dir := range []string{"lib/modules", "usr/lib/modules"} {
		ents, err := os.ReadDir(filepath.Join(tree, dir))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				if _, dup := versions[e.Name()]; !dup {
					versions[e.Name()] = filepath.Join(tree, dir, e.Name())
				}
			}
		}
	}
	// A kernel without any module directory is still named by its image.
	if ents, err := os.ReadDir(filepath.Join(tree, "boot")); err == nil {
		for _, e := range ents {
			if v, ok := strings.CutPrefix(e.Name(), "vmlinuz-"); ok && v != "" {
				if _, seen := versions[v]; !seen {
					versions[v] = ""
				}
			}
		}
	}
	var names []string
	for v := range versions {
		names = append(names, v)
	}
	sort.Strings(names)
	switch len(names) {
	case 0:
		return "", "", fmt.Errorf("no kernel in %s: expected lib/modules/<version>/ or boot/vmlinuz-<version>; extract a linux-image package there", tree)
	case 1:
	default:
		return "", "", fmt.Errorf("%d kernel versions in %s (%s): extract exactly one linux-image package per tree", len(names), tree, strings.Join(names, ", "))
	}
	if versions[names[0]] == "" {
		return "", "", fmt.Errorf("kernel %s in %s has no lib/modules/%s/: extract the whole linux-image package, modules included", names[0], tree, names[0])
	}
	return names[0], versions[names[0]], nil
}

// DTBs returns the device trees matching globs, as paths relative to
// DTBDir (e.g. "broadcom/bcm2837-rpi-3-b.dtb"), sorted and without
// duplicates. Globs use path.Match syntax on those relative paths, so "*"
// does not cross a "/". Every glob must match at least one file: a board
// file naming a device tree the kernel lacks is an error, not a silent
// omission that would only show on the device.
func (k *Kernel) DTBs(globs []string) ([]string, error) {
	if len(globs) == 0 {
		return nil, nil
	}
	if k.DTBDir == "" {
		return nil, fmt.Errorf("kernel %s ships no device trees (no usr/lib/linux-image-%s/): remove the dtbs from the board file or use an ARM kernel package", k.Version, k.Version)
	}
	var all []string
	err := filepath.WalkDir(k.DTBDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(k.DTBDir, p)
			if err != nil {
				return err
			}
			all = append(all, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("device trees of kernel %s: %w", k.Version, err)
	}
	sort.Strings(all)
	seen := map[string]bool{}
	var out []string
	for _, g := range globs {
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("dtb pattern %q: %w", g, err)
		}
		n := 0
		for _, f := range all {
			if ok, _ := path.Match(g, f); ok {
				n++
				if !seen[f] {
					seen[f] = true
					out = append(out, f)
				}
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("no device tree of kernel %s matches %q%s", k.Version, g, suggest(path.Base(g), baseNames(all)))
		}
	}
	sort.Strings(out)
	return out, nil
}

func baseNames(paths []string) map[string]string {
	m := map[string]string{}
	for _, p := range paths {
		m[path.Base(p)] = p
	}
	return m
}
