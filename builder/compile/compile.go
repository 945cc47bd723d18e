// Package compile cross-compiles Bulkhead's Go programs for a board.
//
// It owns the Go toolchain invocation: static (CGO_ENABLED=0), -trimpath and
// an empty build ID so that the same sources give the same bytes, and the Go
// build cache makes an unchanged rebuild nearly free. It must not decide which
// programs go where in the image; the caller does.
package compile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Target is a Go cross-compilation target.
type Target struct {
	GOARCH string
	GOARM  string
}

// Program is one main package to build.
type Program struct {
	// Package is the import path relative to the module root, e.g. "./rootfs/cmd/init".
	Package string
	// Name is the output file name.
	Name string
}

// Build compiles programs from the module rooted at srcDir into outDir.
// All programs are built by one `go build` so the toolchain compiles shared
// packages once and in parallel.
func Build(ctx context.Context, srcDir, outDir string, t Target, progs []Program) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return errors.New("go not found on PATH: install Go 1.26 or newer (https://go.dev/doc/install) and run the build again")
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	// `go build -o dir/ a b` names outputs after the package directories, so
	// build each program into a private directory per name when they differ.
	tmp, err := os.MkdirTemp(outDir, ".build-")
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	defer os.RemoveAll(tmp)

	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", tmp + string(os.PathSeparator)}
	for _, p := range progs {
		args = append(args, p.Package)
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+t.GOARCH, "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	if t.GOARM != "" {
		cmd.Env = append(cmd.Env, "GOARM="+t.GOARM)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("compile %s for %s%s: %v\n%s", names(progs), t.GOARCH, t.GOARM, err, strings.TrimSpace(stderr.String()))
	}
	for _, p := range progs {
		built := filepath.Join(tmp, filepath.Base(p.Package))
		if err := os.Rename(built, filepath.Join(outDir, p.Name)); err != nil {
			return fmt.Errorf("compile %s: %w", p.Package, err)
		}
	}
	return nil
}

func names(progs []Program) string {
	var s []string
	for _, p := range progs {
		s = append(s, p.Package)
	}
	return strings.Join(s, " ")
}
