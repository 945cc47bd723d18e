package bootloader

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// Legacy uImage constants (U-Boot include/image.h).
const (
	uimageMagic      = 0x27051956
	uimageHeaderSize = 64
	uimageNameSize   = 32
	ihOSLinux        = 5
	ihArchARM        = 2
	ihArchARM64      = 22
	ihTypeScript     = 6
	ihCompNone       = 0
)

// uimageArch maps architecture names to IH_ARCH values. Besides mkimage's
// own -A names it accepts the Debian and Go names the board files use.
var uimageArch = map[string]byte{
	"arm":     ihArchARM,
	"armel":   ihArchARM,
	"armhf":   ihArchARM,
	"arm64":   ihArchARM64,
	"aarch64": ihArchARM64,
}

// BootScr wraps a boot script in the legacy uImage script container that
// U-Boot's `source` command runs (boot.scr): byte for byte what
// `SOURCE_DATE_EPOCH=<epoch> mkimage -A <arch> -O linux -T script -C none -d script boot.scr`
// writes. The payload is mkimage's multi-file layout with one file: a
// table of big-endian lengths (the script's, then 0 as terminator) followed
// by the script. The header time comes from epoch, not the clock, so that
// two builds of the same inputs are identical (SOURCE_DATE_EPOCH is what
// mkimage itself honours).
func BootScr(script, arch string, epoch time.Time) ([]byte, error) {
	a, ok := uimageArch[arch]
	if !ok {
		return nil, fmt.Errorf("boot.scr: architecture %q: want arm or arm64", arch)
	}
	if len(script) == 0 {
		return nil, fmt.Errorf("boot.scr: empty script")
	}
	if epoch.Unix() < 0 || epoch.Unix() > 0xffffffff {
		return nil, fmt.Errorf("boot.scr: time %v does not fit the 32-bit uImage timestamp", epoch)
	}
	data := make([]byte, 8, 8+len(script))
	binary.BigEndian.PutUint32(data[0:], uint32(len(script)))
	binary.BigEndian.PutUint32(data[4:], 0)
	data = append(data, script...)

	h := make([]byte, uimageHeaderSize)
	binary.BigEndian.PutUint32(h[0:], uimageMagic)
	// h[4:8] is the header CRC, computed below over the header with it zero.
	binary.BigEndian.PutUint32(h[8:], uint32(epoch.Unix()))
	binary.BigEndian.PutUint32(h[12:], uint32(len(data)))
	binary.BigEndian.PutUint32(h[16:], 0) // load address
	binary.BigEndian.PutUint32(h[20:], 0) // entry point
	binary.BigEndian.PutUint32(h[24:], crc32.ChecksumIEEE(data))
	h[28] = ihOSLinux
	h[29] = a
	h[30] = ihTypeScript
	h[31] = ihCompNone
	// h[32:64] is the image name: empty, as mkimage leaves it without -n.
	binary.BigEndian.PutUint32(h[4:], crc32.ChecksumIEEE(h))
	return append(h, data...), nil
}
