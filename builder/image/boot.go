package image

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/builder/fat"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
)

// boot writes the boot partition: firmware and bootloader files from the
// board's packages, and the bootloader configuration that reads the boot
// state and starts the chosen slot. It also prepares the initial boot state
// (slot a committed).
func (b *Build) boot(ctx context.Context) error {
	bd := b.cfg.Board
	var files []fat.File
	switch bd.Bootloader.Kind {
	case "uboot":
		script, err := bootloader.UBootScript(b.ubootParams())
		if err != nil {
			return err
		}
		arch := map[string]string{"arm64": "arm64", "armhf": "arm", "armel": "arm"}[bd.Arch]
		scr, err := bootloader.BootScr(script, arch, b.cfg.Epoch)
		if err != nil {
			return err
		}
		files = append(files, fat.File{Path: "boot.scr", Data: scr})
		a, bb, err := bootloader.Initial(bootloader.UBootEnv{}, bootloader.SlotA)
		if err != nil {
			return err
		}
		b.rawWrites = []parttable.Write{{Off: StateCopyA, Data: a}, {Off: StateCopyB, Data: bb}}
	case "grub":
		return b.bootGrub(ctx)
	}
	more, err := b.bootFiles()
	if err != nil {
		return err
	}
	files = append(files, more...)
	_, err = b.writeFAT(files)
	return err
}

// volumeID derives the FAT volume serial from the image identity.
func volumeID(seed string) uint32 {
	sum := sha256.Sum256([]byte("fat-volume-id/" + seed))
	return binary.LittleEndian.Uint32(sum[:4])
}

// bootGrub writes the ESP. The two state files come first so the FAT writer
// gives them the lowest clusters, independent of everything after them; the
// FAT is written twice because grub.cfg passes their disk offsets to Linux.
func (b *Build) bootGrub(ctx context.Context) error {
	a, bb, err := bootloader.Initial(bootloader.GrubEnv{}, bootloader.SlotA)
	if err != nil {
		return err
	}
	more, err := b.bootFiles()
	if err != nil {
		return err
	}
	state := []fat.File{{Path: bootloader.GrubStateFileA, Data: a}, {Path: bootloader.GrubStateFileB, Data: bb}}
	p := bootloader.GrubParams{
		Console: []string{b.cfg.Board.Console},
		Args:    b.kernelArgs(),
		Disk:    b.diskArg(),
		PartA:   2,
		PartB:   3,
	}
	var offA, offB int64
	for pass := 0; pass < 2; pass++ {
		p.StateOffsetA, p.StateOffsetB = offA, offB
		if pass == 0 {
			// Any valid offsets: only the file positions matter here.
			p.StateOffsetA, p.StateOffsetB = StateCopyA, StateCopyB
		}
		cfg, err := bootloader.GrubConfig(p)
		if err != nil {
			return err
		}
		files := append(append(append([]fat.File(nil), state...), more...), fat.File{Path: bootloader.GrubConfigFile, Data: []byte(cfg)})
		ext, err := b.writeFAT(files)
		if err != nil {
			return err
		}
		ea, eb := ext[bootloader.GrubStateFileA], ext[bootloader.GrubStateFileB]
		if ea.Length != bootloader.GrubEnvSize || eb.Length != bootloader.GrubEnvSize {
			return fmt.Errorf("boot state files are not %d contiguous bytes: %+v %+v", bootloader.GrubEnvSize, ea, eb)
		}
		if pass == 1 && (offA != Align+ea.Offset || offB != Align+eb.Offset) {
			return fmt.Errorf("boot state files moved between the two passes of the ESP")
		}
		offA, offB = Align+ea.Offset, Align+eb.Offset
	}
	return nil
}

func (b *Build) kernelArgs() []string {
	// quiet: the console is a machine interface too (the ready line);
	// kernel warnings and errors still show. panic=10 turns a kernel panic
	// into a reboot, which the bootloader counts as a failed trial.
	args := []string{"quiet", "panic=10"}
	if b.cfg.Board.Table == "gpt" {
		// Accept the backup GPT when a power cut tore the primary during the
		// first boot's growth of the data partition (block/partitions/efi.c
		// ignores the backup without it).
		args = append(args, "gpt")
	}
	if c := strings.TrimSpace(b.cfg.Board.Kernel.Cmdline); c != "" {
		args = append(args, strings.Fields(c)...)
	}
	return args
}

func (b *Build) ubootParams() bootloader.UBootParams {
	bd := b.cfg.Board
	ad := bd.Bootloader.Addresses
	p := bootloader.UBootParams{
		Console:        []string{bd.Console},
		Args:           b.kernelArgs(),
		BootCmd:        bd.Bootloader.Boot,
		KernelAddr:     ad["kernel"],
		RamdiskAddr:    ad["ramdisk"],
		FDTAddr:        ad["fdt"],
		KernelCompAddr: ad["kernel_comp"],
		ScratchAddr:    ad["ramdisk"],
		Disk:           b.diskArg(),
		BootPart:       1,
		PartA:          2,
		PartB:          3,
		StateOffsetA:   StateCopyA,
		StateOffsetB:   StateCopyB,
	}
	if bd.Kernel.Compress != "gzip" {
		p.KernelCompAddr = ""
	}
	if bd.Bootloader.DTB != "" {
		p.FDTFile = "/boot/dtbs/" + bd.Bootloader.DTB
	}
	return p
}

// bootFiles are the board's firmware and bootloader files and config.txt.
func (b *Build) bootFiles() ([]fat.File, error) {
	var files []fat.File
	for _, f := range b.cfg.Board.BootFiles {
		tree, ok := b.trees[f.Package]
		if !ok {
			return nil, fmt.Errorf("boot file %s: package %s is not pinned in %s: run \"make lock BOARD=%s\"", f.Dst, f.Package, b.cfg.LockFile, b.cfg.Board.Name)
		}
		src := filepath.Join(tree, f.Src)
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("boot file %s from %s: %w (check boot_files in %s)", f.Dst, f.Package, err, b.cfg.Board.File)
		}
		files = append(files, fat.File{Path: f.Dst, Data: data})
	}
	if b.cfg.Board.ConfigTxt != "" {
		files = append(files, fat.File{Path: "config.txt", Data: []byte(b.cfg.Board.ConfigTxt)})
	}
	return files, nil
}

func (b *Build) writeFAT(files []fat.File) (map[string]fat.Extent, error) {
	b.bootImage = b.work("boot.vfat")
	os.Remove(b.bootImage)
	f, err := os.Create(b.bootImage)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(BootSize); err != nil {
		return nil, err
	}
	ext, err := fat.Build(f, BootSize, fat.Options{Label: "BULKHEAD", VolumeID: volumeID(b.seed()), Time: b.cfg.Epoch, HiddenSectors: uint32(Align / 512)}, files)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	return ext, f.Close()
}
