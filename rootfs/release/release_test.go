package release

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadyLine(t *testing.T) {
	tests := []struct {
		name                 string
		version, slot, board string
		trial                bool
		want                 string
	}{
		{"a committed boot", "1.4.0", "a", "raspberrypi3", false,
			"bulkhead: ready version=1.4.0 slot=a board=raspberrypi3 trial=0"},
		{"a trial boot of slot b", "2.0.0-rc1", "b", "x86_64", true,
			"bulkhead: ready version=2.0.0-rc1 slot=b board=x86_64 trial=1"},
		{"missing values say unknown", "", "", "", false,
			"bulkhead: ready version=unknown slot=unknown board=unknown trial=0"},
		{"spaces and equals signs cannot split a value", "1.0 beta", "a", "pi=3\n", false,
			"bulkhead: ready version=1.0_beta slot=a board=pi_3_ trial=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReadyLine(tt.version, tt.slot, tt.board, tt.trial); got != tt.want {
				t.Errorf("ReadyLine = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "release.json")
	os.WriteFile(p, []byte(`{"name":"bulkhead","version":"1.4.0","board":"raspberrypi3","arch":"arm64",
		"kernel":"6.1.0-50-arm64","build_time":1735787045,"future":"ignored"}`), 0o644)
	r, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Release{Name: "bulkhead", Version: "1.4.0", Board: "raspberrypi3", Arch: "arm64",
		Kernel: "6.1.0-50-arm64", BuildTime: 1735787045}
	if *r != want {
		t.Errorf("Read = %+v, want %+v", *r, want)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("Read of a missing file succeeded")
	}
}
