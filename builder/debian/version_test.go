package debian

import "testing"

func TestCompareVersionsFollowsDebianPolicy(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		// Debian Policy 5.6.12: "~" sorts before anything, even the end
		// of a part: ~~ < ~~a < ~ < (empty) < a.
		{"1.0~~", "1.0~~a", -1},
		{"1.0~~a", "1.0~", -1},
		{"1.0~", "1.0", -1},
		{"1.0", "1.0a", -1},
		// Pre-releases and backports sort before the release.
		{"1.0~rc1", "1.0", -1},
		{"1.0~rc1~git20230101", "1.0~rc1", -1},
		{"2.36-9~bpo11+1", "2.36-9", -1},
		// Letters sort before non-letters.
		{"1.0a", "1.0+", -1},
		{"1.0+b1", "1.0", 1},
		// Digits compare numerically, not lexically.
		{"1.2.10", "1.2.9", 1},
		{"10", "9", 1},
		{"1.01", "1.1", 0},
		{"20230405", "20230404", 1},
		// Epochs override everything else.
		{"1:0.1", "2.0", 1},
		{"0:1.0", "1.0", 0},
		{"2:1.0", "10:0.1", -1},
		// The revision is compared after the upstream version; a missing
		// revision equals "0".
		{"1.0-1", "1.0-2", -1},
		{"1.0", "1.0-0", 0},
		{"1.0", "1.0-1", -1},
		{"1.0-1", "1.0-1.1", -1},
		{"2.36-9+deb12u10", "2.36-9+deb12u9", 1},
		{"12.4+deb12u5", "12.4+deb12u15", -1},
		// Hyphens in the upstream part: only the last one splits.
		{"1.0-beta-1", "1.0-beta-2", -1},
		{"1.0-alpha-1", "1.0-beta-1", -1},
		{"1.1.5+ds1-1+deb12u1", "1.1.5+ds1-1", 1},
		{"1:1.20230405+ds-1", "1:1.20230405+ds-1", 0},
		// Very long digit runs do not overflow.
		{"1.99999999999999999999999", "1.99999999999999999999998", 1},
	}
	for _, tc := range cases {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d (antisymmetry)", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestVersionSatisfiesEveryRelation(t *testing.T) {
	cases := []struct {
		v, op, want string
		ok          bool
	}{
		{"2.36-9", ">=", "2.34", true},
		{"2.33", ">=", "2.34", false},
		{"1.0", ">>", "1.0", false},
		{"1.0-1", ">>", "1.0", true},
		{"1.0", "<<", "1.0", false},
		{"1.0~rc1", "<<", "1.0", true},
		{"1.0", "<=", "1.0", true},
		{"12.2.0-14", "=", "12.2.0-14", true},
		{"12.2.0-14+b1", "=", "12.2.0-14", false},
	}
	for _, tc := range cases {
		if got := versionSatisfies(tc.v, tc.op, tc.want); got != tc.ok {
			t.Errorf("%s %s %s = %v, want %v", tc.v, tc.op, tc.want, got, tc.ok)
		}
	}
}
