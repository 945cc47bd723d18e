package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bulkhead-os/bulkhead/builder/board"
)

// Partition offsets of the fixed layout (docs/architecture.md).
const (
	bootOffset  = 4 << 20
	slotAOffset = bootOffset + 256<<20
)

func copySparse(src, dst string) error {
	out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %v: %s", src, err, out)
	}
	return nil
}

func growToPowerOfTwo(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	size := int64(1)
	for size < fi.Size() {
		size <<= 1
	}
	return os.Truncate(path, size)
}

// writeBootargs stores the user-editable extra kernel arguments on the boot
// partition of the copy, the way a user would edit them on their PC.
func writeBootargs(ctx context.Context, disk string, b *board.Board, args string) error {
	img := fmt.Sprintf("%s@@%d", disk, bootOffset)
	var dir, content string
	if b.Bootloader.Kind == "grub" {
		dir = "::EFI/bulkhead"
		content = grubEnv(map[string]string{"bh_extra_args": args})
	} else {
		dir = "::bulkhead"
		content = "bh_extra_args=" + args + "\n"
	}
	tmp, err := os.CreateTemp("", "bootargs-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tmp.WriteString(content)
	tmp.Close()
	// mmd fails when the directory exists; that is fine.
	exec.CommandContext(ctx, "mmd", "-i", img, dir).Run()
	out, err := exec.CommandContext(ctx, "mcopy", "-o", "-i", img, tmp.Name(), dir+"/bootargs.env").CombinedOutput()
	if err != nil {
		return fmt.Errorf("write bootargs.env into the test image (mtools): %v: %s", err, out)
	}
	return nil
}

// grubEnv formats a GRUB environment block (1024 bytes, '#' padded).
func grubEnv(vars map[string]string) string {
	var s strings.Builder
	s.WriteString("# GRUB Environment Block\n")
	for k, v := range vars {
		s.WriteString(k + "=" + v + "\n")
	}
	for s.Len() < 1024 {
		s.WriteByte('#')
	}
	return s.String()
}

// applyDTBFixup edits the device tree inside slot a of the copy.
func applyDTBFixup(ctx context.Context, disk, work string, b *board.Board, fix string) error {
	switch fix {
	case "drop-wdt-asb":
	default:
		return fmt.Errorf("%s: unknown qemu.dtb_fixups entry %q", b.File, fix)
	}
	fs := fmt.Sprintf("%s?offset=%d", disk, slotAOffset)
	inImage := "/boot/dtbs/" + b.Bootloader.DTB
	local := filepath.Join(work, filepath.Base(b.Bootloader.DTB))
	os.Remove(local)
	if out, err := exec.CommandContext(ctx, "debugfs", "-R", "dump "+inImage+" "+local, fs).CombinedOutput(); err != nil {
		return fmt.Errorf("read %s from the test image: %v: %s", inImage, err, out)
	}
	// The armel kernel panics in bcm2835_power_probe under QEMU when the
	// watchdog node names the "asb" register block QEMU does not emulate.
	node, err := exec.CommandContext(ctx, "fdtget", "-t", "x", local, "/soc/watchdog@7e100000", "reg").Output()
	if err != nil {
		return fmt.Errorf("fdtget watchdog reg (device-tree-compiler): %w", err)
	}
	reg := strings.Fields(string(node))
	if len(reg) >= 4 {
		args := append([]string{"-t", "x", local, "/soc/watchdog@7e100000", "reg"}, reg[:2]...)
		if out, err := exec.CommandContext(ctx, "fdtput", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("fdtput: %v: %s", err, out)
		}
		exec.CommandContext(ctx, "fdtput", "-t", "s", local, "/soc/watchdog@7e100000", "reg-names", "pm").Run()
	}
	script := fmt.Sprintf("cd %s\nrm %s\nwrite %s %s\n", filepath.Dir(inImage), filepath.Base(inImage), local, filepath.Base(inImage))
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", fs)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("write patched %s into the test image: %v: %s", inImage, err, out)
	}
	return nil
}
