// Package cmdline parses the Linux kernel command line into the keys of
// Bulkhead's boot contract (docs/architecture.md, "Kernel command line
// contract"): bulkhead.slot, bulkhead.trial, bulkhead.disk,
// bulkhead.bootstate, bulkhead.watchdog and bulkhead.debug.
//
// The package only reads and validates; it decides nothing. Unknown keys are
// ignored because the same command line carries console=, root= and module
// parameters that belong to the kernel. The boot-state value is passed through
// verbatim: its format belongs to the bootloader package.
package cmdline

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Keys of the contract, exported so that callers and tests name them once.
const (
	KeySlot      = "bulkhead.slot"
	KeyTrial     = "bulkhead.trial"
	KeyDisk      = "bulkhead.disk"
	KeyBootState = "bulkhead.bootstate"
	KeyWatchdog  = "bulkhead.watchdog"
	KeyDebug     = "bulkhead.debug"
)

// Params are the Bulkhead keys found on a command line.
type Params struct {
	// Slot is "a" or "b", or "" when the bootloader did not say.
	Slot string
	// Trial is true when this boot is a trial boot of a freshly installed slot.
	Trial bool
	// Disk identifies the boot medium; zero when absent.
	Disk Disk
	// BootState is the raw bulkhead.bootstate value, e.g.
	// "uboot:1048576:1572864:4096"; the bootloader package parses it.
	BootState string
	// Watchdog is false only when the command line says bulkhead.watchdog=0
	// (QEMU raspi machines reset as soon as their watchdog is opened).
	Watchdog bool
	// Debug turns on debug logging in the initramfs and PID 1.
	Debug bool
}

// Disk identifies a boot medium by its partition table: the MBR disk
// signature or the GPT disk GUID.
type Disk struct {
	// Kind is "mbr" or "gpt".
	Kind string
	// ID is "0x" plus eight lowercase hex digits for MBR, or a lowercase GUID
	// (8-4-4-4-12) for GPT, the same spelling parttable.Table.DiskID uses.
	ID string
}

// IsZero reports whether no disk was given.
func (d Disk) IsZero() bool { return d.Kind == "" && d.ID == "" }

// String returns the command-line spelling, e.g. "mbr:0x1a2b3c4d".
func (d Disk) String() string {
	if d.IsZero() {
		return ""
	}
	return d.Kind + ":" + d.ID
}

// ParseDisk parses a bulkhead.disk value. It accepts upper-case hex and an MBR
// signature without "0x", and normalises both to the canonical spelling.
func ParseDisk(v string) (Disk, error) {
	kind, id, ok := strings.Cut(v, ":")
	if !ok {
		return Disk{}, fmt.Errorf("disk %q: want mbr:0x<8 hex digits> or gpt:<guid>", v)
	}
	id = strings.ToLower(id)
	switch kind {
	case "mbr":
		hex := strings.TrimPrefix(id, "0x")
		if len(hex) != 8 || !isHex(hex) {
			return Disk{}, fmt.Errorf("disk %q: an MBR disk signature is 0x and 8 hex digits", v)
		}
		return Disk{Kind: "mbr", ID: "0x" + hex}, nil
	case "gpt":
		if !isGUID(id) {
			return Disk{}, fmt.Errorf("disk %q: a GPT disk GUID is 8-4-4-4-12 hex digits", v)
		}
		return Disk{Kind: "gpt", ID: id}, nil
	default:
		return Disk{}, fmt.Errorf("disk %q: unknown table kind %q (want mbr or gpt)", v, kind)
	}
}

// Parse reads the Bulkhead keys from a command line such as the contents of
// /proc/cmdline. It returns every well-formed key even when others are
// malformed; the error then names each bad key, so that PID 1 can go on with
// defaults while the initramfs treats a bad slot as fatal.
func Parse(line string) (Params, error) {
	p := Params{Watchdog: true}
	var errs []error
	for _, arg := range Split(line) {
		key, val, _ := strings.Cut(arg, "=")
		if !strings.HasPrefix(key, "bulkhead.") {
			continue
		}
		// The kernel treats '-' and '_' in parameter names alike; Bulkhead's
		// keys have neither, so a plain comparison is exact.
		var err error
		switch key {
		case KeySlot:
			if val != "a" && val != "b" {
				err = fmt.Errorf("%s=%q: want a or b", key, val)
				break
			}
			p.Slot = val
		case KeyTrial:
			p.Trial, err = parseBool(key, val)
		case KeyDisk:
			p.Disk, err = ParseDisk(val)
			if err != nil {
				err = fmt.Errorf("%s: %w", key, err)
			}
		case KeyBootState:
			p.BootState = val
		case KeyWatchdog:
			p.Watchdog, err = parseBool(key, val)
			if err != nil {
				p.Watchdog = true // a typo must not disarm the watchdog
			}
		case KeyDebug:
			p.Debug, err = parseBool(key, val)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return p, errors.Join(errs...)
}

// ReadFile parses the command line stored at path, normally /proc/cmdline.
func ReadFile(path string) (Params, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Params{Watchdog: true}, fmt.Errorf("read kernel command line: %w", err)
	}
	return Parse(string(b))
}

// Split breaks a command line into arguments the way the kernel's next_arg
// (lib/cmdline.c) does: whitespace separates arguments, double quotes group
// text containing spaces and are removed, and `key="a b"` yields `key=a b`.
func Split(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, inArg := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			inArg = true
		case !inQuote && isSpace(c):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

func parseBool(key, val string) (bool, error) {
	switch val {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("%s=%q: want 0 or 1", key, val)
}

func isSpace(c byte) bool {
	// The kernel's isspace: space, \t, \n, \v, \f, \r.
	return c == ' ' || (c >= '\t' && c <= '\r')
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

func isGUID(s string) bool {
	parts := strings.Split(s, "-")
	if len(parts) != 5 {
		return false
	}
	for i, n := range []int{8, 4, 4, 4, 12} {
		if len(parts[i]) != n || !isHex(parts[i]) {
			return false
		}
	}
	return true
}
