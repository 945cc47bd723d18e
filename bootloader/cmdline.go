package bootloader

import (
	"fmt"
	"strconv"
	"strings"
)

// Kernel command-line keys written by the boot scripts (docs/architecture.md,
// "Kernel command line contract").
const (
	ArgSlot      = "bulkhead.slot"
	ArgTrial     = "bulkhead.trial"
	ArgDisk      = "bulkhead.disk"
	ArgBootstate = "bulkhead.bootstate"
)

// sectorSize is the unit of U-Boot's `mmc|virtio read/write` and of GRUB's
// disk writes; copies must start on a sector so that a write never shares a
// sector with anything else.
const sectorSize = 512

// Offsets of the U-Boot copies: LBA 2048 and LBA 3072, between the partition
// table and partition 1 at LBA 8192 (docs/architecture.md, "Disk layout").
const (
	UBootStateOffsetA int64 = 2048 * sectorSize
	UBootStateOffsetB int64 = 3072 * sectorSize
)

// Bootstate is the value of bulkhead.bootstate:
// <uboot|grub>:<offset of copy a>:<offset of copy b>:<size>, byte offsets
// from the start of the disk.
type Bootstate struct {
	Format     string
	OffA, OffB int64
	Size       int
}

// String formats b as the kernel argument value.
func (b Bootstate) String() string {
	return fmt.Sprintf("%s:%d:%d:%d", b.Format, b.OffA, b.OffB, b.Size)
}

// Codec returns the codec of b.Format.
func (b Bootstate) Codec() (Codec, error) { return CodecFor(b.Format) }

// Validate checks that the format is known, the size is the format's size,
// and the two copies are sector-aligned and do not overlap.
func (b Bootstate) Validate() error {
	c, err := CodecFor(b.Format)
	if err != nil {
		return err
	}
	if b.Size != c.Size() {
		return fmt.Errorf("%s boot state: size %d, want %d", b.Format, b.Size, c.Size())
	}
	for _, o := range []int64{b.OffA, b.OffB} {
		if o < 0 || o%sectorSize != 0 {
			return fmt.Errorf("%s boot state: offset %d is not a non-negative multiple of %d", b.Format, o, sectorSize)
		}
	}
	if b.OffA < b.OffB+int64(b.Size) && b.OffB < b.OffA+int64(b.Size) {
		return fmt.Errorf("%s boot state: copies at %d and %d overlap", b.Format, b.OffA, b.OffB)
	}
	return nil
}

// ParseBootstateArg parses the value of bulkhead.bootstate, e.g.
// "uboot:1048576:1572864:4096".
func ParseBootstateArg(s string) (Bootstate, error) {
	f := strings.Split(s, ":")
	if len(f) != 4 {
		return Bootstate{}, fmt.Errorf("%s=%q: want <uboot|grub>:<offset a>:<offset b>:<size>", ArgBootstate, s)
	}
	b := Bootstate{Format: f[0]}
	var err error
	if b.OffA, err = strconv.ParseInt(f[1], 10, 64); err != nil {
		return Bootstate{}, fmt.Errorf("%s=%q: offset of copy a: %w", ArgBootstate, s, err)
	}
	if b.OffB, err = strconv.ParseInt(f[2], 10, 64); err != nil {
		return Bootstate{}, fmt.Errorf("%s=%q: offset of copy b: %w", ArgBootstate, s, err)
	}
	if b.Size, err = strconv.Atoi(f[3]); err != nil {
		return Bootstate{}, fmt.Errorf("%s=%q: size: %w", ArgBootstate, s, err)
	}
	if err := b.Validate(); err != nil {
		return Bootstate{}, fmt.Errorf("%s=%q: %w", ArgBootstate, s, err)
	}
	return b, nil
}

// Boot is what the bootloader told Linux about this boot.
type Boot struct {
	Slot      Slot   `json:"slot"`
	Trial     bool   `json:"trial"`
	Disk      string `json:"disk"`
	Bootstate string `json:"bootstate"`
}

// ParseCmdline extracts the bulkhead.* keys from a kernel command line
// (/proc/cmdline). Missing keys stay empty; a malformed slot or trial flag
// is an error. The last occurrence of a key wins, like the kernel's own
// handling of repeated parameters; the boot scripts put the user's extra
// args (bulkhead/bootargs.env) last, so device configuration can override
// a board default such as bulkhead.watchdog.
func ParseCmdline(cmdline string) (Boot, error) {
	var b Boot
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case ArgSlot:
			s, err := ParseSlot(v)
			if err != nil {
				return Boot{}, fmt.Errorf("%s: %w", ArgSlot, err)
			}
			b.Slot = s
		case ArgTrial:
			switch v {
			case "0":
				b.Trial = false
			case "1":
				b.Trial = true
			default:
				return Boot{}, fmt.Errorf("%s=%q: want 0 or 1", ArgTrial, v)
			}
		case ArgDisk:
			b.Disk = v
		case ArgBootstate:
			b.Bootstate = v
		}
	}
	return b, nil
}
