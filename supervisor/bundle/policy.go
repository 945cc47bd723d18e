package bundle

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Errors of CheckPolicy; test with errors.Is.
var (
	// ErrWrongBoard: the bundle was built for other boards. Never forced:
	// a slot image for another board does not boot.
	ErrWrongBoard = errors.New("bundle is for another board")
	// ErrWrongArch: the bundle's architecture differs from the running
	// system's. Never forced.
	ErrWrongArch = errors.New("bundle is for another architecture")
	// ErrOtherOS: the bundle carries another OS name. Forcible.
	ErrOtherOS = errors.New("bundle is another OS")
	// ErrDowngrade: the bundle's version is older. Forcible.
	ErrDowngrade = errors.New("bundle would downgrade")
	// ErrSameVersion: the bundle's version is the running one. Forcible.
	ErrSameVersion = errors.New("bundle is the running version")
	// ErrBadVersion: a version cannot be compared. Forcible.
	ErrBadVersion = errors.New("version cannot be compared")
)

// CheckPolicy decides whether candidate may replace current (the running
// release, of which only Name, Version, Board and Arch are used) on board.
// Board and architecture are never negotiable; another OS name, a
// downgrade, the same version and versions that cannot be compared are
// refused unless force is set.
func CheckPolicy(current, candidate Manifest, board string, force bool) error {
	if !candidate.Supports(board) {
		return fmt.Errorf("%w: built for %s, this device is a %s: use the bundle from deploy/%s/", ErrWrongBoard, strings.Join(candidate.Boards(), ", "), board, board)
	}
	if candidate.Arch != current.Arch {
		return fmt.Errorf("%w: bundle is %s, this device runs %s", ErrWrongArch, candidate.Arch, current.Arch)
	}
	if force {
		return nil
	}
	if current.Name != "" && candidate.Name != current.Name {
		return fmt.Errorf("%w: bundle is %q, this device runs %q: force the update to switch", ErrOtherOS, candidate.Name, current.Name)
	}
	c, err := CompareVersions(candidate.Version, current.Version)
	if err != nil {
		return fmt.Errorf("%w: force the update to install anyway", err)
	}
	switch {
	case c < 0:
		return fmt.Errorf("%w: bundle is %s, this device runs %s: force the update to go back", ErrDowngrade, candidate.Version, current.Version)
	case c == 0:
		return fmt.Errorf("%w: %s: force the update to reinstall it", ErrSameVersion, candidate.Version)
	}
	return nil
}

// version is a parsed version: numeric release fields, then either a
// pre-release (sorts before the release) or a count of commits after it
// (git describe's "-N-g<hash>", sorts after the release).
type version struct {
	release []uint64
	pre     []string
	post    uint64
}

var gitDescribeRE = regexp.MustCompile(`^(.*)-([0-9]+)-g[0-9a-f]{4,40}(-dirty)?$`)

// parseVersion accepts semantic versions with an optional "v" prefix and
// any number of numeric fields ("1.2", "v1.2.3.4"), a pre-release after "-"
// ("1.0.0-rc.1"), build metadata after "+" (ignored, as semver says), and
// git describe output ("v1.2.0-14-g1a2b3c4", "-dirty" allowed).
func parseVersion(s string) (version, error) {
	var v version
	orig := s
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	if m := gitDescribeRE.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseUint(m[2], 10, 32)
		if err == nil {
			s, v.post = m[1], n
		}
	}
	s = strings.TrimPrefix(s, "v")
	rel, pre, hasPre := strings.Cut(s, "-")
	for _, f := range strings.Split(rel, ".") {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil || (len(f) > 1 && f[0] == '0') {
			return version{}, fmt.Errorf("%w: %q: release field %q is not a number", ErrBadVersion, orig, f)
		}
		v.release = append(v.release, n)
	}
	if hasPre {
		if pre == "" {
			return version{}, fmt.Errorf("%w: %q: empty pre-release", ErrBadVersion, orig)
		}
		v.pre = strings.Split(pre, ".")
		for _, p := range v.pre {
			if p == "" {
				return version{}, fmt.Errorf("%w: %q: empty pre-release field", ErrBadVersion, orig)
			}
		}
	}
	return v, nil
}

// CompareVersions returns -1, 0 or +1 as a is older than, the same as or
// newer than b. Missing release fields count as 0 ("1.2" == "1.2.0"); a
// pre-release is older than its release ("1.0.0-rc.1" < "1.0.0"), and
// pre-release fields compare as numbers when both are numeric, otherwise as
// strings, numbers first (semver 2.0.0 rule 11); git describe output is
// newer than its tag by its commit count. Build metadata is ignored.
func CompareVersions(a, b string) (int, error) {
	va, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(va.release) || i < len(vb.release); i++ {
		var x, y uint64
		if i < len(va.release) {
			x = va.release[i]
		}
		if i < len(vb.release) {
			y = vb.release[i]
		}
		if x != y {
			return cmp(x < y), nil
		}
	}
	if c := comparePre(va.pre, vb.pre); c != 0 {
		return c, nil
	}
	if va.post != vb.post {
		return cmp(va.post < vb.post), nil
	}
	return 0, nil
}

func cmp(less bool) int {
	if less {
		return -1
	}
	return 1
}

func comparePre(a, b []string) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		x, xerr := strconv.ParseUint(a[i], 10, 64)
		y, yerr := strconv.ParseUint(b[i], 10, 64)
		switch {
		case xerr == nil && yerr == nil:
			if x != y {
				return cmp(x < y)
			}
		case xerr == nil:
			return -1
		case yerr == nil:
			return 1
		case a[i] != b[i]:
			return cmp(a[i] < b[i])
		}
	}
	if len(a) != len(b) {
		return cmp(len(a) < len(b))
	}
	return 0
}
