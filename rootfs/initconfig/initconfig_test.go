package initconfig

import (
	"path"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    *Config
		wantErr string
	}{
		{
			name: "the architecture document's example parses",
			json: `{"kernel":"6.1.0-50-arm64","board":"raspberrypi3",
				"modules":["kernel/lib/crc16.ko","kernel/fs/ext4/ext4.ko.xz"],
				"watchdog":{"module":"i6300esb","device":"/dev/watchdog","timeout":15}}`,
			want: &Config{Kernel: "6.1.0-50-arm64", Board: "raspberrypi3",
				Modules:  []string{"kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko.xz"},
				Watchdog: &Watchdog{Module: "i6300esb", Device: "/dev/watchdog", Timeout: 15}},
		},
		{
			name: "a board without a watchdog omits it",
			json: `{"kernel":"6.1.0-50-amd64","board":"x86_64","modules":[]}`,
			want: &Config{Kernel: "6.1.0-50-amd64", Board: "x86_64", Modules: []string{}},
		},
		{name: "a module path escaping /lib/modules is refused",
			json: `{"kernel":"k","modules":["../../etc/passwd.ko"]}`, wantErr: "modules[0]"},
		{name: "an absolute module path is refused",
			json: `{"kernel":"k","modules":["/kernel/a.ko"]}`, wantErr: "modules[0]"},
		{name: "a kernel name with a slash is refused",
			json: `{"kernel":"../k","modules":[]}`, wantErr: "kernel"},
		{name: "a zero watchdog timeout is refused",
			json: `{"kernel":"k","watchdog":{"device":"/dev/watchdog","timeout":0}}`, wantErr: "watchdog.timeout"},
		{name: "unknown fields are refused",
			json: `{"kernel":"k","modules":[],"firmware":[]}`, wantErr: "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"kernel":"6.1.0-50-arm64","modules":["kernel/fs/ext4/ext4.ko"],"watchdog":{"device":"/dev/watchdog","timeout":15}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		root := "/lib/modules/" + c.Kernel + "/"
		for _, m := range c.Modules {
			if p := c.ModulePath("/", m); !strings.HasPrefix(p, root) || path.Clean(p) != p {
				t.Fatalf("module %q resolves to %q, outside %s", m, p, root)
			}
		}
	})
}
