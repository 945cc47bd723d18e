package debian

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// MirrorEnv is the environment variable a caller offers to choose mirrors
// instead of the host's apt sources; see ParseMirrorEnv for its syntax.
const MirrorEnv = "BULKHEAD_DEBIAN_MIRROR"

// Source is one archive location: a base URI and the suites under its dists/.
//
// Components records what the configuration listed, for diagnostics only:
// Archive.Index fetches every component the caller asks for that the suite's
// signed Release file lists, because the host listing only "main" says
// nothing about what a board needs (raspi-firmware is in non-free-firmware
// on the same mirror).
//
// apt options such as signed-by= and arch= are not kept: the archive is
// verified against Debian's keyrings embedded in this package, and a board
// chooses its own architecture whatever the host's apt is restricted to.
type Source struct {
	URI        string
	Suites     []string
	Components []string
}

func (s Source) String() string {
	return s.URI + " " + strings.Join(s.Suites, " ")
}

// normURI trims the trailing slash so URI + "/dists/..." is well formed.
func normURI(u string) string { return strings.TrimRight(u, "/") }

// supportedURI reports whether the fetcher can read from u. apt also knows
// cdrom:, file:, tor+http: and more; a host using those still works if the
// caller configures an http mirror through MirrorEnv.
func supportedURI(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")
}

// ParseSourcesList parses apt's one-line format (sources.list and
// sources.list.d/*.list):
//
//	deb [ option=value ... ] uri suite [component ...]
//
// deb-src lines, comments and blank lines are skipped; options are parsed
// and dropped (see Source).
func ParseSourcesList(r io.Reader) ([]Source, error) {
	var out []Source
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		typ, rest, _ := strings.Cut(line, " ")
		typ = strings.TrimSpace(typ)
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(typ, "deb[") || strings.HasPrefix(typ, "deb-src[") {
			// "deb[arch=amd64] uri ..." without a blank is accepted by apt.
			i := strings.IndexByte(typ, '[')
			rest = typ[i:] + " " + rest
			typ = typ[:i]
		}
		if typ != "deb" && typ != "deb-src" {
			return nil, fmt.Errorf("line %d: unknown type %q (want deb or deb-src)", n, typ)
		}
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("line %d: option list opened with [ is not closed with ]", n)
			}
			for _, opt := range strings.Fields(rest[1:end]) {
				if !strings.Contains(opt, "=") {
					return nil, fmt.Errorf("line %d: option %q is not name=value", n, opt)
				}
			}
			rest = strings.TrimSpace(rest[end+1:])
		}
		f := strings.Fields(rest)
		// cdrom:[Debian GNU/Linux 12]/ has blanks inside its brackets.
		if len(f) > 0 && strings.Contains(f[0], "[") && !strings.Contains(f[0], "]") {
			for len(f) > 1 && !strings.Contains(f[0], "]") {
				f = append([]string{f[0] + " " + f[1]}, f[2:]...)
			}
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want %s uri suite [component ...]", n, typ)
		}
		if typ == "deb-src" {
			continue
		}
		// A suite ending in "/" is a flat repository: it has no
		// components, and it is kept so the caller sees it was read.
		out = append(out, Source{URI: normURI(f[0]), Suites: []string{f[1]}, Components: slices.Clone(f[2:])})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// ParseDeb822 parses apt's deb822 format (sources.list.d/*.sources):
// stanzas with Types, URIs, Suites and Components. Stanzas with "Enabled: no"
// or without "deb" in Types are skipped. Every URI of a stanza becomes one
// Source carrying all of the stanza's suites.
func ParseDeb822(r io.Reader) ([]Source, error) {
	var out []Source
	err := parseDeb822(r, true, func(s Stanza) error {
		if strings.EqualFold(strings.TrimSpace(s.Get("Enabled")), "no") {
			return nil
		}
		types := strings.Fields(s.Get("Types"))
		if len(types) == 0 {
			return errors.New("no Types field")
		}
		if !slices.Contains(types, "deb") {
			return nil
		}
		uris := strings.Fields(s.Get("URIs"))
		suites := strings.Fields(s.Get("Suites"))
		if len(uris) == 0 || len(suites) == 0 {
			return errors.New("a deb stanza needs URIs and Suites")
		}
		comps := strings.Fields(s.Get("Components"))
		for _, u := range uris {
			out = append(out, Source{URI: normURI(u), Suites: slices.Clone(suites), Components: slices.Clone(comps)})
		}
		return nil
	})
	return out, err
}

// HostSources reads the apt sources of the system mounted at root ("/" for
// this host): root/etc/apt/sources.list, then sources.list.d/*.list and
// *.sources in name order. Other files in sources.list.d (*.disabled,
// *.save, editor backups) are ignored, as apt ignores them. Sources with
// a scheme other than http or https are dropped.
func HostSources(root string) ([]Source, error) {
	srcs, _, err := hostSources(root)
	return srcs, err
}

func hostSources(root string) ([]Source, []string, error) {
	etc := filepath.Join(root, "etc", "apt")
	files := []string{filepath.Join(etc, "sources.list")}
	entries, err := os.ReadDir(filepath.Join(etc, "sources.list.d"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("read apt sources: %w", err)
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || (!strings.HasSuffix(n, ".list") && !strings.HasSuffix(n, ".sources")) {
			continue
		}
		files = append(files, filepath.Join(etc, "sources.list.d", n))
	}
	var out []Source
	var read []string
	for _, p := range files {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, read, fmt.Errorf("read apt sources: %w", err)
		}
		var srcs []Source
		if strings.HasSuffix(p, ".sources") {
			srcs, err = ParseDeb822(f)
		} else {
			srcs, err = ParseSourcesList(f)
		}
		f.Close()
		if err != nil {
			return nil, read, fmt.Errorf("apt sources %s: %w: fix the file or set %s", p, err, MirrorEnv)
		}
		read = append(read, p)
		for _, s := range srcs {
			if !supportedURI(s.URI) {
				slog.Debug("debian: ignoring apt source with an unsupported scheme", "uri", s.URI, "file", p)
				continue
			}
			out = append(out, s)
		}
	}
	return out, read, nil
}

// excludedSuffixes are suites of a release that change what a stable system
// installs beyond its point releases and security fixes. An image must not
// pick them up because the build host (or a mirror setting) enabled them:
// apt pins backports below the release, but a resolver taking the highest
// version across suites would prefer them everywhere.
var excludedSuffixes = []string{"-backports", "-backports-sloppy", "-proposed-updates", "-proposed"}

// ForRelease keeps, from every source, the suites that belong to release:
// the release itself and release-<anything> (bookworm-updates,
// bookworm-security), except backports and proposed updates. Sources left
// without a suite are dropped.
//
// A source with no suites at all (ParseMirrorEnv's form for a bare URI)
// stands for release and release-updates. The security suite is not assumed
// on the same URI: Debian serves it from a separate archive root, so it must
// be listed with its own URI.
//
// Suite aliases (stable, oldstable) are not recognised: which release they
// mean changes over time, which is what a lock file must not depend on.
func ForRelease(srcs []Source, release string) []Source {
	var out []Source
	for _, s := range srcs {
		if len(s.Suites) == 0 {
			s.Suites = []string{release, release + "-updates"}
			out = append(out, s)
			continue
		}
		var keep []string
		for _, suite := range s.Suites {
			if suite != release && !strings.HasPrefix(suite, release+"-") {
				continue
			}
			if slices.ContainsFunc(excludedSuffixes, func(x string) bool { return suite == release+x }) {
				continue
			}
			if !slices.Contains(keep, suite) {
				keep = append(keep, suite)
			}
		}
		if len(keep) > 0 {
			s.Suites = keep
			out = append(out, s)
		}
	}
	return out
}

// ParseMirrorEnv parses the value of BULKHEAD_DEBIAN_MIRROR: one or more
// entries separated by ";", each "<uri> [suite ...]". An entry without
// suites means the release and release-updates (ForRelease fills them in);
// the security archive is a separate entry with its own URI, for example
//
//	http://mirror.example/debian; http://mirror.example/debian-security bookworm-security
func ParseMirrorEnv(s string) ([]Source, error) {
	var out []Source
	for entry := range strings.SplitSeq(s, ";") {
		f := strings.Fields(entry)
		if len(f) == 0 {
			continue
		}
		if !supportedURI(f[0]) {
			return nil, fmt.Errorf("%s: %q is not an http:// or https:// URI: want \"<uri> [suite ...]\" entries separated by \";\"", MirrorEnv, f[0])
		}
		out = append(out, Source{URI: normURI(f[0]), Suites: slices.Clone(f[1:])})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is set but names no mirror: want \"<uri> [suite ...]\"", MirrorEnv)
	}
	return out, nil
}

// SourcesFor returns the sources to resolve release from: the mirrors in
// mirrorEnv (the value of BULKHEAD_DEBIAN_MIRROR) when it is non-empty, else
// the apt sources of the system at root filtered with ForRelease. When none
// remain, the error names the files read and how to configure a mirror.
func SourcesFor(root, release, mirrorEnv string) ([]Source, error) {
	if strings.TrimSpace(mirrorEnv) != "" {
		srcs, err := ParseMirrorEnv(mirrorEnv)
		if err != nil {
			return nil, err
		}
		out := ForRelease(srcs, release)
		if len(out) == 0 {
			return nil, fmt.Errorf("%s=%q lists no suite of %s (want %s, %s-updates or %s-security)", MirrorEnv, mirrorEnv, release, release, release, release)
		}
		return out, nil
	}
	srcs, read, err := hostSources(root)
	if err != nil {
		return nil, err
	}
	out := ForRelease(srcs, release)
	if len(out) == 0 {
		what := "no apt sources files were found under " + filepath.Join(root, "etc", "apt")
		if len(read) > 0 {
			what = "read " + strings.Join(read, ", ")
		}
		return nil, fmt.Errorf("no Debian %s source configured (%s): add an http(s) %s source to the host's apt sources or set %s=\"<uri> [suite ...]\"",
			release, what, release, MirrorEnv)
	}
	return out, nil
}
