package bootloader

import (
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"strings"
	"text/template"
)

// Paths inside a root slot (docs/architecture.md, "Root slot contents").
const (
	KernelPath = "/boot/vmlinuz"
	InitrdPath = "/boot/initrd.img"
)

// UBootBootArgsFile is the optional device-configuration file on the boot
// partition (FAT, partition 1) whose bh_extra_args line is appended to the
// kernel command line, e.g. "bh_extra_args=maxcpus=1 bulkhead.watchdog=0".
// The script reads it with `env import -t -r`, so it is plain text with
// LF or CRLF line ends, and lines starting with '#' are comments; a GRUB
// environment block holding bh_extra_args is therefore valid too, and one
// file format serves both bootloaders.
const UBootBootArgsFile = "bulkhead/bootargs.env"

// NoSlotResetDelay is how many seconds the boot scripts wait, with the
// reason on the console, before they reset the board when neither slot's
// kernel could be loaded or started. They never return to the firmware's
// or bootloader's other boot sources (USB, network boot, a prompt).
const NoSlotResetDelay = 10

// UBootParams are the board's inputs to UBootScript. Every field is data
// from the board definition; nothing here is computed at boot.
type UBootParams struct {
	// Console holds console= values, e.g. "ttyS1,115200" (raspberrypi3,
	// mini UART) or "ttyAMA0,115200".
	Console []string
	// Args are further kernel arguments of the board, e.g. "rootwait".
	Args []string

	// BootCmd is "booti" (arm64 Image, optionally gzip-compressed) or
	// "bootz" (32-bit ARM zImage).
	BootCmd string
	// KernelAddr, RamdiskAddr and FDTAddr are load addresses: a hex
	// literal ("0x00080000") or a U-Boot variable ("${kernel_addr_r}").
	KernelAddr, RamdiskAddr, FDTAddr string
	// KernelCompAddr, with booti, is where U-Boot decompresses a gzipped
	// Image (kernel_comp_addr_r); booti refuses a compressed Image without
	// kernel_comp_addr_r and kernel_comp_size (cmd/booti.c). Empty: the
	// kernel is not compressed. The region must hold the uncompressed Image
	// (about 33 MB for Debian's arm64 kernel) without overlapping the
	// ramdisk or the device tree.
	KernelCompAddr string
	// ScratchAddr is 4 KiB or more of free RAM for the boot-state blocks
	// and bootargs.env. It must not overlap ${scriptaddr}, where the script
	// itself runs; the ramdisk address is fine because the ramdisk is
	// loaded after the state has been read and saved.
	ScratchAddr string
	// FDTFile is the device tree inside the slot, e.g.
	// "/boot/dtbs/broadcom/bcm2837-rpi-3-b.dtb". Empty: pass the device
	// tree U-Boot itself runs with, ${fdtcontroladdr}, which is the one the
	// Raspberry Pi firmware or QEMU provided.
	FDTFile string

	// Disk is bulkhead.disk: "mbr:0x1a2b3c4d" or "gpt:<guid>".
	Disk string
	// BootPart, PartA and PartB are partition numbers: 1, 2 and 3
	// (docs/architecture.md).
	BootPart, PartA, PartB int
	// StateOffsetA and StateOffsetB are the byte offsets of the two copies:
	// UBootStateOffsetA and UBootStateOffsetB.
	StateOffsetA, StateOffsetB int64
}

//go:embed uboot.hush.tmpl
var ubootTemplate string

var ubootTmpl = template.Must(template.New("uboot").Funcs(template.FuncMap{"dict": dict}).Parse(ubootTemplate))

// dict builds a map from alternating keys and values, so a template can call
// a sub-template with several named arguments.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, fmt.Errorf("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

var (
	// U-Boot reparses a command after substituting its variables
	// (common/cli_hush.c), so nothing that hush would interpret may reach
	// the script from the board data: arguments are restricted to a safe
	// alphabet that covers console names, key=value pairs and paths.
	kernelArgRE = regexp.MustCompile(`^[A-Za-z0-9_.,:=/+@%-]+$`)
	ubootAddrRE = regexp.MustCompile(`^(0x[0-9a-fA-F]{1,16}|\$\{[a-z_][a-z0-9_]*\})$`)
	slotPathRE  = regexp.MustCompile(`^(/[A-Za-z0-9_.+,-]+)+$`)
	diskIDRE    = regexp.MustCompile(`^(mbr:0x[0-9a-f]{8}|gpt:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$`)
)

func (p UBootParams) validate() error {
	if err := checkArgs(p.Console, p.Args); err != nil {
		return err
	}
	switch p.BootCmd {
	case "booti":
	case "bootz":
		if p.KernelCompAddr != "" {
			return fmt.Errorf("KernelCompAddr %q: only booti decompresses kernels", p.KernelCompAddr)
		}
	default:
		return fmt.Errorf("BootCmd %q: want booti or bootz", p.BootCmd)
	}
	addrs := map[string]string{"KernelAddr": p.KernelAddr, "RamdiskAddr": p.RamdiskAddr, "ScratchAddr": p.ScratchAddr}
	if p.FDTFile != "" {
		addrs["FDTAddr"] = p.FDTAddr
	}
	if p.KernelCompAddr != "" {
		addrs["KernelCompAddr"] = p.KernelCompAddr
	}
	for k, v := range addrs {
		if !ubootAddrRE.MatchString(v) {
			return fmt.Errorf("%s %q: want a hex address like 0x02700000 or a variable like ${ramdisk_addr_r}", k, v)
		}
	}
	if p.FDTFile != "" && !slotPathRE.MatchString(p.FDTFile) {
		return fmt.Errorf("FDTFile %q: want an absolute path of [A-Za-z0-9_.+,-] components", p.FDTFile)
	}
	if err := checkDisk(p.Disk); err != nil {
		return err
	}
	if err := checkParts(p.BootPart, p.PartA, p.PartB); err != nil {
		return err
	}
	return Bootstate{Format: "uboot", OffA: p.StateOffsetA, OffB: p.StateOffsetB, Size: UBootEnvSize}.Validate()
}

func checkArgs(console, args []string) error {
	for _, c := range console {
		if !kernelArgRE.MatchString(c) {
			return fmt.Errorf("console %q: want characters from [A-Za-z0-9_.,:=/+@%%-]", c)
		}
	}
	for _, a := range args {
		if !kernelArgRE.MatchString(a) {
			return fmt.Errorf("kernel argument %q: want characters from [A-Za-z0-9_.,:=/+@%%-]", a)
		}
		if strings.HasPrefix(a, "bulkhead.slot=") || strings.HasPrefix(a, "bulkhead.trial=") ||
			strings.HasPrefix(a, "bulkhead.disk=") || strings.HasPrefix(a, "bulkhead.bootstate=") {
			return fmt.Errorf("kernel argument %q: the boot script sets it", a)
		}
	}
	return nil
}

func checkDisk(d string) error {
	if !diskIDRE.MatchString(d) {
		return fmt.Errorf("disk %q: want mbr:0x<8 lowercase hex digits> or gpt:<lowercase guid>", d)
	}
	return nil
}

func checkParts(boot, a, b int) error {
	for _, n := range []int{boot, a, b} {
		if n < 1 || n > 128 {
			return fmt.Errorf("partition number %d: want 1..128", n)
		}
	}
	if boot == a || boot == b || a == b {
		return fmt.Errorf("partition numbers boot=%d a=%d b=%d must differ", boot, a, b)
	}
	return nil
}

func kernelArgs(console, args []string) string {
	var f []string
	for _, c := range console {
		f = append(f, "console="+c)
	}
	return strings.Join(append(f, args...), " ")
}

// UBootScript returns the boot script (U-Boot hush) that applies Decide to
// the boot state on the disk U-Boot's distro boot found it on and boots the
// chosen slot's kernel, initramfs and device tree, falling back to the other
// slot when loading or starting them fails. Wrap it with BootScr.
func UBootScript(p UBootParams) (string, error) {
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("u-boot script: %w", err)
	}
	data := map[string]any{
		"P":          p,
		"LBAA":       fmt.Sprintf("0x%x", p.StateOffsetA/sectorSize),
		"LBAB":       fmt.Sprintf("0x%x", p.StateOffsetB/sectorSize),
		"Blocks":     UBootEnvSize / sectorSize,
		"Size":       fmt.Sprintf("0x%x", UBootEnvSize),
		"Vars":       strings.Join(uBootVars, " "),
		"Args":       kernelArgs(p.Console, p.Args),
		"Bootstate":  Bootstate{Format: "uboot", OffA: p.StateOffsetA, OffB: p.StateOffsetB, Size: UBootEnvSize}.String(),
		"BootArgs":   UBootBootArgsFile,
		"KernelPath": KernelPath,
		"InitrdPath": InitrdPath,
		"ResetDelay": NoSlotResetDelay,
	}
	var b bytes.Buffer
	if err := ubootTmpl.Execute(&b, data); err != nil {
		return "", fmt.Errorf("u-boot script: %w", err)
	}
	return b.String(), nil
}
