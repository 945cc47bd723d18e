package debian

import (
	"strings"
)

// CompareVersions compares two Debian version strings as dpkg does (Debian
// Policy 5.6.12): [epoch:]upstream[-revision], epochs numerically, then
// upstream and revision with the alternating non-digit / digit algorithm in
// which '~' sorts before everything, even the end of the string, and
// letters sort before other characters. It returns -1, 0 or +1.
//
// Malformed versions are compared by the same rules rather than rejected:
// the archive's versions were accepted by dpkg already, and a resolver that
// fails on one odd entry among sixty thousand helps nobody.
func CompareVersions(a, b string) int {
	ea, ua, ra := splitVersion(a)
	eb, ub, rb := splitVersion(b)
	if c := compareNumeric(ea, eb); c != 0 {
		return c
	}
	if c := compareFragment(ua, ub); c != 0 {
		return c
	}
	return compareFragment(ra, rb)
}

// splitVersion splits epoch, upstream version and revision. The epoch is
// before the first colon, the revision after the last hyphen.
func splitVersion(v string) (epoch, upstream, revision string) {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ':'); i >= 0 {
		epoch, v = v[:i], v[i+1:]
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// order is dpkg's weight of one character of a non-digit run: '~' lowest,
// then the end of the run, then letters, then everything else.
func order(c byte) int {
	switch {
	case c == '~':
		return -1
	case isLetter(c):
		return int(c)
	default:
		return int(c) + 256
	}
}

// compareFragment is dpkg's verrevcmp.
func compareFragment(a, b string) int {
	for a != "" || b != "" {
		// Non-digit prefix, character by character; a missing
		// character weighs 0, above '~' and below everything else.
		for (a != "" && !isDigit(a[0])) || (b != "" && !isDigit(b[0])) {
			ac, bc := 0, 0
			if a != "" && !isDigit(a[0]) {
				ac = order(a[0])
			}
			if b != "" && !isDigit(b[0]) {
				bc = order(b[0])
			}
			if ac != bc {
				return sign(ac - bc)
			}
			a, b = a[1:], b[1:]
		}
		var da, db string
		da, a = digitRun(a)
		db, b = digitRun(b)
		if c := compareNumeric(da, db); c != 0 {
			return c
		}
	}
	return 0
}

// digitRun splits the leading decimal digits from s.
func digitRun(s string) (digits, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// compareNumeric compares two digit strings as numbers of any length: an
// epoch or a date-like upstream component (20230405) must not overflow.
// Empty means 0.
func compareNumeric(a, b string) int {
	a = strings.TrimLeft(a, "0")
	b = strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return sign(len(a) - len(b))
	}
	return strings.Compare(a, b)
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
