//go:build !linux

package bootloader

import (
	"errors"
	"fmt"
	"os"
)

// OpenDevice is only implemented on Linux, the one system that writes boot
// state on a device; the builder only needs the codecs and generators.
func OpenDevice(path string) (*os.File, error) {
	return nil, fmt.Errorf("open boot-state device %s: %w", path, errors.ErrUnsupported)
}
