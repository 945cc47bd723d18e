package debian

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
)

// licenseSplit separates the licenses of one DEP-5 License expression:
// "GPL-2+ or Artistic-1.0", "MIT and BSD-3-clause", "LGPL-2.1+, GPL-2+".
var licenseSplit = regexp.MustCompile(`(?i)\s+(?:or|and)\s+|\s*[,|]\s*`)

// Licenses returns the license short names of package pkgName as its
// machine-readable (DEP-5) usr/share/doc/<pkg>/copyright in the extracted
// tree declares them: every License field's first line, split into its
// alternatives and conjunctions, first word of each ("GPL-2+ with OpenSSL
// exception" gives GPL-2+), deduplicated and sorted. A missing file or a
// free-form copyright file gives nil: only a DEP-5 file states licenses in a
// form a tool may repeat without reading prose.
//
// The file is read through an os.Root on tree, so a doc directory that is a
// symlink (libgcc-s1 -> gcc-12-base) is followed only inside the tree.
func Licenses(tree, pkgName string) []string {
	if tree == "" || pkgName == "" || strings.ContainsAny(pkgName, "/\x00") || pkgName == ".." || pkgName == "." {
		return nil
	}
	root, err := os.OpenRoot(tree)
	if err != nil {
		return nil
	}
	defer root.Close()
	data, err := root.ReadFile(path.Join("usr/share/doc", pkgName, "copyright"))
	if err != nil {
		return nil
	}
	return parseCopyrightLicenses(data)
}

// parseCopyrightLicenses reads License fields line by line rather than as
// strict deb822: many real copyright files have small syntax slips (a
// missing continuation space, a stray blank line inside a field), and the
// License lines themselves are still unambiguous.
func parseCopyrightLicenses(data []byte) []string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	first := true
	var out []string
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			// DEP-5 files start with the Format field naming the spec.
			if !strings.HasPrefix(strings.ToLower(line), "format:") {
				return nil
			}
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(key, "License") {
			continue
		}
		for _, part := range licenseSplit.Split(strings.TrimSpace(val), -1) {
			f := strings.Fields(strings.Trim(part, "() "))
			if len(f) == 0 {
				continue
			}
			name := strings.Trim(f[0], "()")
			if name != "" && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}
