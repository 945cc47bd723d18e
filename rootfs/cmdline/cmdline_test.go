package cmdline

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    Params
		wantErr string
	}{
		{
			name: "an empty command line gives the defaults",
			line: "",
			want: Params{Watchdog: true},
		},
		{
			name: "a full U-Boot command line yields every key",
			line: "console=ttyS1,115200 root=/dev/ram0 bulkhead.slot=b bulkhead.trial=1 " +
				"bulkhead.disk=mbr:0x1a2b3c4d bulkhead.bootstate=uboot:1048576:1572864:4096 panic=10\n",
			want: Params{Slot: "b", Trial: true, Disk: Disk{"mbr", "0x1a2b3c4d"},
				BootState: "uboot:1048576:1572864:4096", Watchdog: true},
		},
		{
			name: "a GPT disk GUID is lower-cased",
			line: "bulkhead.slot=a bulkhead.disk=gpt:0FC63DAF-8483-4772-8E79-3D69D8477DE4",
			want: Params{Slot: "a", Disk: Disk{"gpt", "0fc63daf-8483-4772-8e79-3d69d8477de4"}, Watchdog: true},
		},
		{
			name: "an MBR signature without 0x is accepted and normalised",
			line: "bulkhead.disk=mbr:1A2B3C4D",
			want: Params{Disk: Disk{"mbr", "0x1a2b3c4d"}, Watchdog: true},
		},
		{
			name: "watchdog=0 disarms and debug=1 turns on debug",
			line: "bulkhead.watchdog=0 bulkhead.debug=1",
			want: Params{Watchdog: false, Debug: true},
		},
		{
			name: "the last of repeated keys wins, as in the kernel",
			line: "bulkhead.slot=a bulkhead.slot=b",
			want: Params{Slot: "b", Watchdog: true},
		},
		{
			name: "quoted values keep their spaces and lose their quotes",
			line: `foo="a b" bulkhead.bootstate="grub:1 2" bulkhead.slot=a`,
			want: Params{Slot: "a", BootState: "grub:1 2", Watchdog: true},
		},
		{
			name: "unknown bulkhead keys and kernel keys are ignored",
			line: "bulkhead.future=x quiet ro init=/init -- bulkhead",
			want: Params{Watchdog: true},
		},
		{
			name:    "a bad slot is reported and the other keys still parse",
			line:    "bulkhead.slot=c bulkhead.trial=1",
			want:    Params{Trial: true, Watchdog: true},
			wantErr: `bulkhead.slot="c"`,
		},
		{
			name:    "a typo in watchdog leaves it armed",
			line:    "bulkhead.watchdog=off",
			want:    Params{Watchdog: true},
			wantErr: "bulkhead.watchdog",
		},
		{
			name:    "a short MBR signature is rejected",
			line:    "bulkhead.disk=mbr:0x1a2b",
			want:    Params{Watchdog: true},
			wantErr: "8 hex digits",
		},
		{
			name:    "an unknown table kind is rejected",
			line:    "bulkhead.disk=apm:1",
			want:    Params{Watchdog: true},
			wantErr: "unknown table kind",
		},
		{
			name:    "a malformed GUID is rejected",
			line:    "bulkhead.disk=gpt:0fc63daf-8483-4772-8e79",
			want:    Params{Watchdog: true},
			wantErr: "GUID",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.line)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{"", nil},
		{"  a  b\tc\n", []string{"a", "b", "c"}},
		{`a="b c" d`, []string{"a=b c", "d"}},
		{`"a b"=c`, []string{"a b=c"}},
		{`a="unterminated b`, []string{"a=unterminated b"}},
	}
	for _, tt := range tests {
		if got := Split(tt.line); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Split(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

func TestDiskStringRoundTrips(t *testing.T) {
	for _, v := range []string{"mbr:0x1a2b3c4d", "gpt:0fc63daf-8483-4772-8e79-3d69d8477de4"} {
		d, err := ParseDisk(v)
		if err != nil {
			t.Fatalf("ParseDisk(%q): %v", v, err)
		}
		if d.String() != v {
			t.Errorf("ParseDisk(%q).String() = %q", v, d.String())
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("console=ttyS0 bulkhead.slot=a bulkhead.trial=0 bulkhead.disk=mbr:0x1a2b3c4d")
	f.Add(`bulkhead.disk=gpt:0fc63daf-8483-4772-8e79-3d69d8477de4 bulkhead.bootstate="x y"`)
	f.Add("bulkhead.watchdog=0 \"bulkhead.debug=1")
	f.Fuzz(func(t *testing.T, line string) {
		p, _ := Parse(line)
		if p.Slot != "" && p.Slot != "a" && p.Slot != "b" {
			t.Fatalf("slot %q escaped validation", p.Slot)
		}
		if !p.Disk.IsZero() {
			// Whatever was accepted must be canonical and parse to itself.
			again, err := ParseDisk(p.Disk.String())
			if err != nil || again != p.Disk {
				t.Fatalf("disk %q does not round-trip: %v", p.Disk, err)
			}
		}
		for _, a := range Split(line) {
			// Quotes only group; they never reach an argument.
			if strings.Contains(a, `"`) {
				t.Fatalf("Split(%q) kept a quote in %q", line, a)
			}
		}
	})
}
