package sbom

import (
	"fmt"
	"strings"
)

// purl returns the package URL of p (https://github.com/package-url/purl-spec).
func purl(p Package) string {
	var s string
	switch p.Kind {
	case Deb:
		s = "pkg:deb/debian/" + purlEscape(p.Name)
	case GoModule:
		segs := strings.Split(p.Name, "/")
		for i := range segs {
			segs[i] = purlEscape(segs[i])
		}
		s = "pkg:golang/" + strings.Join(segs, "/")
	}
	if p.Version != "" {
		s += "@" + purlEscape(p.Version)
	}
	if p.Arch != "" {
		s += "?arch=" + purlEscape(p.Arch)
	}
	return s
}

// purlEscape percent-encodes everything but RFC 3986's unreserved
// characters, as package URL tools do for Debian versions ("2.36-9+deb12u10"
// becomes "2.36-9%2Bdeb12u10", an epoch's ":" becomes "%3A").
func purlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
