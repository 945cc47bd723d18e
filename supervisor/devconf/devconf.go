// Package devconf reads the device configuration, the one file a user edits
// to personalise a flashed card: /boot/firmware/bulkhead/device.yaml on the
// boot partition (FAT, so it can be edited on any computer before the first
// boot). docs/update-protocol.md documents every field.
//
// It parses and validates; it applies nothing. A missing file means the
// defaults (DHCP on the first wired interface, device API on the unix
// socket only).
package devconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where the file lives on a running device.
const DefaultPath = "/boot/firmware/bulkhead/device.yaml"

// Network modes.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
	ModeOff    = "off"
)

// Config is device.yaml.
type Config struct {
	// Hostname; default "bulkhead-<board>".
	Hostname string  `yaml:"hostname"`
	Network  Network `yaml:"network"`
	API      API     `yaml:"api"`
	Update   Update  `yaml:"update"`
}

// Network configures the wired interface.
type Network struct {
	// Mode is dhcp (default), static or off.
	Mode string `yaml:"mode"`
	// Interface defaults to the first wired interface.
	Interface string `yaml:"interface"`
	// Address is the static address with its prefix length, e.g.
	// 192.168.1.50/24.
	Address string `yaml:"address"`
	// Gateway is the static default gateway.
	Gateway string `yaml:"gateway"`
	// DNS servers for static mode (DHCP supplies its own).
	DNS []string `yaml:"dns"`
}

// API configures the device API's TCP listener. The unix socket
// /run/bulkhead/supervisor.sock is always there.
type API struct {
	// Listen is a TCP address such as ":7070"; empty means no TCP.
	Listen string `yaml:"listen"`
	// Token is the bearer token TCP clients must send; required with
	// Listen, at least 16 characters.
	Token string `yaml:"token"`
}

// Update tunes the update process.
type Update struct {
	// HealthDeadline bounds the trial's health checks, e.g. "5m".
	HealthDeadline Duration `yaml:"health_deadline"`
	// HealthTarget is an optional host:port the network check connects
	// to; without it the check only requires a default route.
	HealthTarget string `yaml:"health_target"`
	// EngineSocket is the container engine's socket the trial checks;
	// empty means the socket of the image's engine service
	// (services.json), and no check if the image runs no engine.
	EngineSocket string `yaml:"engine_socket"`
	// AutoReboot reboots into the trial as soon as the slot is verified;
	// default true.
	AutoReboot *bool `yaml:"auto_reboot"`
}

// Duration is a time.Duration written as "90s" or "5m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 90s or 5m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MinTokenLength is the shortest API token accepted.
const MinTokenLength = 16

// Parse decodes and validates device.yaml. Unknown keys are errors, so a
// typo ("adress") is reported instead of silently ignored.
func Parse(b []byte) (Config, error) {
	var c Config
	if len(b) > 64<<10 {
		return c, fmt.Errorf("device config is %d bytes, at most 64 KiB", len(b))
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file (or one of comments only) is io.EOF: the defaults.
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("device config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Load reads and parses path; a missing file gives the defaults.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("device config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

var (
	hostLabelRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
	ifaceRE     = regexp.MustCompile(`^[a-zA-Z0-9_.:-]{1,15}$`)
)

// Validate checks every field and names the one that is wrong.
func (c Config) Validate() error {
	if c.Hostname != "" {
		if len(c.Hostname) > 64 {
			return fmt.Errorf("hostname %q: at most 64 characters", c.Hostname)
		}
		for _, l := range strings.Split(c.Hostname, ".") {
			if !hostLabelRE.MatchString(l) {
				return fmt.Errorf("hostname %q: use letters, digits and '-' (RFC 1123)", c.Hostname)
			}
		}
	}
	n := c.Network
	switch n.Mode {
	case "", ModeDHCP, ModeOff:
		if n.Address != "" || n.Gateway != "" {
			return fmt.Errorf("network.address and network.gateway need network.mode: static")
		}
	case ModeStatic:
		if _, err := netip.ParsePrefix(n.Address); err != nil {
			return fmt.Errorf("network.address %q: want an address with prefix length, e.g. 192.168.1.50/24", n.Address)
		}
		if n.Gateway != "" {
			if _, err := netip.ParseAddr(n.Gateway); err != nil {
				return fmt.Errorf("network.gateway %q: want an IP address", n.Gateway)
			}
		}
	default:
		return fmt.Errorf("network.mode %q: want dhcp, static or off", n.Mode)
	}
	if n.Interface != "" && !ifaceRE.MatchString(n.Interface) {
		return fmt.Errorf("network.interface %q: not an interface name", n.Interface)
	}
	for _, d := range n.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return fmt.Errorf("network.dns %q: want an IP address", d)
		}
	}
	if c.API.Listen != "" {
		if _, port, err := net.SplitHostPort(c.API.Listen); err != nil || port == "" {
			return fmt.Errorf("api.listen %q: want host:port or :port, e.g. \":7070\"", c.API.Listen)
		} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("api.listen %q: port must be 1-65535", c.API.Listen)
		}
		if len(c.API.Token) < MinTokenLength {
			return fmt.Errorf("api.token: the TCP API needs a token of at least %d characters (e.g. `openssl rand -hex 24`); without it the API stays on the unix socket", MinTokenLength)
		}
	}
	for _, r := range c.API.Token {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("api.token: use printable ASCII without spaces")
		}
	}
	if c.Update.HealthDeadline < 0 {
		return fmt.Errorf("update.health_deadline: must be positive")
	}
	if t := c.Update.HealthTarget; t != "" {
		if _, _, err := net.SplitHostPort(t); err != nil {
			return fmt.Errorf("update.health_target %q: want host:port", t)
		}
	}
	return nil
}

// AutoReboot returns Update.AutoReboot with its default.
func (c Config) AutoReboot() bool { return c.Update.AutoReboot == nil || *c.Update.AutoReboot }
