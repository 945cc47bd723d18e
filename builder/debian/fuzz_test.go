package debian

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzDeb822 feeds arbitrary bytes to the stanza parser (Packages, Release,
// control and .sources files all come from the network or from disk). It
// must never panic, and whatever it accepts must hold only well-formed
// field names.
func FuzzDeb822(f *testing.F) {
	f.Add([]byte("Package: a\nVersion: 1\n\nPackage: b\nDescription: x\n .\n more\n"))
	f.Add([]byte("Types: deb\n# comment\nURIs: http://m.example/debian\n"))
	f.Add([]byte(" continuation first\n"))
	f.Add([]byte("A: 1\nA: 2\n"))
	f.Add([]byte("Key:\r\n value\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, comments := range []bool{false, true} {
			parseDeb822(bytes.NewReader(data), comments, func(s Stanza) error {
				for k := range s {
					if k == "" || strings.ContainsAny(k, ": \t\n") {
						t.Fatalf("accepted field name %q", k)
					}
				}
				return nil
			})
		}
		ParsePackages(bytes.NewReader(data), "u", "s", "c")
		ParseRelease(data)
		ParseDeb822(bytes.NewReader(data))
		ParseSourcesList(bytes.NewReader(data))
	})
}

// FuzzAr feeds arbitrary bytes to the ar reader that opens every .deb. It
// must never panic, and every member it returns must lie inside the input.
func FuzzAr(f *testing.F) {
	f.Add([]byte(arMagic))
	f.Add(arBytes(member("debian-binary", []byte("2.0\n")), member("control.tar", []byte("abc")), member("data.tar", nil)))
	f.Add(arBytes(member("odd", []byte("x")), member("even", []byte("xy"))))
	f.Add([]byte(arMagic + "debian-binary   1680674828  0     0     100644  99999999999`\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		members, err := readAr(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if len(members) > arMaxMembers {
			t.Fatalf("%d members", len(members))
		}
		for _, m := range members {
			if m.Offset < int64(len(arMagic)) || m.Size < 0 || m.Offset+m.Size > int64(len(data)) {
				t.Fatalf("member %+v outside the %d-byte input", m, len(data))
			}
			if m.Name == "" || strings.ContainsAny(m.Name, "/\x00") {
				t.Fatalf("member name %q", m.Name)
			}
		}
	})
}

// FuzzCompareVersions checks that the version order is a consistent order
// for any input: antisymmetric, and reflexive.
func FuzzCompareVersions(f *testing.F) {
	f.Add("1.0~rc1", "1.0")
	f.Add("1:2.36-9+deb12u10", "2.36-9")
	f.Add("", "~")
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareVersions(a, a) != 0 {
			t.Fatalf("%q != itself", a)
		}
		if CompareVersions(a, b) != -CompareVersions(b, a) {
			t.Fatalf("compare(%q, %q) is not antisymmetric", a, b)
		}
	})
}

// FuzzParseRelations checks the dependency parser on arbitrary fields.
func FuzzParseRelations(f *testing.F) {
	f.Add("libc6 (>= 2.34), perl:any | foo (<< 2~) [amd64] <!nocheck>")
	f.Add("a (")
	f.Fuzz(func(t *testing.T, s string) {
		for _, g := range parseRelations(s) {
			if len(g) == 0 {
				t.Fatal("empty group")
			}
			for _, r := range g {
				if r.name == "" || (r.op != "" && r.version == "") {
					t.Fatalf("relation %+v from %q", r, s)
				}
			}
		}
	})
}
