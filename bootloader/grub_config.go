package bootloader

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"
	"text/template"
)

// Files on the ESP of GRUB boards (docs/architecture.md, "Disk layout"). The
// state files are preallocated, contiguous and GrubEnvSize bytes long; GRUB's
// save_env rewrites only their data sectors (it refuses sparse files and
// never changes a file's size), and Linux writes the same sectors through
// the block device.
const (
	GrubStateFileA    = "EFI/bulkhead/state-a.env"
	GrubStateFileB    = "EFI/bulkhead/state-b.env"
	GrubBootArgsFile  = "EFI/bulkhead/bootargs.env"
	GrubConfigFile    = "EFI/debian/grub.cfg"
	grubDefaultSerial = 115200
)

// GrubParams are the board's inputs to GrubConfig.
type GrubParams struct {
	// Console holds console= values, e.g. "ttyS0,115200".
	Console []string
	// Args are further kernel arguments of the board.
	Args []string
	// SerialUnit and SerialSpeed configure GRUB's own serial terminal
	// (`serial --unit=<unit> --speed=<speed>`); speed 0 means 115200.
	SerialUnit, SerialSpeed int

	// Disk is bulkhead.disk, "gpt:<guid>" on x86_64 (or "mbr:0x<sig>").
	Disk string
	// PartA and PartB are the root slots' partition numbers: 2 and 3.
	PartA, PartB int
	// StateOffsetA and StateOffsetB are the byte offsets on the disk of the
	// data of GrubStateFileA and GrubStateFileB, as the builder placed them.
	// GRUB does not need them (it goes through the FAT driver); they are
	// passed to Linux in bulkhead.bootstate.
	StateOffsetA, StateOffsetB int64
}

func (p GrubParams) validate() error {
	if err := checkArgs(p.Console, p.Args); err != nil {
		return err
	}
	if p.SerialUnit < 0 || p.SerialUnit > 3 {
		return fmt.Errorf("SerialUnit %d: want 0..3", p.SerialUnit)
	}
	if p.SerialSpeed < 0 || p.SerialSpeed > 4000000 {
		return fmt.Errorf("SerialSpeed %d: want a baud rate", p.SerialSpeed)
	}
	if err := checkDisk(p.Disk); err != nil {
		return err
	}
	// Partition 1 is the ESP that grub.cfg is read from.
	if err := checkParts(1, p.PartA, p.PartB); err != nil {
		return err
	}
	return Bootstate{Format: "grub", OffA: p.StateOffsetA, OffB: p.StateOffsetB, Size: GrubEnvSize}.Validate()
}

//go:embed grub.cfg.tmpl
var grubTemplate string

var grubTmpl = template.Must(template.New("grub").Parse(grubTemplate))

// GrubConfig returns grub.cfg for Debian's monolithic grubx64.efi (GRUB
// 2.06, which reads EFI/debian/grub.cfg with $root set to the ESP). It
// applies Decide to the state files on the ESP with load_env/save_env and
// boots the chosen slot's /boot/vmlinuz and /boot/initrd.img, falling back
// to the other slot when they do not load.
func GrubConfig(p GrubParams) (string, error) {
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("grub.cfg: %w", err)
	}
	speed := p.SerialSpeed
	if speed == 0 {
		speed = grubDefaultSerial
	}
	// GRUB names partitions by scheme: (hd0,gpt2) on GPT, (hd0,msdos2) on MBR.
	scheme := "gpt"
	if strings.HasPrefix(p.Disk, "mbr:") {
		scheme = "msdos"
	}
	data := map[string]any{
		"P":          p,
		"Speed":      speed,
		"Scheme":     scheme,
		"Vars":       strings.Join(grubVars, " "),
		"CheckRE":    grubCheckPattern,
		"MaxSeq":     MaxSeq,
		"MaxTries":   MaxTries,
		"Args":       kernelArgs(p.Console, p.Args),
		"Bootstate":  Bootstate{Format: "grub", OffA: p.StateOffsetA, OffB: p.StateOffsetB, Size: GrubEnvSize}.String(),
		"FileA":      GrubStateFileA,
		"FileB":      GrubStateFileB,
		"BootArgs":   GrubBootArgsFile,
		"KernelPath": KernelPath,
		"InitrdPath": InitrdPath,
		"ResetDelay": NoSlotResetDelay,
		"Inc":        steps(0, 8, 1),
		"Dec":        steps(MaxTries, 1, -1),
		// One pass per decimal digit of MaxSeq plus one for a carry out.
		"Passes": passes(len(fmt.Sprint(MaxSeq)) + 1),
	}
	if MaxTries > 9 {
		return "", fmt.Errorf("grub.cfg: MaxTries %d does not fit the one-digit if-chain", MaxTries)
	}
	var b bytes.Buffer
	if err := grubTmpl.Execute(&b, data); err != nil {
		return "", fmt.Errorf("grub.cfg: %w", err)
	}
	return b.String(), nil
}

// steps returns the pairs {d, d+delta} for d from first to last, the arms of
// an if-chain that adds delta to one decimal digit.
func steps(first, last, delta int) [][2]int {
	var s [][2]int
	for d := first; ; d += delta {
		s = append(s, [2]int{d, d + delta})
		if d == last {
			return s
		}
	}
}

func passes(n int) string {
	f := make([]string, n)
	for i := range f {
		f[i] = fmt.Sprint(i + 1)
	}
	return strings.Join(f, " ")
}
