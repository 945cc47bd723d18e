package debian

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// testIndex builds an arm64 index from the testdata Packages files: the
// release, its updates and security suites, and non-free-firmware.
func testIndex(t *testing.T) *Index {
	t.Helper()
	var all []*Package
	for _, f := range []struct{ file, suite, comp string }{
		{"Packages-bookworm-main-arm64", "bookworm", "main"},
		{"Packages-bookworm-non-free-firmware-arm64", "bookworm", "non-free-firmware"},
		{"Packages-bookworm-updates-main-arm64", "bookworm-updates", "main"},
		{"Packages-bookworm-security-main-arm64", "bookworm-security", "main"},
	} {
		pkgs, err := ParsePackages(bytes.NewReader(readTestdata(t, f.file)), "http://m.example/debian", f.suite, f.comp)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pkgs...)
	}
	return NewIndex("arm64", []string{"http://m.example/debian bookworm [main non-free-firmware]", "http://m.example/debian bookworm-updates [main]", "http://m.example/debian bookworm-security [main]"}, all)
}

func names(pkgs []*Package) []string {
	var out []string
	for _, p := range pkgs {
		out = append(out, p.Name+"="+p.Version)
	}
	return out
}

func TestParsePackagesKeepsTheFieldsALockNeeds(t *testing.T) {
	pkgs, err := ParsePackages(bytes.NewReader(readTestdata(t, "Packages-bookworm-main-arm64")), "http://m.example/debian", "bookworm", "main")
	if err != nil {
		t.Fatal(err)
	}
	runc := pkgs[0]
	want := Package{
		Name: "runc", Version: "1.1.5+ds1-1", Architecture: "arm64", Source: "runc",
		Filename: "pool/main/r/runc/runc_1.1.5+ds1-1_arm64.deb", SHA256: runc.SHA256,
		Section: "misc", Priority: "optional", Homepage: "https://example.org/runc", Size: 1234,
		Depends: "libc6 (>= 2.34), libseccomp2 (>= 2.5.0)", Suite: "bookworm", Component: "main", URI: "http://m.example/debian",
	}
	if *runc != want || len(runc.SHA256) != 64 {
		t.Fatalf("got  %+v\nwant %+v", *runc, want)
	}
	var base *Package
	for _, p := range pkgs {
		if p.Name == "base-files" {
			base = p
		}
	}
	if base == nil || !base.Essential || base.PreDepends != "awk" {
		t.Fatalf("base-files = %+v", base)
	}
	pin := runc.Pin()
	if pin.Name != "runc" || pin.Arch != "arm64" || pin.SHA256 != runc.SHA256 || pin.Size != 1234 || pin.Suite != "bookworm" || pin.Source != "runc" {
		t.Fatalf("Pin() = %+v", pin)
	}
}

func TestParsePackagesRejectsStanzasWithoutChecksums(t *testing.T) {
	for name, in := range map[string]string{
		"no SHA256":   "Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/a.deb\nSize: 1\n",
		"no Filename": "Package: a\nVersion: 1\nArchitecture: all\nSize: 1\nSHA256: " + strings.Repeat("a", 64) + "\n",
		"zero Size":   "Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/a.deb\nSize: 0\nSHA256: " + strings.Repeat("a", 64) + "\n",
		"no Version":  "Package: a\nArchitecture: all\n",
	} {
		if _, err := ParsePackages(strings.NewReader(in), "u", "s", "c"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestResolvePicksTheHighestVersionAcrossSuites(t *testing.T) {
	ix := testIndex(t)
	p, err := ix.Resolve("libc6")
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != "2.36-9+deb12u10" || p.Suite != "bookworm-security" {
		t.Fatalf("Resolve(libc6) = %s from %s, want the security update", p, p.Suite)
	}
	if vs := ix.Versions("libc6"); len(vs) != 3 || vs[2].Version != "2.36-9" {
		t.Fatalf("Versions(libc6) = %v", names(vs))
	}
	fw, err := ix.Resolve("raspi-firmware")
	if err != nil || fw.Architecture != "all" || fw.Component != "non-free-firmware" {
		t.Fatalf("Resolve(raspi-firmware) = %v, %v", fw, err)
	}
}

func TestResolveFollowsASingleProvider(t *testing.T) {
	ix := testIndex(t)
	p, err := ix.Resolve("editor")
	if err != nil || p.Name != "nano" {
		t.Fatalf("Resolve(editor) = %v, %v; want nano", p, err)
	}
	_, err = ix.Resolve("awk")
	if err == nil || !strings.Contains(err.Error(), "gawk, mawk, original-awk") {
		t.Fatalf("Resolve(awk) = %v; want an error listing the providers", err)
	}
}

func TestResolveOfAnUnknownNameNamesTheArchAndSuites(t *testing.T) {
	ix := testIndex(t)
	_, err := ix.Resolve("no-such-package")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"no-such-package", "arm64", "bookworm-security", "component"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := ix.Resolve("amd64-only"); err == nil {
		t.Error("an amd64 package resolved in the arm64 index")
	}
}

func TestClosure(t *testing.T) {
	ix := testIndex(t)
	cases := []struct {
		name    string
		roots   []string
		exclude map[string]bool
		want    []string
	}{
		{"runc pulls libc, libseccomp and gcc's runtime, through a libc6/libgcc-s1 cycle",
			[]string{"runc"}, nil,
			[]string{"gcc-12-base=12.2.0-14", "libc6=2.36-9+deb12u10", "libgcc-s1=12.2.0-14", "libseccomp2=2.5.4-1+b3", "runc=1.1.5+ds1-1"}},
		{"an alternative that does not exist falls through to the next",
			[]string{"foo"}, nil, []string{"baz=2.0-1", "foo=1.0-1"}},
		{"the first satisfiable alternative wins",
			[]string{"qux"}, nil, []string{"baz=2.0-1", "qux=1.0-1"}},
		{"an alternative already selected satisfies the group",
			[]string{"qux", "quux"}, nil, []string{"quux=1.0-1", "qux=1.0-1"}},
		{"a >= restriction takes the newer version from updates",
			[]string{"app"}, nil, []string{"app=1.0-1", "libv=2.1-1"}},
		{"a << restriction takes the older version",
			[]string{"old-app"}, nil, []string{"libv=1.0-1", "old-app=1.0-1"}},
		{"a versioned dependency is met only by a versioned Provides",
			[]string{"pyapp"}, nil, []string{"pyapp=1.0-1", "python3.11=3.11.2-6"}},
		{"a virtual package with several providers takes the required one",
			[]string{"base-files"}, nil,
			[]string{"base-files=12.4+deb12u5", "gcc-12-base=12.2.0-14", "libc6=2.36-9+deb12u10", "libgcc-s1=12.2.0-14", "mawk=1.3.4.20200120-3.1"}},
		{"multiarch qualifiers are ignored and Pre-Depends followed",
			[]string{"tool"}, map[string]bool{"libgcc-s1": true},
			[]string{"libc6=2.36-9+deb12u10", "perl=5.36.0-7+deb12u1", "tool=1.0-1"}},
		{"a dependency cycle terminates",
			[]string{"ping"}, nil, []string{"ping=1.0-1", "pong=1.0-1"}},
		{"an excluded dependency is not followed",
			[]string{"runc"}, map[string]bool{"libc6": true},
			[]string{"libseccomp2=2.5.4-1+b3", "runc=1.1.5+ds1-1"}},
		{"a root can carry a version restriction",
			[]string{"libv (<< 2)"}, nil, []string{"libv=1.0-1"}},
		{"an architecture-independent root resolves",
			[]string{"data-all"}, nil, []string{"data-all=1.0-1"}},
		{"a root reached as a dependency is listed once",
			[]string{"runc", "libc6"}, nil,
			[]string{"gcc-12-base=12.2.0-14", "libc6=2.36-9+deb12u10", "libgcc-s1=12.2.0-14", "libseccomp2=2.5.4-1+b3", "runc=1.1.5+ds1-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ix.Closure(tc.roots, tc.exclude)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(names(got), tc.want) {
				t.Fatalf("Closure(%v) = %v\nwant %v", tc.roots, names(got), tc.want)
			}
		})
	}
}

func TestClosureIsIndependentOfRootOrder(t *testing.T) {
	ix := testIndex(t)
	a, err := ix.Closure([]string{"runc", "qux", "quux", "app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ix.Closure([]string{"app", "quux", "qux", "runc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(names(a), names(b)) {
		t.Fatalf("different results:\n%v\n%v", names(a), names(b))
	}
}

func TestClosureErrorsSayWhatIsMissing(t *testing.T) {
	ix := testIndex(t)
	cases := []struct {
		name  string
		roots []string
		want  []string
	}{
		{"an ambiguous virtual package lists its providers",
			[]string{"mailer"}, []string{"mailer 1.0-1", "mail-transport-agent", "exim4-daemon-light, postfix"}},
		{"no alternative exists",
			[]string{"needs-missing"}, []string{"libmissing1 | libmissing2", "no such package"}},
		{"a version nobody has",
			[]string{"strict"}, []string{"libv (= 9.9-1)", "the index has only 2.1-1"}},
		{"two roots need incompatible versions",
			[]string{"app", "old-app"}, []string{"libv (<< 2.0)", "already selected at version 2.1-1"}},
		{"an unknown root",
			[]string{"no-such-package"}, []string{"no-such-package", "arm64"}},
		{"a root with two groups",
			[]string{"a, b"}, []string{"one package name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ix.Closure(tc.roots, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseRelationsHandlesRealWorldSyntax(t *testing.T) {
	got := parseRelations("libc6 (>= 2.34), perl:any, foo (>>1.0) | bar:native (<< 2~), debconf (>= 0.5) | debconf-2.0, baz [amd64] <!nocheck>, qux (< 3), , broken (>= ")
	want := [][]relation{
		{{"libc6", ">=", "2.34"}},
		{{"perl", "", ""}},
		{{"foo", ">>", "1.0"}, {"bar", "<<", "2~"}},
		{{"debconf", ">=", "0.5"}, {"debconf-2.0", "", ""}},
		{{"baz", "", ""}},
		{{"qux", "<=", "3"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}
