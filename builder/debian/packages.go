package debian

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/bulkhead-os/bulkhead/builder/lock"
)

// Pin is the lock file's record of one package; Fetch downloads by it. It is
// an alias so that the builder passes lock entries to Fetch unchanged.
type Pin = lock.Pin

// Package is one binary package from a Packages index, with where it was
// found.
type Package struct {
	Name, Version, Architecture, Source, Filename, SHA256, Section, Priority, Homepage string

	Size int64
	// Depends, PreDepends and Provides are the raw relationship fields;
	// Closure parses them.
	Depends, PreDepends, Provides string
	// Suite, Component and URI say which index listed the package.
	Suite, Component, URI string
	Essential             bool
}

// Pin returns the lock entry for p.
func (p *Package) Pin() Pin {
	return Pin{
		Name:      p.Name,
		Version:   p.Version,
		Arch:      p.Architecture,
		SHA256:    p.SHA256,
		Size:      p.Size,
		Filename:  p.Filename,
		Suite:     p.Suite,
		Component: p.Component,
		Source:    p.Source,
	}
}

func (p *Package) String() string {
	return p.Name + " " + p.Version + " (" + p.Architecture + ")"
}

// ParsePackages parses a Packages index. uri, suite and component are
// recorded in every package so that the lock knows where it came from.
// Every stanza must name a package, version and architecture, and carry the
// Filename, Size and SHA256 a download is verified with.
func ParsePackages(r io.Reader, uri, suite, component string) ([]*Package, error) {
	var out []*Package
	err := parseDeb822(r, false, func(s Stanza) error {
		p, err := packageFromStanza(s)
		if err != nil {
			return err
		}
		p.URI, p.Suite, p.Component = uri, suite, component
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse Packages of %s %s/%s: %w", uri, suite, component, err)
	}
	return out, nil
}

func packageFromStanza(s Stanza) (*Package, error) {
	// Field names in Packages files are always in their canonical case, so
	// the map is indexed directly: Get's case-insensitive fallback would
	// scan every field for each absent one, sixty thousand times.
	p := &Package{
		Name:         s["Package"],
		Version:      s["Version"],
		Architecture: s["Architecture"],
		Source:       s["Source"],
		Filename:     s["Filename"],
		SHA256:       strings.ToLower(s["SHA256"]),
		Section:      s["Section"],
		Priority:     s["Priority"],
		Homepage:     s["Homepage"],
		Depends:      s["Depends"],
		PreDepends:   s["Pre-Depends"],
		Provides:     s["Provides"],
		Essential:    s["Essential"] == "yes",
	}
	if p.Name == "" || p.Version == "" || p.Architecture == "" {
		return nil, errors.New("stanza without Package, Version or Architecture")
	}
	// "Source: glibc (2.36-9)" names a source version different from the
	// binary's; the lock only wants the source package's name.
	if name, _, ok := strings.Cut(p.Source, " "); ok {
		p.Source = name
	}
	if p.Source == "" {
		p.Source = p.Name
	}
	if p.Filename == "" || !validSHA256(p.SHA256) {
		return nil, fmt.Errorf("package %s %s has no Filename or SHA256", p.Name, p.Version)
	}
	size, err := strconv.ParseInt(s["Size"], 10, 64)
	if err != nil || size <= 0 {
		return nil, fmt.Errorf("package %s %s: Size %q", p.Name, p.Version, s["Size"])
	}
	p.Size = size
	return p, nil
}
