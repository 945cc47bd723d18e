// Package initconfig reads /etc/bulkhead/initramfs.json, the file through
// which the builder tells the initramfs which kernel it belongs to, which
// modules to load in which order, and which watchdog to arm
// (docs/architecture.md, "Initramfs contents").
//
// It owns the Go type and the validation of that file; it loads nothing.
package initconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"
)

// DefaultPath is where the builder puts the file inside the initramfs.
const DefaultPath = "/etc/bulkhead/initramfs.json"

// Config is the contents of initramfs.json.
type Config struct {
	// Kernel is the release the modules were built for, e.g. 6.1.0-50-arm64;
	// modules live under /lib/modules/<Kernel>/.
	Kernel string `json:"kernel"`
	// Board names the board definition the image was built from.
	Board string `json:"board"`
	// Modules are paths relative to /lib/modules/<Kernel>/, dependencies first.
	Modules []string `json:"modules"`
	// Watchdog is the hardware watchdog to arm; absent on boards without one.
	Watchdog *Watchdog `json:"watchdog,omitempty"`
}

// Watchdog says how to arm the hardware watchdog.
type Watchdog struct {
	// Module is the driver's module name (e.g. i6300esb, bcm2835_wdt), or
	// empty when the driver is built into the kernel.
	Module string `json:"module"`
	// Device is the character device, normally /dev/watchdog.
	Device string `json:"device"`
	// Timeout in seconds.
	Timeout int `json:"timeout"`
}

// Load reads and validates the file at p.
func Load(p string) (*Config, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("initramfs config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("initramfs config %s: %w", p, err)
	}
	return c, nil
}

// Parse decodes and validates initramfs.json. Unknown fields are rejected so
// that a builder newer than this initramfs is noticed at build-test time
// rather than silently ignored on a device.
func Parse(b []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) validate() error {
	if c.Kernel == "" || strings.ContainsAny(c.Kernel, "/\x00") || c.Kernel == "." || c.Kernel == ".." {
		return fmt.Errorf("kernel %q: want a release name such as 6.1.0-50-arm64", c.Kernel)
	}
	for i, m := range c.Modules {
		// Paths must stay inside /lib/modules/<kernel>/.
		if m == "" || path.IsAbs(m) || path.Clean(m) != m || strings.HasPrefix(m, "../") || m == ".." ||
			strings.ContainsRune(m, 0) || !strings.Contains(path.Base(m), ".ko") {
			return fmt.Errorf("modules[%d] %q: want a relative path to a .ko file such as kernel/fs/ext4/ext4.ko", i, m)
		}
	}
	if w := c.Watchdog; w != nil {
		if !strings.HasPrefix(w.Device, "/dev/") {
			return fmt.Errorf("watchdog.device %q: want a /dev path such as /dev/watchdog", w.Device)
		}
		if w.Timeout < 1 || w.Timeout > 3600 {
			return fmt.Errorf("watchdog.timeout %d: want 1 to 3600 seconds", w.Timeout)
		}
	}
	return nil
}

// ModulePath returns the absolute path of module m inside root ("/" on the
// device).
func (c *Config) ModulePath(root, m string) string {
	return path.Join(root, "lib/modules", c.Kernel, m)
}
