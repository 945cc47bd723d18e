package sbom

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func sampleDoc() Document {
	return Document{
		Name:    "bulkhead-raspberrypi3-1.2.0",
		Version: "1.2.0",
		Board:   "raspberrypi3",
		Created: time.Unix(1747699200, 0),
		Creator: "Tool: bulkhead-builder",
		Packages: []Package{
			{Kind: GoModule, Name: "github.com/google/uuid", Version: "v1.6.0", DownloadLocation: goProxyURL("github.com/google/uuid", "v1.6.0")},
			{Kind: Deb, Name: "libstdc++6", Version: "12.2.0-14", Arch: "arm64", Supplier: "Organization: Debian",
				License:          LicenseExpression([]string{"GPL-3+", "GCC-exception-3.1", "GPL-3+"}),
				DownloadLocation: "https://mirror.example.org/debian/pool/main/g/gcc-12/libstdc++6_12.2.0-14_arm64.deb",
				SHA256:           strings.Repeat("ab", 32)},
			{Kind: Deb, Name: "libc6", Version: "2.36-9+deb12u10", Arch: "arm64", Supplier: "Organization: Debian",
				License: LicenseExpression([]string{"LGPL-2.1+", "GPL-2+", "public-domain"}), SHA256: strings.Repeat("01", 32)},
			{Kind: Deb, Name: "raspi-firmware", Version: "1:1.20230405-1", Arch: "all", Supplier: "Organization: Debian"},
			{Kind: GoModule, Name: "github.com/ProtonMail/go-crypto", Version: "v1.5.2", DownloadLocation: goProxyURL("github.com/ProtonMail/go-crypto", "v1.5.2")},
			{Kind: GoModule, Name: "stdlib", Version: "go1.26.8", PURL: "pkg:golang/stdlib@go1.26.8"},
		},
	}
}

func encode(t *testing.T, doc Document) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, doc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteMatchesGolden(t *testing.T) {
	got := encode(t, sampleDoc())
	golden := filepath.Join("testdata", "sbom.golden.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v: run go test ./builder/sbom -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s (run with -update if the change is intended):\n%s", golden, got)
	}
}

// TestWriteHasWhatTheSPDXSchemaRequires checks what the SPDX 2.3 JSON schema
// (spdx-spec, schemas/spdx-schema-2-3.json) demands of the objects Bulkhead
// writes: required fields, no properties outside the schema
// (additionalProperties is false throughout) and the enumerations.
func TestWriteHasWhatTheSPDXSchemaRequires(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(encode(t, sampleDoc()), &doc); err != nil {
		t.Fatal(err)
	}
	spdxID := regexp.MustCompile(`^SPDXRef-[A-Za-z0-9.-]+$`)
	require := func(obj map[string]any, where string, fields ...string) {
		t.Helper()
		for _, f := range fields {
			if v, ok := obj[f]; !ok || v == "" || v == nil {
				t.Errorf("%s lacks required %q", where, f)
			}
		}
	}
	allowed := func(obj map[string]any, where string, fields ...string) {
		t.Helper()
		for k := range obj {
			if !slices.Contains(fields, k) {
				t.Errorf("%s has %q, which the schema does not allow", where, k)
			}
		}
	}
	oneOf := func(v any, where string, values ...string) {
		t.Helper()
		if s, _ := v.(string); !slices.Contains(values, s) {
			t.Errorf("%s = %v, not in the schema's enumeration", where, v)
		}
	}
	require(doc, "document", "spdxVersion", "dataLicense", "SPDXID", "name", "documentNamespace", "creationInfo")
	allowed(doc, "document", "SPDXID", "annotations", "comment", "creationInfo", "dataLicense", "externalDocumentRefs",
		"hasExtractedLicensingInfos", "name", "revieweds", "spdxVersion", "documentNamespace", "documentDescribes",
		"packages", "files", "snippets", "relationships")
	if doc["spdxVersion"] != "SPDX-2.3" || doc["dataLicense"] != "CC0-1.0" || doc["SPDXID"] != "SPDXRef-DOCUMENT" {
		t.Errorf("header %v %v %v", doc["spdxVersion"], doc["dataLicense"], doc["SPDXID"])
	}
	ci := doc["creationInfo"].(map[string]any)
	require(ci, "creationInfo", "created", "creators")
	allowed(ci, "creationInfo", "comment", "created", "creators", "licenseListVersion")
	if _, err := time.Parse(time.RFC3339, ci["created"].(string)); err != nil || !strings.HasSuffix(ci["created"].(string), "Z") {
		t.Errorf("created %v is not a UTC date-time", ci["created"])
	}
	ids := map[string]bool{"SPDXRef-DOCUMENT": true}
	for i, p := range doc["packages"].([]any) {
		pkg := p.(map[string]any)
		where := "packages[" + pkg["name"].(string) + "]"
		require(pkg, where, "SPDXID", "name", "downloadLocation")
		allowed(pkg, where, "SPDXID", "annotations", "attributionTexts", "builtDate", "checksums", "comment",
			"copyrightText", "description", "downloadLocation", "externalRefs", "filesAnalyzed", "hasFiles", "homepage",
			"licenseComments", "licenseConcluded", "licenseDeclared", "licenseInfoFromFiles", "name", "originator",
			"packageFileName", "packageVerificationCode", "primaryPackagePurpose", "releaseDate", "sourceInfo",
			"summary", "supplier", "validUntilDate", "versionInfo")
		if v, ok := pkg["primaryPackagePurpose"]; ok {
			oneOf(v, where+".primaryPackagePurpose", "OTHER", "INSTALL", "ARCHIVE", "FIRMWARE", "APPLICATION",
				"FRAMEWORK", "LIBRARY", "CONTAINER", "SOURCE", "DEVICE", "OPERATING_SYSTEM", "FILE")
		}
		if fa, ok := pkg["filesAnalyzed"].(bool); !ok || fa {
			t.Errorf("%s: filesAnalyzed %v, want false (no file list is given)", where, pkg["filesAnalyzed"])
		}
		id := pkg["SPDXID"].(string)
		if !spdxID.MatchString(id) || ids[id] {
			t.Errorf("%s: SPDXID %q malformed or reused", where, id)
		}
		ids[id] = true
		for _, c := range asList(pkg["checksums"]) {
			require(c, where+".checksums", "algorithm", "checksumValue")
			allowed(c, where+".checksums", "algorithm", "checksumValue")
			oneOf(c["algorithm"], where+".checksums.algorithm", "SHA1", "SHA256", "SHA512")
		}
		for _, r := range asList(pkg["externalRefs"]) {
			require(r, where+".externalRefs", "referenceCategory", "referenceType", "referenceLocator")
			allowed(r, where+".externalRefs", "comment", "referenceCategory", "referenceType", "referenceLocator")
			oneOf(r["referenceCategory"], where+".referenceCategory", "OTHER", "PERSISTENT-ID", "SECURITY", "PACKAGE-MANAGER")
		}
		if i > 0 && len(asList(pkg["externalRefs"])) != 1 {
			t.Errorf("%s: want one purl", where)
		}
	}
	var describes, contains int
	for _, r := range asList(doc["relationships"]) {
		require(r, "relationship", "spdxElementId", "relatedSpdxElement", "relationshipType")
		allowed(r, "relationship", "spdxElementId", "comment", "relatedSpdxElement", "relationshipType")
		if !ids[r["spdxElementId"].(string)] || !ids[r["relatedSpdxElement"].(string)] {
			t.Errorf("relationship %v names an unknown element", r)
		}
		switch r["relationshipType"] {
		case "DESCRIBES":
			describes++
			if r["spdxElementId"] != "SPDXRef-DOCUMENT" || r["relatedSpdxElement"] != imageID {
				t.Errorf("DESCRIBES %v", r)
			}
		case "CONTAINS":
			contains++
		}
	}
	if describes != 1 || contains != len(sampleDoc().Packages) {
		t.Errorf("%d DESCRIBES, %d CONTAINS; want 1 and %d", describes, contains, len(sampleDoc().Packages))
	}
	defined := map[string]bool{}
	for _, e := range asList(doc["hasExtractedLicensingInfos"]) {
		require(e, "hasExtractedLicensingInfos", "licenseId", "extractedText")
		allowed(e, "hasExtractedLicensingInfos", "comment", "crossRefs", "extractedText", "licenseId", "name", "seeAlsos")
		defined[e["licenseId"].(string)] = true
	}
	for _, p := range doc["packages"].([]any) {
		for _, ref := range licenseRefs.FindAllString(p.(map[string]any)["licenseDeclared"].(string), -1) {
			if !defined[ref] {
				t.Errorf("%s is used but not defined", ref)
			}
		}
	}
}

func asList(v any) []map[string]any {
	var out []map[string]any
	l, _ := v.([]any)
	for _, e := range l {
		out = append(out, e.(map[string]any))
	}
	return out
}

func TestWriteIsDeterministic(t *testing.T) {
	doc := sampleDoc()
	a := encode(t, doc)
	slices.Reverse(doc.Packages)
	doc.Packages = append(doc.Packages, doc.Packages[0]) // an identical duplicate
	if b := encode(t, doc); !bytes.Equal(a, b) {
		t.Fatal("package order or a duplicate changed the output")
	}

	ns := func(d Document) string {
		var m struct {
			NS string `json:"documentNamespace"`
		}
		json.Unmarshal(encode(t, d), &m)
		return m.NS
	}
	base := ns(sampleDoc())
	if !strings.HasPrefix(base, namespaceBase+"bulkhead-raspberrypi3-1.2.0-") {
		t.Errorf("namespace %s", base)
	}
	changed := sampleDoc()
	changed.Packages[2].SHA256 = strings.Repeat("02", 32)
	otherBoard := sampleDoc()
	otherBoard.Board = "raspberrypi4"
	if ns(changed) == base || ns(otherBoard) == base {
		t.Error("the namespace does not follow the content")
	}
	fixed := sampleDoc()
	fixed.Namespace = "https://example.org/spdx/x"
	if ns(fixed) != "https://example.org/spdx/x" {
		t.Error("an explicit namespace was not kept")
	}
}

func TestWriteRejectsInvalidInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Document)
		want   string
	}{
		{"no creation time", func(d *Document) { d.Created = time.Time{} }, "SOURCE_DATE_EPOCH"},
		{"a bad creator", func(d *Document) { d.Creator = "bulkhead" }, `must start with "Tool: "`},
		{"a download location that is not a URL", func(d *Document) { d.Packages[1].DownloadLocation = "pool:pool/main/g/gcc-12/x.deb" }, "give the full URL"},
		{"a short digest", func(d *Document) { d.Packages[1].SHA256 = "abcd" }, "64 lowercase hex"},
		{"a license that is not an expression", func(d *Document) { d.Packages[1].License = "GPL-2+ or BSD" }, "LicenseExpression"},
		{"a deb without architecture", func(d *Document) { d.Packages[1].Arch = "" }, "architecture"},
		{"an unknown kind", func(d *Document) { d.Packages[1].Kind = "rpm" }, `kind "rpm"`},
		{"a duplicate that differs", func(d *Document) {
			p := d.Packages[1]
			p.SHA256 = strings.Repeat("cd", 32)
			d.Packages = append(d.Packages, p)
		}, "listed twice with different details"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := sampleDoc()
			tc.change(&doc)
			err := Write(&bytes.Buffer{}, doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLicenseExpression(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, "NOASSERTION"},
		{[]string{"GPL-2+"}, "GPL-2.0-or-later"},
		{[]string{"Expat", "BSD-3-clause", "expat"}, "BSD-3-Clause AND MIT"},
		{[]string{"public-domain", "GPL-2"}, "GPL-2.0-only AND LicenseRef-public-domain"},
		{[]string{"Sun Microsystems"}, "LicenseRef-Sun-Microsystems"},
	} {
		got := LicenseExpression(tc.in)
		if got != tc.want {
			t.Errorf("LicenseExpression(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if err := checkLicenseExpression(got); err != nil {
			t.Errorf("LicenseExpression(%q) = %q, invalid: %v", tc.in, got, err)
		}
	}
	for expr, ok := range map[string]bool{
		"MIT": true, "(MIT OR Apache-2.0) AND BSD-3-Clause": true, "GPL-2.0-or-later WITH Linux-syscall-note": true,
		"DocumentRef-x:LicenseRef-y": true, "GPL-2.0+": true, "NONE": true,
		"MIT or BSD": false, "(MIT": false, "MIT AND": false, "WITH MIT": false, "": false, "MIT BSD": false,
	} {
		if err := checkLicenseExpression(expr); (err == nil) != ok {
			t.Errorf("checkLicenseExpression(%q) = %v, want ok=%v", expr, err, ok)
		}
	}
}

func TestPURL(t *testing.T) {
	for _, tc := range []struct {
		p    Package
		want string
	}{
		{Package{Kind: Deb, Name: "libstdc++6", Version: "12.2.0-14", Arch: "arm64"}, "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=arm64"},
		{Package{Kind: Deb, Name: "raspi-firmware", Version: "1:1.20230405-1", Arch: "all"}, "pkg:deb/debian/raspi-firmware@1%3A1.20230405-1?arch=all"},
		{Package{Kind: GoModule, Name: "github.com/u-root/u-root", Version: "v0.16.0"}, "pkg:golang/github.com/u-root/u-root@v0.16.0"},
		{Package{Kind: GoModule, Name: "github.com/bulkhead-os/bulkhead"}, "pkg:golang/github.com/bulkhead-os/bulkhead"},
	} {
		if got := purl(tc.p); got != tc.want {
			t.Errorf("purl(%s) = %s, want %s", tc.p.Name, got, tc.want)
		}
	}
	if got := goProxyURL("github.com/ProtonMail/go-crypto", "v1.5.2"); got != "https://proxy.golang.org/github.com/!proton!mail/go-crypto/@v/v1.5.2.zip" {
		t.Errorf("goProxyURL = %s", got)
	}
}

func TestGoModulesOfABuiltBinary(t *testing.T) {
	// Test binaries carry no dependency list, so build a real program of
	// this module, like the builder's compiled programs.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the fixture: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "gomodbin")
	cmd := exec.Command(gobin, "build", "-buildvcs=false", "-o", bin, "./testdata/gomodbin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mods, err := GoModules(bin)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Package{}
	for _, m := range mods {
		byName[m.Name] = m
		if m.Kind != GoModule {
			t.Errorf("%s: kind %q", m.Name, m.Kind)
		}
	}
	if m, ok := byName["github.com/bulkhead-os/bulkhead"]; !ok || m.Version != "" || m.DownloadLocation != NoAssertion {
		t.Errorf("main module %+v, want no version", m)
	}
	if m := byName["github.com/google/uuid"]; m.Version != "v1.6.0" || !strings.HasSuffix(m.DownloadLocation, "/github.com/google/uuid/@v/v1.6.0.zip") {
		t.Errorf("uuid %+v", m)
	}
	if m := byName["stdlib"]; !strings.HasPrefix(m.Version, "go1.") || m.PURL != "pkg:golang/stdlib@"+m.Version {
		t.Errorf("stdlib %+v", m)
	}
	if !slices.IsSortedFunc(mods, func(a, b Package) int {
		if less(a, b) {
			return -1
		}
		return 1
	}) {
		t.Error("not sorted")
	}
	// And they go into a valid document.
	doc := sampleDoc()
	doc.Packages = append(doc.Packages[:5:5], mods...)
	encode(t, doc)

	if _, err := GoModules(filepath.Join("testdata", "sbom.golden.json")); err == nil || !strings.Contains(err.Error(), "Go binary") {
		t.Errorf("err = %v", err)
	}
}

func FuzzCheckLicenseExpression(f *testing.F) {
	f.Add("(MIT OR Apache-2.0) AND GPL-2.0-or-later WITH Linux-syscall-note")
	f.Fuzz(func(t *testing.T, expr string) {
		if checkLicenseExpression(expr) == nil && strings.TrimSpace(expr) == "" {
			t.Fatal("empty expression accepted")
		}
	})
}
