// Package resolve turns a board's Debian package requests into the pins of a
// lock file. It owns the meaning of the requests (kernel meta packages,
// artefact packages that are unpacked but never installed, root filesystem
// packages installed with their dependency closure); the archive protocol
// belongs to builder/debian and the file format to builder/lock.
package resolve

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/lock"
)

// Release is the Debian release every board is built from.
const Release = "bookworm"

// Roles of a pinned package.
const (
	RoleKernel   = "kernel"
	RoleArtifact = "artifact"
	RoleRootfs   = "rootfs"
)

// Inputs lists what a board asks for, in the lock file's notation
// (role=name:arch), sorted. rootfs are extra packages for the root filesystem.
func Inputs(b *board.Board, rootfs []string) []string {
	in := []string{RoleKernel + "=" + b.Kernel.Package + ":" + b.Arch}
	for _, p := range b.Packages {
		in = append(in, RoleArtifact+"="+p.Name+":"+b.Arch)
	}
	for _, p := range rootfs {
		in = append(in, RoleRootfs+"="+p+":"+b.Arch)
	}
	sort.Strings(in)
	return in
}

// Roles tells, for every pinned package, why the board needs it.
func Roles(b *board.Board, f *lock.File) map[string]string {
	artifacts := map[string]bool{}
	for _, p := range b.Packages {
		artifacts[p.Name] = true
	}
	roles := map[string]string{}
	for _, p := range f.Packages {
		switch {
		case artifacts[p.Name]:
			roles[p.Name] = RoleArtifact
		case strings.HasPrefix(p.Name, "linux-image-"):
			roles[p.Name] = RoleKernel
		default:
			roles[p.Name] = RoleRootfs
		}
	}
	return roles
}

// Components lists the archive components a board needs.
func Components(b *board.Board) []string {
	set := map[string]bool{"main": true}
	for _, p := range b.Packages {
		if p.Component != "" {
			set[p.Component] = true
		}
	}
	var out []string
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Lock resolves a board's requests against the archive's current indexes.
// rootfs packages are pinned with their dependency closure, minus exclude.
func Lock(ctx context.Context, a *debian.Archive, b *board.Board, rootfs, exclude []string) (*lock.File, error) {
	ix, err := a.Index(ctx, b.Arch, Components(b))
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", b.Arch, err)
	}
	var pkgs []*debian.Package
	// The kernel meta package (linux-image-arm64) only depends on the
	// versioned image package: pin that one, not the meta package's closure
	// (kmod, initramfs-tools, ...), which the image does not need.
	meta, err := ix.Resolve(b.Kernel.Package)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	kernel := meta
	for _, dep := range strings.Split(meta.Depends, ",") {
		name := strings.TrimSpace(strings.SplitN(strings.TrimSpace(dep), " ", 2)[0])
		if strings.HasPrefix(name, "linux-image-") {
			if kernel, err = ix.Resolve(name); err != nil {
				return nil, fmt.Errorf("kernel %s: %w", b.Kernel.Package, err)
			}
			break
		}
	}
	pkgs = append(pkgs, kernel)
	for _, p := range b.Packages {
		pkg, err := ix.Resolve(p.Name)
		if err != nil {
			return nil, fmt.Errorf("packages: %w", err)
		}
		pkgs = append(pkgs, pkg)
	}
	if len(rootfs) > 0 {
		skip := map[string]bool{}
		for _, e := range exclude {
			skip[e] = true
		}
		closure, err := ix.Closure(rootfs, skip)
		if err != nil {
			return nil, fmt.Errorf("root filesystem packages: %w", err)
		}
		pkgs = append(pkgs, closure...)
	}
	f := &lock.File{Board: b.Name, Release: Release, Inputs: Inputs(b, rootfs)}
	seen := map[string]bool{}
	for _, p := range pkgs {
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		f.Packages = append(f.Packages, lock.Pin{
			Name: p.Name, Version: p.Version, Arch: p.Architecture, SHA256: p.SHA256, Size: p.Size,
			Filename: p.Filename, Suite: p.Suite, Component: p.Component, Source: p.Source,
		})
	}
	sort.Slice(f.Packages, func(i, j int) bool { return f.Packages[i].Name < f.Packages[j].Name })
	return f, nil
}
