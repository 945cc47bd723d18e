package sbom

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// debianToSPDX maps the license short names of Debian's machine-readable
// copyright format (DEP-5, "Short name" table) and common variants to SPDX
// identifiers. Keys are lower case.
var debianToSPDX = map[string]string{
	"afl-2.1": "AFL-2.1", "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later",
	"apache-1.0": "Apache-1.0", "apache-1.1": "Apache-1.1", "apache-2": "Apache-2.0", "apache-2.0": "Apache-2.0",
	"artistic": "Artistic-1.0-Perl", "artistic-1.0": "Artistic-1.0", "artistic-2.0": "Artistic-2.0",
	"bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause", "bsd-4-clause": "BSD-4-Clause",
	"bsl-1.0": "BSL-1.0", "boost-1.0": "BSL-1.0",
	"cc-by-3.0": "CC-BY-3.0", "cc-by-4.0": "CC-BY-4.0", "cc-by-sa-3.0": "CC-BY-SA-3.0", "cc-by-sa-4.0": "CC-BY-SA-4.0",
	"cc0": "CC0-1.0", "cc0-1.0": "CC0-1.0",
	"cddl-1.0": "CDDL-1.0", "cpl-1.0": "CPL-1.0", "curl": "curl", "epl-1.0": "EPL-1.0", "epl-2.0": "EPL-2.0",
	"expat": "MIT", "mit": "MIT",
	"gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later", "gfdl-1.3": "GFDL-1.3-only", "gfdl-1.3+": "GFDL-1.3-or-later",
	"gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later",
	"gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later", "gpl-2.0": "GPL-2.0-only", "gpl-2.0+": "GPL-2.0-or-later",
	"gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later", "gpl-3.0": "GPL-3.0-only", "gpl-3.0+": "GPL-3.0-or-later",
	"isc":    "ISC",
	"lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later", "lgpl-2.0": "LGPL-2.0-only", "lgpl-2.0+": "LGPL-2.0-or-later",
	"lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later",
	"lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later", "lgpl-3.0": "LGPL-3.0-only", "lgpl-3.0+": "LGPL-3.0-or-later",
	"lppl-1.3c": "LPPL-1.3c", "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0",
	"openssl": "OpenSSL", "psf-2": "PSF-2.0", "python-2.0": "Python-2.0",
	"unicode-dfs-2016": "Unicode-DFS-2016", "unlicense": "Unlicense", "wtfpl": "WTFPL",
	"x11": "X11", "zlib": "Zlib", "zpl-2.1": "ZPL-2.1",
	"ofl-1.1": "OFL-1.1", "sissl": "SISSL", "ssleay": "SSLeay",
}

// LicenseExpression turns the license short names of a Debian package's
// copyright file (as the debian package reads them) into one SPDX license
// expression: known names become SPDX identifiers, others
// LicenseRef-<name> (which Write then defines in the document), all joined
// with AND, deduplicated and sorted. No names gives NOASSERTION.
//
// AND is deliberately conservative: a Debian package usually holds files
// under several licenses at once, and the short-name list no longer says
// which of them were alternatives ("or").
func LicenseExpression(names []string) string {
	seen := map[string]bool{}
	var ids []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		id, ok := debianToSPDX[strings.ToLower(n)]
		if !ok {
			id = "LicenseRef-" + strings.Trim(idUnsafe.ReplaceAllString(n, "-"), "-")
			if id == "LicenseRef-" {
				continue
			}
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return NoAssertion
	}
	sort.Strings(ids)
	return strings.Join(ids, " AND ")
}

var (
	licenseRefs = regexp.MustCompile(`\bLicenseRef-[A-Za-z0-9.-]+`)
	licenseID   = regexp.MustCompile(`^(DocumentRef-[A-Za-z0-9.-]+:)?(LicenseRef-[A-Za-z0-9.-]+|[A-Za-z0-9][A-Za-z0-9.-]*\+?)$`)
)

// checkLicenseExpression checks the syntax of SPDX 2.3 Annex D: license
// identifiers joined by AND, OR and WITH (upper case), with parentheses;
// NONE and NOASSERTION stand alone.
func checkLicenseExpression(expr string) error {
	if expr == "NONE" || expr == NoAssertion {
		return nil
	}
	p := exprParser{tokens: strings.Fields(strings.NewReplacer("(", " ( ", ")", " ) ").Replace(expr))}
	if err := p.or(); err != nil {
		return err
	}
	if p.pos != len(p.tokens) {
		return fmt.Errorf("unexpected %q", p.tokens[p.pos])
	}
	return nil
}

type exprParser struct {
	tokens []string
	pos    int
}

func (p *exprParser) peek() string {
	if p.pos < len(p.tokens) {
		return p.tokens[p.pos]
	}
	return ""
}

func (p *exprParser) or() error {
	if err := p.and(); err != nil {
		return err
	}
	for p.peek() == "OR" {
		p.pos++
		if err := p.and(); err != nil {
			return err
		}
	}
	return nil
}

func (p *exprParser) and() error {
	if err := p.term(); err != nil {
		return err
	}
	for p.peek() == "AND" {
		p.pos++
		if err := p.term(); err != nil {
			return err
		}
	}
	return nil
}

func (p *exprParser) term() error {
	tok := p.peek()
	switch {
	case tok == "":
		return errors.New("expression ends early")
	case tok == "(":
		p.pos++
		if err := p.or(); err != nil {
			return err
		}
		if p.peek() != ")" {
			return errors.New("missing \")\"")
		}
		p.pos++
		return nil
	case tok == "AND" || tok == "OR" || tok == "WITH" || tok == ")" || !licenseID.MatchString(tok):
		return fmt.Errorf("%q is not a license identifier", tok)
	}
	p.pos++
	if p.peek() == "WITH" {
		p.pos++
		if exc := p.peek(); exc == "" || !licenseID.MatchString(exc) || exc == "AND" || exc == "OR" {
			return fmt.Errorf("WITH needs an exception identifier, got %q", exc)
		}
		p.pos++
	}
	return nil
}
