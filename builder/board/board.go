// Package board loads and validates board definitions (boards/<name>.yaml).
//
// A board is data, not code: adding a board means adding a file. This package
// owns the schema and its validation; it must not fetch, build or write
// anything.
package board

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Board describes one target machine.
type Board struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Arch is the Debian architecture (arm64, armhf, armel, amd64).
	Arch string   `yaml:"arch"`
	Go   GoTarget `yaml:"go"`
	// Table is the partition table: "mbr" (Raspberry Pi boot ROMs need it) or "gpt".
	Table string `yaml:"table"`
	// Console is the kernel console, e.g. "ttyS1,115200".
	Console    string       `yaml:"console"`
	Packages   []PackageRef `yaml:"packages"`
	Kernel     Kernel       `yaml:"kernel"`
	Watchdog   Watchdog     `yaml:"watchdog"`
	Bootloader Bootloader   `yaml:"bootloader"`
	BootFiles  []BootFile   `yaml:"boot_files"`
	ConfigTxt  string       `yaml:"config_txt"`
	QEMU       *QEMU        `yaml:"qemu"`

	// File is where the board was loaded from (for error messages).
	File string `yaml:"-"`
}

// GoTarget is the Go cross-compilation target.
type GoTarget struct {
	Arch string `yaml:"arch"`
	ARM  string `yaml:"arm"`
}

// PackageRef names a Debian package whose files the image uses (firmware,
// bootloader). Such packages are unpacked, never installed.
type PackageRef struct {
	Name      string `yaml:"name"`
	Component string `yaml:"component"`
}

// Kernel names the Debian kernel package and what the image takes from it.
type Kernel struct {
	Package  string   `yaml:"package"`
	Compress string   `yaml:"compress"`
	DTBs     []string `yaml:"dtbs"`
	// InitramfsModules are loaded by the initramfs, with their dependencies.
	InitramfsModules []string `yaml:"initramfs_modules"`
	// RootfsModules are copied into the root slot for later use.
	RootfsModules []string `yaml:"rootfs_modules"`
	Cmdline       string   `yaml:"cmdline"`
}

// Watchdog names the hardware watchdog drivers the initramfs arms.
type Watchdog struct {
	Modules []string `yaml:"modules"`
	Device  string   `yaml:"device"`
	Timeout int      `yaml:"timeout"`
}

// Bootloader describes how the slot's kernel is started.
type Bootloader struct {
	// Kind is "uboot" or "grub".
	Kind string `yaml:"kind"`
	// Boot is the U-Boot command: "booti" (arm64 Image) or "bootz" (32-bit zImage).
	Boot string `yaml:"boot"`
	// DTB is the device tree (relative to the slot's /boot/dtbs) the script loads;
	// empty means the one the firmware or QEMU provides.
	DTB       string            `yaml:"dtb"`
	Addresses map[string]string `yaml:"addresses"`
}

// BootFile is a file copied from an unpacked package into the boot partition.
type BootFile struct {
	Package string `yaml:"package"`
	Src     string `yaml:"src"`
	Dst     string `yaml:"dst"`
}

// QEMU describes how tests and `make qemu` start the board under emulation.
type QEMU struct {
	Binary  string   `yaml:"binary"`
	Machine string   `yaml:"machine"`
	Loader  Loader   `yaml:"loader"`
	Drive   string   `yaml:"drive"`
	Serial  []string `yaml:"serial"`
	Args    []string `yaml:"args"`
	// Bootargs are extra kernel arguments the harness writes into its copy of
	// the image (bulkhead/bootargs.env); never part of the image users flash.
	Bootargs  string   `yaml:"bootargs"`
	DTBFixups []string `yaml:"dtb_fixups"`
	Memory    string   `yaml:"memory"`
}

// Loader is the firmware QEMU starts instead of the real boot ROM.
type Loader struct {
	// Flag is "-kernel", "-bios" or "ovmf".
	Flag       string `yaml:"flag"`
	Package    string `yaml:"package"`
	Path       string `yaml:"path"`
	WrapUImage bool   `yaml:"wrap_uimage"`
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	arches = map[string]string{"arm64": "arm64", "armhf": "arm", "armel": "arm", "amd64": "amd64"}
)

// Load reads and validates boards/<name>.yaml under dir.
func Load(dir, name string) (*Board, error) {
	if !nameRE.MatchString(name) {
		return nil, unknown(dir, name)
	}
	path := filepath.Join(dir, name+".yaml")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, unknown(dir, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read board %s: %w", name, err)
	}
	return Parse(path, data)
}

func unknown(dir, name string) error {
	names, err := List(dir)
	if err != nil {
		return fmt.Errorf("unknown board %q (and listing %s failed: %v)", name, dir, err)
	}
	return fmt.Errorf("unknown board %q: choose one of %s (files in %s/)", name, strings.Join(names, ", "), dir)
}

// List returns the names of the boards defined in dir, sorted.
func List(dir string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".yaml"))
	}
	sort.Strings(names)
	return names, nil
}

// Parse decodes and validates a board file. Unknown fields are errors, so a
// typo never silently drops a setting.
func Parse(path string, data []byte) (*Board, error) {
	var b Board
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b.File = path
	if err := b.validate(); err != nil {
		return nil, err
	}
	return &b, nil
}

func (b *Board) fail(field, format string, args ...any) error {
	return fmt.Errorf("%s: field %s: %s", b.File, field, fmt.Sprintf(format, args...))
}

func (b *Board) validate() error {
	base := strings.TrimSuffix(filepath.Base(b.File), ".yaml")
	if b.Name == "" {
		return b.fail("name", "missing")
	}
	if b.Name != base {
		return b.fail("name", "%q does not match the file name %q", b.Name, base)
	}
	goarch, ok := arches[b.Arch]
	if !ok {
		return b.fail("arch", "%q is not a supported Debian architecture (arm64, armhf, armel, amd64)", b.Arch)
	}
	if b.Go.Arch != goarch {
		return b.fail("go.arch", "%q does not match arch %s (want %s)", b.Go.Arch, b.Arch, goarch)
	}
	if goarch == "arm" && b.Go.ARM != "6" && b.Go.ARM != "7" {
		return b.fail("go.arm", "%q: 32-bit ARM boards need GOARM 6 or 7", b.Go.ARM)
	}
	if b.Table != "mbr" && b.Table != "gpt" {
		return b.fail("table", "%q: want mbr or gpt", b.Table)
	}
	if b.Console == "" {
		return b.fail("console", "missing (e.g. ttyS0,115200)")
	}
	if b.Kernel.Package == "" {
		return b.fail("kernel.package", "missing (e.g. linux-image-arm64)")
	}
	switch b.Kernel.Compress {
	case "", "none", "gzip":
	default:
		return b.fail("kernel.compress", "%q: want none or gzip", b.Kernel.Compress)
	}
	switch b.Bootloader.Kind {
	case "uboot":
		if b.Bootloader.Boot != "booti" && b.Bootloader.Boot != "bootz" {
			return b.fail("bootloader.boot", "%q: want booti (arm64 Image) or bootz (32-bit zImage)", b.Bootloader.Boot)
		}
		for _, k := range []string{"kernel", "ramdisk"} {
			if b.Bootloader.Addresses[k] == "" {
				return b.fail("bootloader.addresses."+k, "missing")
			}
		}
		if b.Kernel.Compress == "gzip" && b.Bootloader.Addresses["kernel_comp"] == "" {
			return b.fail("bootloader.addresses.kernel_comp", "needed for a gzip-compressed kernel")
		}
		if b.Bootloader.DTB != "" && b.Bootloader.Addresses["fdt"] == "" {
			return b.fail("bootloader.addresses.fdt", "needed to load %s", b.Bootloader.DTB)
		}
	case "grub":
		if b.Arch != "amd64" {
			return b.fail("bootloader.kind", "grub is supported on amd64 only")
		}
		if b.Table != "gpt" {
			return b.fail("table", "grub boards boot from an EFI system partition: use gpt")
		}
	default:
		return b.fail("bootloader.kind", "%q: want uboot or grub", b.Bootloader.Kind)
	}
	pkgs := map[string]bool{}
	for i, p := range b.Packages {
		if p.Name == "" {
			return b.fail(fmt.Sprintf("packages[%d].name", i), "missing")
		}
		pkgs[p.Name] = true
	}
	for i, f := range b.BootFiles {
		field := fmt.Sprintf("boot_files[%d]", i)
		if !pkgs[f.Package] {
			return b.fail(field+".package", "%q is not listed under packages", f.Package)
		}
		if f.Src == "" || f.Dst == "" || strings.HasPrefix(f.Dst, "/") || strings.Contains(f.Dst, "..") {
			return b.fail(field, "src and a relative dst without .. are required")
		}
	}
	if b.Watchdog.Timeout < 0 || b.Watchdog.Timeout > 60 {
		return b.fail("watchdog.timeout", "%d s is out of range (1-60)", b.Watchdog.Timeout)
	}
	if len(b.Watchdog.Modules) > 0 && b.Watchdog.Device == "" {
		b.Watchdog.Device = "/dev/watchdog"
	}
	if b.Watchdog.Timeout == 0 {
		b.Watchdog.Timeout = 15
	}
	if q := b.QEMU; q != nil {
		if q.Binary == "" || q.Machine == "" {
			return b.fail("qemu", "binary and machine are required")
		}
		switch q.Loader.Flag {
		case "-kernel", "-bios":
			if !pkgs[q.Loader.Package] || q.Loader.Path == "" {
				return b.fail("qemu.loader", "package (listed under packages) and path are required for %s", q.Loader.Flag)
			}
		case "ovmf":
		default:
			return b.fail("qemu.loader.flag", "%q: want -kernel, -bios or ovmf", q.Loader.Flag)
		}
		if q.Drive != "sd" && q.Drive != "virtio" {
			return b.fail("qemu.drive", "%q: want sd or virtio", q.Drive)
		}
	}
	return nil
}

// GOARM returns the GOARM value for 32-bit ARM boards and "" otherwise.
func (b *Board) GOARM() string {
	if b.Go.Arch == "arm" {
		return b.Go.ARM
	}
	return ""
}

// ConsoleDevice returns the console's tty name without its speed.
func (b *Board) ConsoleDevice() string {
	return strings.SplitN(b.Console, ",", 2)[0]
}
