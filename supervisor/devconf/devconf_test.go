package devconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const example = `# device.yaml
hostname: kiosk-17
network:
  mode: static
  interface: eth0
  address: 192.168.1.50/24
  gateway: 192.168.1.1
  dns: [192.168.1.1, 1.1.1.1]
api:
  listen: ":7070"
  token: 0123456789abcdef0123
update:
  health_deadline: 3m
  health_target: example.com:443
  engine_socket: /run/bulkhead/engine.sock
  auto_reboot: false
`

func TestParseExample(t *testing.T) {
	c, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "kiosk-17" || c.Network.Mode != ModeStatic || c.Network.Address != "192.168.1.50/24" ||
		c.API.Listen != ":7070" || time.Duration(c.Update.HealthDeadline) != 3*time.Minute || c.AutoReboot() {
		t.Fatalf("parsed %+v", c)
	}
}

func TestDefaults(t *testing.T) {
	for _, in := range []string{"", "# nothing yet\n"} {
		c, err := Parse([]byte(in))
		if err != nil || c.Network.Mode != "" || c.API.Listen != "" || !c.AutoReboot() {
			t.Fatalf("Parse(%q) = %+v, %v", in, c, err)
		}
	}
	c, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if err != nil || c.API.Listen != "" {
		t.Fatalf("Load of a missing file: %+v, %v", c, err)
	}
}

func TestParseRefusesMistakes(t *testing.T) {
	tests := map[string]string{
		"a typo in a key is reported":             "network:\n  adress: 10.0.0.2/24\n",
		"TCP without a token is refused":          "api:\n  listen: \":7070\"\n",
		"a short token is refused":                "api:\n  listen: \":7070\"\n  token: short\n",
		"a static address needs a prefix length":  "network:\n  mode: static\n  address: 10.0.0.2\n",
		"an address without static mode is wrong": "network:\n  address: 10.0.0.2/24\n",
		"an unknown mode is refused":              "network:\n  mode: wifi\n",
		"a bad hostname is refused":               "hostname: my_device\n",
		"a bad duration names the line":           "update:\n  health_deadline: soon\n",
		"a listen address without a port":         "api:\n  listen: localhost\n  token: 0123456789abcdef0123\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(in)); err == nil {
				t.Fatalf("Parse(%q) succeeded", in)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "device.yaml")
	os.WriteFile(p, []byte("network:\n  mode: wifi\n"), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Load: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("api:\n  listen: \":1\"\n  token: aaaaaaaaaaaaaaaa\n"))
	f.Add([]byte("network: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config Validate rejects: %v", err)
		}
		if c.API.Listen != "" && len(c.API.Token) < MinTokenLength {
			t.Fatal("TCP API accepted without a token")
		}
	})
}
