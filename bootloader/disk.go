package bootloader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// ErrDiskNotFound is returned by FindDisk when no disk has the identity.
var ErrDiskNotFound = errors.New("no disk with that identity")

// DiskID returns the identity of a disk in bulkhead.disk form: "gpt:<guid>"
// (the GPT header's disk GUID, lowercase) when the disk has a protective MBR
// and a GPT header, else "mbr:0x<signature>" (the 32-bit MBR disk signature
// at byte 440, lowercase hex). sectorSize is the logical block size; the GPT
// header is at LBA 1.
func DiskID(r io.ReaderAt, sectorSize int) (string, error) {
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return "", fmt.Errorf("read MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return "", fmt.Errorf("no MBR boot signature 55 aa")
	}
	// A protective MBR has an entry of type 0xee (UEFI 2.x, 5.2.3).
	gpt := false
	for i := 0; i < 4; i++ {
		if mbr[446+16*i+4] == 0xee {
			gpt = true
		}
	}
	if !gpt {
		return fmt.Sprintf("mbr:0x%08x", binary.LittleEndian.Uint32(mbr[440:])), nil
	}
	hdr := make([]byte, 92)
	if _, err := r.ReadAt(hdr, int64(sectorSize)); err != nil {
		return "", fmt.Errorf("read GPT header: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return "", fmt.Errorf("protective MBR but no GPT header at LBA 1 (sector size %d)", sectorSize)
	}
	// The on-disk GUID stores its first three fields little-endian.
	g := hdr[56:72]
	var u uuid.UUID
	u[0], u[1], u[2], u[3] = g[3], g[2], g[1], g[0]
	u[4], u[5] = g[5], g[4]
	u[6], u[7] = g[7], g[6]
	copy(u[8:], g[8:16])
	return "gpt:" + u.String(), nil
}

// FindDisk returns the device node (/dev/<name>) of the one whole disk whose
// DiskID is id, the value of bulkhead.disk. It fails if no disk or more than
// one disk matches: two disks with the same identity (a cloned medium plugged
// in) must never let Linux write the boot state of the wrong one.
func FindDisk(id string) (string, error) {
	return findDisk("/sys/block", "/dev", id)
}

func findDisk(sysBlock, devDir, id string) (string, error) {
	id = strings.ToLower(id)
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("find disk %s: %w", id, err)
	}
	var found []string
	for _, e := range entries {
		name := e.Name()
		// RAM disks and compressed swap never hold a Bulkhead disk.
		if strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
			continue
		}
		ss := 512
		if b, err := os.ReadFile(filepath.Join(sysBlock, name, "queue", "logical_block_size")); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
				ss = n
			}
		}
		dev := filepath.Join(devDir, name)
		f, err := os.Open(dev)
		if err != nil {
			continue // no medium, no node, no permission: not ours
		}
		got, err := DiskID(f, ss)
		f.Close()
		if err == nil && got == id {
			found = append(found, dev)
		}
	}
	sort.Strings(found)
	switch len(found) {
	case 0:
		return "", fmt.Errorf("find disk %s: %w among %s", id, ErrDiskNotFound, sysBlock)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("find disk %s: %d disks have that identity (%s): remove the clone", id, len(found), strings.Join(found, ", "))
}
