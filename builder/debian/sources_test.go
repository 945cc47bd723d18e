package debian

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseSourcesListReadsOneLineEntries(t *testing.T) {
	in := `
# comment line
deb http://m.example/debian bookworm main contrib   # trailing comment
deb [ arch=arm64 signed-by=/k.gpg ] http://m.example/debian/ bookworm-updates main
deb [arch=amd64] http://m.example/debian-security bookworm-security main
deb[trusted=yes] http://m.example/flat ./
deb-src http://m.example/debian bookworm main
deb cdrom:[Debian GNU/Linux 12 Bookworm]/ bookworm main
`
	got, err := ParseSourcesList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{
		{URI: "http://m.example/debian", Suites: []string{"bookworm"}, Components: []string{"main", "contrib"}},
		{URI: "http://m.example/debian", Suites: []string{"bookworm-updates"}, Components: []string{"main"}},
		{URI: "http://m.example/debian-security", Suites: []string{"bookworm-security"}, Components: []string{"main"}},
		{URI: "http://m.example/flat", Suites: []string{"./"}, Components: []string{}},
		{URI: "cdrom:[Debian GNU/Linux 12 Bookworm]", Suites: []string{"bookworm"}, Components: []string{"main"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}

func TestParseSourcesListRejectsMalformedLines(t *testing.T) {
	for _, in := range []string{
		"deb http://m.example/debian",                // no suite
		"rpm http://m.example/ bookworm main",        // unknown type
		"deb [arch=amd64 http://m.example/ bookworm", // unclosed options
		"deb [arch] http://m.example/ bookworm",      // option without value
	} {
		if _, err := ParseSourcesList(strings.NewReader(in)); err == nil {
			t.Errorf("ParseSourcesList(%q) succeeded", in)
		} else if !strings.Contains(err.Error(), "line 1") {
			t.Errorf("error %q does not name the line", err)
		}
	}
}

func TestParseDeb822ReadsStanzasAndSkipsDisabledOnes(t *testing.T) {
	f, err := os.Open("testdata/hostroot/etc/apt/sources.list.d/security.sources")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ParseDeb822(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{
		{URI: "http://mirror.example/debian-security", Suites: []string{"bookworm-security"}, Components: []string{"main", "non-free-firmware"}},
		{URI: "http://mirror.example/debian", Suites: []string{"bookworm-updates", "trixie"}, Components: []string{"main"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}

func TestParseDeb822SplitsMultipleURIsAndSkipsSourceOnlyStanzas(t *testing.T) {
	in := "Types: deb-src\nURIs: http://a.example/debian\nSuites: bookworm\n\n" +
		"Types: deb\nURIs: http://a.example/debian http://b.example/debian\nSuites: bookworm\nComponents: main\n"
	got, err := ParseDeb822(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].URI != "http://a.example/debian" || got[1].URI != "http://b.example/debian" {
		t.Fatalf("got %#v", got)
	}
	if _, err := ParseDeb822(strings.NewReader("URIs: http://a.example/\nSuites: x\n")); err == nil {
		t.Error("a stanza without Types was accepted")
	}
	if _, err := ParseDeb822(strings.NewReader("Types: deb\nSuites: x\n")); err == nil {
		t.Error("a deb stanza without URIs was accepted")
	}
}

func TestHostSourcesReadsOnlyListAndSourcesFiles(t *testing.T) {
	got, err := HostSources("testdata/hostroot")
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, s := range got {
		uris = append(uris, s.URI+" "+strings.Join(s.Suites, ","))
	}
	want := []string{
		"http://mirror.example/debian bookworm",
		"http://mirror.example/debian bookworm-backports",
		// cdrom: is dropped; .list before .sources is name order.
		"http://mirror.example/debian bullseye",
		"http://mirror.example/debian-security bookworm-security",
		"http://mirror.example/debian bookworm-updates,trixie",
	}
	if !reflect.DeepEqual(uris, want) {
		t.Fatalf("got  %q\nwant %q", uris, want)
	}
}

func TestForReleaseKeepsTheReleaseAndItsUpdatesButNotBackports(t *testing.T) {
	srcs, err := HostSources("testdata/hostroot")
	if err != nil {
		t.Fatal(err)
	}
	got := ForRelease(srcs, "bookworm")
	want := []Source{
		{URI: "http://mirror.example/debian", Suites: []string{"bookworm"}, Components: []string{"main", "contrib"}},
		{URI: "http://mirror.example/debian-security", Suites: []string{"bookworm-security"}, Components: []string{"main", "non-free-firmware"}},
		{URI: "http://mirror.example/debian", Suites: []string{"bookworm-updates"}, Components: []string{"main"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
	if got := ForRelease(srcs, "buster"); len(got) != 0 {
		t.Fatalf("ForRelease(buster) = %v, want nothing", got)
	}
}

func TestParseMirrorEnvAcceptsSeveralEntries(t *testing.T) {
	got, err := ParseMirrorEnv("http://m.example/debian/ ; https://m.example/debian-security bookworm-security")
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{
		{URI: "http://m.example/debian", Suites: []string{}},
		{URI: "https://m.example/debian-security", Suites: []string{"bookworm-security"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
	// A bare URI stands for the release and its updates, not security.
	rel := ForRelease(got, "bookworm")
	if !reflect.DeepEqual(rel[0].Suites, []string{"bookworm", "bookworm-updates"}) {
		t.Fatalf("bare URI suites = %v", rel[0].Suites)
	}
	for _, bad := range []string{"", " ; ", "ftp://m.example/debian bookworm", "bookworm"} {
		if _, err := ParseMirrorEnv(bad); err == nil || !strings.Contains(err.Error(), MirrorEnv) {
			t.Errorf("ParseMirrorEnv(%q) = %v, want an error naming %s", bad, err, MirrorEnv)
		}
	}
}

func TestSourcesForExplainsHowToConfigureAMirror(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/apt/sources.list.d"), 0o755)
	list := filepath.Join(root, "etc/apt/sources.list")
	os.WriteFile(list, []byte("deb http://m.example/debian bullseye main\n"), 0o644)
	_, err := SourcesFor(root, "bookworm", "")
	if err == nil {
		t.Fatal("no error without a bookworm source")
	}
	for _, want := range []string{list, MirrorEnv, "bookworm"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	got, err := SourcesFor(root, "bookworm", "http://m.example/debian")
	if err != nil || len(got) != 1 || got[0].Suites[0] != "bookworm" {
		t.Fatalf("with %s: %v, %v", MirrorEnv, got, err)
	}
}
