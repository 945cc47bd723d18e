package sbom

import (
	"debug/buildinfo"
	"fmt"
	"sort"
	"strings"
)

// GoModules lists what the Go binary at binaryPath was built from, as
// recorded by the Go toolchain (debug/buildinfo): the main module, every
// dependency module (its replacement where go.mod replaced it, since that is
// the code compiled in) and the standard library as "stdlib" at the
// toolchain's version. "stdlib" is the name govulncheck, Grype and Trivy
// match Go security advisories against, which a made-up toolchain module
// name would defeat. The main module of a development build has no version.
func GoModules(binaryPath string) ([]Package, error) {
	bi, err := buildinfo.ReadFile(binaryPath)
	if err != nil {
		return nil, fmt.Errorf("go modules of %s: %w: is it a Go binary built with module support?", binaryPath, err)
	}
	var out []Package
	add := func(path, version string) {
		if version == "(devel)" {
			version = ""
		}
		out = append(out, Package{
			Kind:             GoModule,
			Name:             path,
			Version:          version,
			DownloadLocation: goProxyURL(path, version),
		})
	}
	if bi.Main.Path != "" {
		add(bi.Main.Path, bi.Main.Version)
	}
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		add(d.Path, d.Version)
	}
	// GoVersion may carry experiments after a space ("go1.26.8 X:...").
	if gov := strings.Fields(bi.GoVersion); len(gov) > 0 {
		out = append(out, Package{
			Kind:             GoModule,
			Name:             "stdlib",
			Version:          gov[0],
			DownloadLocation: "https://go.dev/dl/" + gov[0] + ".src.tar.gz",
			PURL:             "pkg:golang/stdlib@" + purlEscape(gov[0]),
		})
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out, nil
}

// goProxyURL is where the Go module proxy serves a module version's zip, or
// NOASSERTION for a module without a version (the main module, a local
// replacement). Upper-case letters are escaped as "!" + lower case, the
// proxy protocol's case encoding.
func goProxyURL(path, version string) string {
	if version == "" {
		return NoAssertion
	}
	return "https://proxy.golang.org/" + caseEscape(path) + "/@v/" + caseEscape(version) + ".zip"
}

func caseEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
