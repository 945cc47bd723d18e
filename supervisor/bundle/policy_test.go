package bundle_test

import (
	"errors"
	"testing"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.2.3", "1.2.3", 0},
		{"v1.2.3", "1.2.3", 0},
		{"1.2", "1.2.0", 0},
		{"1.2.3+build.5", "1.2.3+build.6", 0},
		{"1.10.0", "1.9.0", 1},
		{"2", "1.99.99", 1},
		{"1.0.0-rc.1", "1.0.0", -1},
		{"1.0.0-alpha", "1.0.0-alpha.1", -1},
		{"1.0.0-alpha.1", "1.0.0-alpha.beta", -1},
		{"1.0.0-beta.2", "1.0.0-beta.11", -1},
		{"1.0.0-rc.1", "1.0.0-beta.11", 1},
		{"v1.2.0-14-g1a2b3c4", "v1.2.0", 1},
		{"v1.2.0-14-g1a2b3c4", "v1.2.0-3-gdeadbee", 1},
		{"v1.2.0-14-g1a2b3c4-dirty", "v1.2.1", -1},
		{"0.0.0-dev", "0.0.0", -1},
	}
	for _, tc := range tests {
		got, err := bundle.CompareVersions(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", tc.a, tc.b, got, err, tc.want)
		}
		if back, _ := bundle.CompareVersions(tc.b, tc.a); back != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, not the opposite of the reverse", tc.b, tc.a, back)
		}
	}
	for _, bad := range []string{"", "abc", "1..2", "1.x", "01.2", "1.2-", "1.2-a..b", "1a2b3c4"} {
		if _, err := bundle.CompareVersions(bad, "1.0"); !errors.Is(err, bundle.ErrBadVersion) {
			t.Errorf("CompareVersions(%q): %v, want ErrBadVersion", bad, err)
		}
	}
}

func TestCheckPolicy(t *testing.T) {
	running := bundle.Manifest{Name: "bulkhead", Version: "1.4.0", Board: "raspberrypi3", Arch: "arm64"}
	cand := func(edit func(*bundle.Manifest)) bundle.Manifest {
		m := bundle.Manifest{Name: "bulkhead", Version: "1.5.0", Board: "raspberrypi3", Arch: "arm64"}
		if edit != nil {
			edit(&m)
		}
		return m
	}
	tests := []struct {
		name      string
		candidate bundle.Manifest
		board     string
		force     bool
		want      error
	}{
		{"a newer version for this board is accepted", cand(nil), "raspberrypi3", false, nil},
		{"a bundle listing this board as compatible is accepted", cand(func(m *bundle.Manifest) { m.Board = "raspberrypi4"; m.Compatible = []string{"raspberrypi3"} }), "raspberrypi3", false, nil},
		{"a bundle for another board is refused", cand(func(m *bundle.Manifest) { m.Board = "raspberrypi4" }), "raspberrypi3", false, bundle.ErrWrongBoard},
		{"a bundle for another board is refused even when forced", cand(func(m *bundle.Manifest) { m.Board = "x86_64" }), "raspberrypi3", true, bundle.ErrWrongBoard},
		{"a bundle for another architecture is refused even when forced", cand(func(m *bundle.Manifest) { m.Arch = "armhf" }), "raspberrypi3", true, bundle.ErrWrongArch},
		{"a downgrade is refused", cand(func(m *bundle.Manifest) { m.Version = "1.3.9" }), "raspberrypi3", false, bundle.ErrDowngrade},
		{"a forced downgrade is accepted", cand(func(m *bundle.Manifest) { m.Version = "1.3.9" }), "raspberrypi3", true, nil},
		{"the running version is refused", cand(func(m *bundle.Manifest) { m.Version = "v1.4.0" }), "raspberrypi3", false, bundle.ErrSameVersion},
		{"the running version is reinstalled when forced", cand(func(m *bundle.Manifest) { m.Version = "1.4.0" }), "raspberrypi3", true, nil},
		{"a version that cannot be compared is refused", cand(func(m *bundle.Manifest) { m.Version = "nightly" }), "raspberrypi3", false, bundle.ErrBadVersion},
		{"another OS is refused", cand(func(m *bundle.Manifest) { m.Name = "kiosk" }), "raspberrypi3", false, bundle.ErrOtherOS},
		{"another OS is accepted when forced", cand(func(m *bundle.Manifest) { m.Name = "kiosk" }), "raspberrypi3", true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := bundle.CheckPolicy(running, tc.candidate, tc.board, tc.force)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckPolicy: %v, want %v", err, tc.want)
			}
		})
	}
}
