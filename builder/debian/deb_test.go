package debian

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var helloEntries = []tarEntry{
	{name: "./", typ: tar.TypeDir, mode: 0o755},
	{name: "./usr/", typ: tar.TypeDir, mode: 0o755},
	{name: "./usr/bin/", typ: tar.TypeDir, mode: 0o755},
	{name: "./usr/bin/hello", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\necho hello\n"},
	{name: "./usr/bin/su-hello", typ: tar.TypeReg, mode: 0o4755, body: "setuid\n"},
	{name: "./usr/bin/hi", typ: tar.TypeSymlink, link: "hello"},
	{name: "./usr/bin/hello-again", typ: tar.TypeLink, link: "./usr/bin/hello"},
	{name: "./etc/", typ: tar.TypeDir, mode: 0o755},
	{name: "./etc/shadow-ish", typ: tar.TypeReg, mode: 0o640, body: "secret\n", uid: 0, gid: 42},
	{name: "./var/lib/hello/", typ: tar.TypeDir, mode: 0o2775, uid: 0, gid: 50},
	{name: "./usr/share/doc/hello/", typ: tar.TypeDir, mode: 0o555},
	{name: "./usr/share/doc/hello/copyright", typ: tar.TypeReg, mode: 0o644, body: dep5},
	{name: "./dev/console", typ: tar.TypeChar, mode: 0o600},
}

const dep5 = `Format: copyright-format/1.0 (DEP-5)
Upstream-Name: hello

Files: *
Copyright: 2023 Somebody
License: GPL-3+

Files: lib/*
Copyright: 2020 Somebody Else
License: LGPL-2.1+ or BSD-3-clause

Files: contrib/ssl.c
License: GPL-2+ with OpenSSL exception

License: GPL-3+
 This program is free software...
 .
 On Debian systems, the full text is in /usr/share/common-licenses/GPL-3.
`

func TestExtractUnpacksEveryCompression(t *testing.T) {
	for _, comp := range []string{"xz", "zst", "gz", ""} {
		t.Run("data.tar."+comp, func(t *testing.T) {
			deb := writeTemp(t, "hello.deb", debBytes(t, comp, helloEntries))
			checkHello(t, deb)
		})
	}
	t.Run("xz without the host binary", func(t *testing.T) {
		preferHostXZ = false
		defer func() { preferHostXZ = true }()
		checkHello(t, writeTemp(t, "hello.deb", debBytes(t, "xz", helloEntries)))
	})
}

func checkHello(t *testing.T, deb string) {
	t.Helper()
	dest := t.TempDir()
	entries, err := Extract(deb, dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dest, "usr/share/doc/hello"), 0o755) })
	data, err := os.ReadFile(filepath.Join(dest, "usr/bin/hello"))
	if err != nil || string(data) != "#!/bin/sh\necho hello\n" {
		t.Fatalf("usr/bin/hello = %q, %v", data, err)
	}
	mtime := time.Date(2023, 4, 5, 6, 7, 8, 0, time.UTC)
	for p, mode := range map[string]fs.FileMode{
		"usr/bin/hello":         0o755,
		"usr/bin/su-hello":      0o755 | fs.ModeSetuid,
		"etc/shadow-ish":        0o640,
		"var/lib/hello":         0o775 | fs.ModeSetgid | fs.ModeDir,
		"usr/share/doc/hello":   0o555 | fs.ModeDir,
		"usr/share/doc/hello/.": 0o555 | fs.ModeDir,
	} {
		fi, err := os.Stat(filepath.Join(dest, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
		}
		if !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime %v, want the archive's %v", p, fi.ModTime(), mtime)
		}
	}
	if l, err := os.Readlink(filepath.Join(dest, "usr/bin/hi")); err != nil || l != "hello" {
		t.Errorf("symlink usr/bin/hi -> %q, %v", l, err)
	}
	a, _ := os.Stat(filepath.Join(dest, "usr/bin/hello"))
	b, _ := os.Stat(filepath.Join(dest, "usr/bin/hello-again"))
	if !os.SameFile(a, b) {
		t.Error("usr/bin/hello-again is not a hard link of usr/bin/hello")
	}
	if _, err := os.Lstat(filepath.Join(dest, "dev/console")); err == nil {
		t.Error("a device node was created without root")
	}
	byPath := map[string]Entry{}
	for _, e := range entries {
		byPath[e.Path] = e
	}
	if len(entries) != len(helloEntries)-1 {
		t.Errorf("%d entries, want %d (all but ./)", len(entries), len(helloEntries)-1)
	}
	want := map[string]Entry{
		"etc/shadow-ish":      {Path: "etc/shadow-ish", Mode: 0o640, UID: 0, GID: 42, Type: TypeFile, Size: 7},
		"var/lib/hello":       {Path: "var/lib/hello", Mode: fs.ModeDir | fs.ModeSetgid | 0o775, GID: 50, Type: TypeDir},
		"usr/bin/hi":          {Path: "usr/bin/hi", Mode: fs.ModeSymlink, Type: TypeSymlink, Linkname: "hello"},
		"usr/bin/hello-again": {Path: "usr/bin/hello-again", Mode: 0, Type: TypeHardlink, Linkname: "usr/bin/hello"},
		"dev/console":         {Path: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Type: TypeCharDevice},
	}
	for p, w := range want {
		if got := byPath[p]; !reflect.DeepEqual(got, w) {
			t.Errorf("entry %s = %+v, want %+v", p, got, w)
		}
	}
	if lic := Licenses(dest, "hello"); !reflect.DeepEqual(lic, []string{"BSD-3-clause", "GPL-2+", "GPL-3+", "LGPL-2.1+"}) {
		t.Errorf("Licenses = %v", lic)
	}
}

func TestExtractFilterKeepsOnlyChosenPaths(t *testing.T) {
	deb := writeTemp(t, "hello.deb", debBytes(t, "xz", helloEntries))
	dest := t.TempDir()
	entries, err := Extract(deb, dest, func(p string) bool { return strings.HasPrefix(p, "etc/") })
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Path != "etc/shadow-ish" {
		t.Fatalf("entries = %+v", entries)
	}
	if _, err := os.Stat(filepath.Join(dest, "usr")); err == nil {
		t.Error("a filtered-out directory was created")
	}
	// A hard link whose target was filtered out cannot be made.
	_, err = Extract(deb, t.TempDir(), func(p string) bool { return p == "usr/bin/hello-again" })
	if err == nil || !strings.Contains(err.Error(), "include it in the filter") {
		t.Fatalf("hard link without target: %v", err)
	}
}

func TestExtractRefusesEntriesLeavingTheDestination(t *testing.T) {
	outside := t.TempDir()
	cases := []struct {
		name    string
		entries []tarEntry
	}{
		{"a .. path", []tarEntry{{name: "./usr/../../escape", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"an absolute path", []tarEntry{{name: filepath.Join(outside, "abs"), typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"a write through an absolute symlink", []tarEntry{
			{name: "./evil", typ: tar.TypeSymlink, link: outside},
			{name: "./evil/owned", typ: tar.TypeReg, mode: 0o644, body: "x"},
		}},
		{"a write through a relative symlink", []tarEntry{
			{name: "./a/", typ: tar.TypeDir, mode: 0o755},
			{name: "./a/up", typ: tar.TypeSymlink, link: "../../../../../../../../" + outside},
			{name: "./a/up/owned", typ: tar.TypeReg, mode: 0o644, body: "x"},
		}},
		{"a directory made through a symlink", []tarEntry{
			{name: "./evil", typ: tar.TypeSymlink, link: outside},
			{name: "./evil/dir/", typ: tar.TypeDir, mode: 0o755},
		}},
		{"a hard link to a file outside", []tarEntry{
			{name: "./passwd", typ: tar.TypeLink, link: "../../../../etc/passwd"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			deb := writeTemp(t, "evil.deb", debBytes(t, "zst", tc.entries))
			_, err := Extract(deb, t.TempDir(), nil)
			if err == nil {
				t.Fatal("extraction succeeded")
			}
			left, _ := os.ReadDir(outside)
			if len(left) != 0 {
				t.Fatalf("wrote outside the destination: %v", left)
			}
		})
	}
}

func TestExtractReplacesAPlantedSymlinkInsteadOfWritingThroughIt(t *testing.T) {
	outside := t.TempDir()
	target := filepath.Join(outside, "victim")
	os.WriteFile(target, []byte("original"), 0o644)
	deb := writeTemp(t, "x.deb", debBytes(t, "gz", []tarEntry{
		{name: "./f", typ: tar.TypeSymlink, link: target},
		{name: "./f", typ: tar.TypeReg, mode: 0o644, body: "new"},
	}))
	dest := t.TempDir()
	if _, err := Extract(deb, dest, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "original" {
		t.Fatalf("wrote through the symlink: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "f")); string(b) != "new" {
		t.Fatalf("f = %q", b)
	}
}

func TestControlReadsThePackageFields(t *testing.T) {
	deb := writeTemp(t, "hello.deb", debBytes(t, "xz", helloEntries))
	c, err := Control(deb)
	if err != nil {
		t.Fatal(err)
	}
	if c["Package"] != "hello" || c["Version"] != "1.0-1" || c["Description"] != "says hello\na test package" {
		t.Fatalf("control = %v", c)
	}
}

func TestNotADebIsRefused(t *testing.T) {
	data := map[string][]byte{
		"garbage":            []byte("hello world"),
		"empty ar":           []byte(arMagic),
		"wrong first member": arBytes(member("control.tar.gz", []byte("x")), member("debian-binary", []byte("2.0\n"))),
		"format 3":           arBytes(member("debian-binary", []byte("3.0\n")), member("control.tar", nil), member("data.tar", nil)),
		"no data member":     arBytes(member("debian-binary", []byte("2.0\n")), member("control.tar", nil)),
		"lzma data":          arBytes(member("debian-binary", []byte("2.0\n")), member("control.tar", nil), member("data.tar.lzma", nil)),
		"truncated member":   bytes.TrimSuffix(debBytes(t, "xz", helloEntries), []byte("\n"))[:200],
		"corrupt xz":         corruptData(debBytes(t, "xz", helloEntries)),
	}
	for name, b := range data {
		t.Run(name, func(t *testing.T) {
			if _, err := Extract(writeTemp(t, "x.deb", b), t.TempDir(), nil); err == nil {
				t.Error("Extract succeeded")
			}
		})
	}
}

// corruptData flips bytes in the middle of the last member.
func corruptData(deb []byte) []byte {
	b := bytes.Clone(deb)
	for i := len(b) - 60; i < len(b)-40; i++ {
		b[i] ^= 0x55
	}
	return b
}

func TestLicensesIgnoresFreeFormCopyrightFiles(t *testing.T) {
	tree := t.TempDir()
	doc := filepath.Join(tree, "usr/share/doc/pkg")
	os.MkdirAll(doc, 0o755)
	os.WriteFile(filepath.Join(doc, "copyright"), []byte("This package was debianized by...\nLicense: see below\n"), 0o644)
	if got := Licenses(tree, "pkg"); got != nil {
		t.Errorf("free-form copyright gave %v", got)
	}
	if got := Licenses(tree, "missing"); got != nil {
		t.Errorf("missing copyright gave %v", got)
	}
	if got := Licenses(tree, "../../etc"); got != nil {
		t.Errorf("path-like package name gave %v", got)
	}
}

// The fixture is Debian's own libseccomp2 package for arm64: control.tar.xz,
// data.tar.xz, a DEP-5 copyright file and a symlinked shared library.
func TestRealDebianPackageExtracts(t *testing.T) {
	deb := "testdata/libseccomp2_2.5.4-1+deb12u1_arm64.deb"
	c, err := Control(deb)
	if err != nil {
		t.Fatal(err)
	}
	if c["Package"] != "libseccomp2" || c["Version"] != "2.5.4-1+deb12u1" || c["Architecture"] != "arm64" {
		t.Fatalf("control = %v", c)
	}
	dest := t.TempDir()
	entries, err := Extract(deb, dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lib, link *Entry
	for i, e := range entries {
		switch e.Path {
		case "usr/lib/aarch64-linux-gnu/libseccomp.so.2.5.4":
			lib = &entries[i]
		case "usr/lib/aarch64-linux-gnu/libseccomp.so.2":
			link = &entries[i]
		}
	}
	if lib == nil || lib.Type != TypeFile || lib.Size == 0 || lib.UID != 0 {
		t.Fatalf("library entry %+v", lib)
	}
	if link == nil || link.Type != TypeSymlink || link.Linkname != "libseccomp.so.2.5.4" {
		t.Fatalf("soname link entry %+v", link)
	}
	fi, err := os.Stat(filepath.Join(dest, link.Path))
	if err != nil || fi.Size() != lib.Size {
		t.Fatalf("following the extracted symlink: %v, %v", fi, err)
	}
	if lic := Licenses(dest, "libseccomp2"); !reflect.DeepEqual(lic, []string{"LGPL-2.1"}) {
		t.Errorf("Licenses = %v", lic)
	}
}
