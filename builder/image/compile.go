package image

import (
	"context"

	"github.com/bulkhead-os/bulkhead/builder/compile"
)

// Programs are the Go programs of the device, by their place in the image.
var programs = []struct {
	pkg, name, dest string
}{
	{"./rootfs/cmd/initramfs", "initramfs-init", ""}, // goes into the initramfs only
	{"./rootfs/cmd/init", "init", "/sbin/init"},
	{"./bootloader/cmd/bulkhead-boot", "bulkhead-boot", "/usr/bin/bulkhead-boot"},
	{"./supervisor/cmd/supervisor", "supervisor", "/usr/bin/supervisor"},
	{"./supervisor/cmd/bulkheadctl", "bulkheadctl", "/usr/bin/bulkheadctl"},
	{"./engine/cmd/engine", "engine", "/usr/bin/engine"},
}

// compile cross-compiles the device programs for the board.
func (b *Build) compile(ctx context.Context) error {
	b.binDir = b.work("bin")
	var progs []compile.Program
	for _, p := range programs {
		progs = append(progs, compile.Program{Package: p.pkg, Name: p.name})
	}
	b.cfg.Progress(Event{Phase: "compile", Item: b.cfg.Board.Go.Arch + b.cfg.Board.GOARM()})
	return compile.Build(ctx, b.cfg.SrcDir, b.binDir, compile.Target{GOARCH: b.cfg.Board.Go.Arch, GOARM: b.cfg.Board.GOARM()}, progs)
}
