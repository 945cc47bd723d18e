// Package mounts mounts, moves and inspects filesystems for the initramfs
// and PID 1: one Mount value per mount with its flags spelled out, a reader
// for /proc/self/mountinfo, and mounting only what is not mounted yet.
//
// It knows nothing about which filesystems a Bulkhead system needs; the two
// mains list those.
package mounts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one mount(2) call.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// String describes the mount for error messages and logs.
func (m Mount) String() string {
	s := fmt.Sprintf("%s on %s (%s", m.Source, m.Target, m.FSType)
	if m.Data != "" {
		s += ", " + m.Data
	}
	return s + ")"
}

// Do mounts m, creating the target directory first when it is missing.
// Creating it fails harmlessly on a read-only root, where the builder has
// created every mount point; the mount then reports the real problem.
func (m Mount) Do() error {
	if _, err := os.Stat(m.Target); errors.Is(err, os.ErrNotExist) {
		os.MkdirAll(m.Target, 0o755)
	}
	if err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data); err != nil {
		return fmt.Errorf("mount %s: %w", m, err)
	}
	return nil
}

// Move moves the mount at from to to (mount --move), creating to if needed.
func Move(from, to string) error {
	if _, err := os.Stat(to); errors.Is(err, os.ErrNotExist) {
		os.MkdirAll(to, 0o755)
	}
	if err := unix.Mount(from, to, "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move mount %s to %s: %w", from, to, err)
	}
	return nil
}

// Info is one line of /proc/self/mountinfo.
type Info struct {
	ID, Parent int
	// MountPoint is unescaped (mountinfo writes a space as \040).
	MountPoint string
	Options    string
	FSType     string
	Source     string
}

// ParseMountinfo parses the format of /proc/<pid>/mountinfo
// (Documentation/filesystems/proc.rst, "mountinfo"):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Optional fields run up to the lone "-" separator.
func ParseMountinfo(r io.Reader) ([]Info, error) {
	var infos []Info
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, sc.Text())
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		infos = append(infos, Info{ID: id, Parent: parent, MountPoint: unescape(f[4]), Options: f[5],
			FSType: f[sep+1], Source: unescape(f[sep+2])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return infos, nil
}

// unescape undoes the kernel's octal escapes (\040 space, \011 tab, \012
// newline, \134 backslash).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Table reads /proc/self/mountinfo.
func Table() ([]Info, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mount table: %w", err)
	}
	defer f.Close()
	return ParseMountinfo(f)
}

// IsMounted reports whether something is mounted on target.
func IsMounted(target string) (bool, error) {
	infos, err := Table()
	if err != nil {
		return false, err
	}
	for _, in := range infos {
		if in.MountPoint == target {
			return true, nil
		}
	}
	return false, nil
}

// Ensure mounts each of ms that is not mounted yet, in order, and returns
// the targets it mounted. Before /proc is mounted there is no mount table to
// consult; a mount that then fails with EBUSY was already there.
func Ensure(ms []Mount) ([]string, error) {
	var done []string
	for _, m := range ms {
		if mounted, err := IsMounted(m.Target); err == nil && mounted {
			continue
		}
		if err := m.Do(); err != nil {
			if errors.Is(err, unix.EBUSY) {
				continue
			}
			return done, err
		}
		done = append(done, m.Target)
	}
	return done, nil
}
