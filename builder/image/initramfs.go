package image

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/bulkhead-os/bulkhead/builder/initramfs"
)

// initramfsConfig is /etc/bulkhead/initramfs.json, read by rootfs/cmd/initramfs.
type initramfsConfig struct {
	Kernel   string          `json:"kernel"`
	Board    string          `json:"board"`
	Modules  []string        `json:"modules"`
	Watchdog *watchdogConfig `json:"watchdog,omitempty"`
}

type watchdogConfig struct {
	// Module is armed after it is loaded. Boards may list several drivers
	// (one per chipset); the last one is named so that every driver is
	// loaded before /dev/watchdog is opened.
	Module  string `json:"module"`
	Device  string `json:"device"`
	Timeout int    `json:"timeout"`
}

// initramfs writes the gzip newc archive the bootloader loads next to the
// kernel: the initramfs /init, its configuration and the modules it loads.
func (b *Build) initramfs(ctx context.Context) error {
	bd := b.cfg.Board
	conf := initramfsConfig{
		Kernel: b.kernelVersion,
		Board:  bd.Name,
	}
	if n := len(bd.Watchdog.Modules); n > 0 {
		conf.Watchdog = &watchdogConfig{Module: bd.Watchdog.Modules[n-1], Device: bd.Watchdog.Device, Timeout: bd.Watchdog.Timeout}
	}
	modDir := path.Join("lib/modules", b.kernelVersion)
	files := []initramfs.File{
		{Path: "init", Mode: 0o755, Source: filepath.Join(b.binDir, "initramfs-init")},
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "newroot", "etc/bulkhead"} {
		files = append(files, initramfs.File{Path: d, Mode: os.ModeDir | 0o755})
	}
	for _, m := range b.modules {
		conf.Modules = append(conf.Modules, m.rel)
		files = append(files, initramfs.File{Path: path.Join(modDir, m.rel), Mode: 0o644, Source: m.src})
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	files = append(files, initramfs.File{Path: "etc/bulkhead/initramfs.json", Mode: 0o644, Data: append(data, '\n')})

	b.initrd = b.work("initrd.img")
	f, err := os.Create(b.initrd)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := initramfs.Write(f, files, initramfs.Options{Time: b.cfg.Epoch, Compression: "gzip"}); err != nil {
		f.Close()
		return fmt.Errorf("initramfs: %w", err)
	}
	return f.Close()
}
