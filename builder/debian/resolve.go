package debian

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Index is the set of packages of one architecture across the suites of one
// release, ready for resolution. It is immutable after construction.
type Index struct {
	// Arch is the architecture the index was built for.
	Arch string
	// Searched describes what was read ("<uri> <suite> [components]"),
	// for error messages.
	Searched []string

	// byName holds every version of a package, highest first; among equal
	// versions the index that was read first (the release before its
	// updates) comes first.
	byName map[string][]*Package
	// providers maps a virtual name to the packages providing it.
	providers map[string][]provision
	count     int
}

// provision is one Provides entry: pkg provides a name, at version if the
// entry was versioned ("foo (= 1.2)").
type provision struct {
	pkg     *Package
	version string
}

// NewIndex builds an index of pkgs for arch. Packages of other
// architectures than arch and "all" are ignored. searched describes the
// indexes pkgs came from, for error messages.
func NewIndex(arch string, searched []string, pkgs []*Package) *Index {
	ix := &Index{
		Arch:      arch,
		Searched:  slices.Clone(searched),
		byName:    map[string][]*Package{},
		providers: map[string][]provision{},
	}
	for _, p := range pkgs {
		if p.Architecture != arch && p.Architecture != "all" {
			continue
		}
		ix.byName[p.Name] = append(ix.byName[p.Name], p)
		ix.count++
		for _, group := range parseRelations(p.Provides) {
			for _, alt := range group {
				ix.providers[alt.name] = append(ix.providers[alt.name], provision{pkg: p, version: alt.version})
			}
		}
	}
	for _, vs := range ix.byName {
		slices.SortStableFunc(vs, func(a, b *Package) int { return CompareVersions(b.Version, a.Version) })
	}
	return ix
}

// Len returns the number of packages in the index.
func (ix *Index) Len() int { return ix.count }

// Versions returns every version of the package called name, highest first.
func (ix *Index) Versions(name string) []*Package { return slices.Clone(ix.byName[name]) }

func (ix *Index) where() string {
	return fmt.Sprintf("the %s index of %s", ix.Arch, strings.Join(ix.Searched, "; "))
}

// Resolve returns the highest version of name across the index's suites. A
// name that no package has but some package Provides resolves to its
// provider when there is exactly one; with several providers the error
// lists them so the caller can name one.
func (ix *Index) Resolve(name string) (*Package, error) {
	name = stripQualifier(name)
	if vs := ix.byName[name]; len(vs) > 0 {
		return vs[0], nil
	}
	provs := ix.providerNames(name, relation{name: name})
	switch len(provs) {
	case 0:
		return nil, fmt.Errorf("package %q is not in %s: check the name, the architecture, and that the component carrying it is requested", name, ix.where())
	case 1:
		return ix.byName[provs[0]][0], nil
	}
	return nil, fmt.Errorf("package %q is virtual and provided by %s in %s: name one of them instead", name, strings.Join(provs, ", "), ix.where())
}

// providerNames returns the sorted names of packages whose Provides satisfy
// rel.
func (ix *Index) providerNames(name string, rel relation) []string {
	var names []string
	for _, pv := range ix.providers[name] {
		if providesSatisfy(pv, rel) && !slices.Contains(names, pv.pkg.Name) {
			names = append(names, pv.pkg.Name)
		}
	}
	slices.Sort(names)
	return names
}

// providesSatisfy applies Debian Policy 7.5: an unversioned Provides
// satisfies only unversioned dependencies; a versioned one is compared like
// a real package's version.
func providesSatisfy(pv provision, rel relation) bool {
	if rel.op == "" {
		return true
	}
	if pv.version == "" {
		return false
	}
	return versionSatisfies(pv.version, rel.op, rel.version)
}

// relation is one alternative of a dependency: a package name with an
// optional version restriction.
type relation struct {
	name, op, version string
}

func (r relation) String() string {
	if r.op == "" {
		return r.name
	}
	return fmt.Sprintf("%s (%s %s)", r.name, r.op, r.version)
}

func formatGroup(g []relation) string {
	s := make([]string, len(g))
	for i, r := range g {
		s[i] = r.String()
	}
	return strings.Join(s, " | ")
}

// stripQualifier removes a multiarch qualifier (":any", ":native", ":arm64").
// The index holds one architecture plus "all", so every qualifier means the
// package of this index.
func stripQualifier(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return name
}

// parseRelations parses a Depends-style field: groups separated by ",",
// alternatives by "|", each "name[:qualifier] [(op version)] [arch list]
// [<profiles>]". Architecture lists and build profiles only occur in source
// packages' Build-Depends; they are dropped. Malformed entries are skipped:
// dpkg accepted the field when the archive was built.
func parseRelations(field string) [][]relation {
	var out [][]relation
	for grp := range strings.SplitSeq(field, ",") {
		var alts []relation
		for alt := range strings.SplitSeq(grp, "|") {
			alt = strings.TrimSpace(alt)
			if i := strings.IndexAny(alt, "[<"); i >= 0 && !strings.Contains(alt[:i], "(") {
				alt = strings.TrimSpace(alt[:i])
			}
			if alt == "" {
				continue
			}
			var r relation
			nameEnd := strings.IndexAny(alt, " \t(")
			if nameEnd < 0 {
				nameEnd = len(alt)
			}
			r.name = stripQualifier(alt[:nameEnd])
			rest := strings.TrimSpace(alt[nameEnd:])
			if strings.HasPrefix(rest, "(") {
				end := strings.IndexByte(rest, ')')
				if end < 0 {
					continue
				}
				inner := strings.TrimSpace(rest[1:end])
				opEnd := 0
				for opEnd < len(inner) && strings.IndexByte("<>=", inner[opEnd]) >= 0 {
					opEnd++
				}
				r.op = inner[:opEnd]
				r.version = strings.TrimSpace(inner[opEnd:])
				switch r.op {
				case "<":
					r.op = "<=" // obsolete spelling, Policy 7.1
				case ">":
					r.op = ">="
				case "<<", "<=", "=", ">=", ">>":
				default:
					continue
				}
				if r.version == "" {
					continue
				}
			}
			if r.name != "" {
				alts = append(alts, r)
			}
		}
		if len(alts) > 0 {
			out = append(out, alts)
		}
	}
	return out
}

// versionSatisfies reports whether version v meets "op want".
func versionSatisfies(v, op, want string) bool {
	c := CompareVersions(v, want)
	switch op {
	case "<<":
		return c < 0
	case "<=":
		return c <= 0
	case "=":
		return c == 0
	case ">=":
		return c >= 0
	case ">>":
		return c > 0
	}
	return true
}

func (r relation) matches(p *Package) bool {
	return p.Name == r.name && (r.op == "" || versionSatisfies(p.Version, r.op, r.version))
}

// closure is the state of one Closure call.
type closure struct {
	ix       *Index
	exclude  map[string]bool
	selected map[string]*Package
	queue    []*Package
}

// satisfied reports whether an alternative of group is excluded or already
// met by a selected package (by name or through Provides).
func (c *closure) satisfied(group []relation) bool {
	for _, r := range group {
		if c.exclude[r.name] {
			return true
		}
		if p := c.selected[r.name]; p != nil && r.matches(p) {
			return true
		}
		for _, pv := range c.ix.providers[r.name] {
			if c.selected[pv.pkg.Name] == pv.pkg && providesSatisfy(pv, r) {
				return true
			}
		}
	}
	return false
}

// choose picks the package that satisfies group: the first alternative that
// can be satisfied, by its highest matching version, else through Provides
// (see Closure). It never picks a second version of a selected package.
func (c *closure) choose(group []relation) (*Package, error) {
	var problems []string
	for _, r := range group {
		if p := c.selected[r.name]; p != nil {
			problems = append(problems, fmt.Sprintf("%s is already selected at version %s", r, p.Version))
			continue
		}
		for _, p := range c.ix.byName[r.name] {
			if r.matches(p) {
				return p, nil
			}
		}
		if vs := c.ix.byName[r.name]; len(vs) > 0 {
			problems = append(problems, fmt.Sprintf("%s: the index has only %s", r, vs[0].Version))
			continue
		}
		var provs []*Package
		for _, name := range c.ix.providerNames(r.name, r) {
			if c.selected[name] != nil {
				// Selected at a version whose Provides does not
				// match (else satisfied would have said so).
				continue
			}
			for _, pv := range c.ix.providers[r.name] {
				if pv.pkg.Name == name && providesSatisfy(pv, r) {
					provs = append(provs, pv.pkg)
					break
				}
			}
		}
		if len(provs) > 1 {
			provs = preferEssentialPriority(provs)
		}
		switch len(provs) {
		case 0:
			problems = append(problems, fmt.Sprintf("%s: no such package", r))
		case 1:
			return c.highestProviding(provs[0].Name, r), nil
		default:
			names := make([]string, len(provs))
			for i, p := range provs {
				names[i] = p.Name
			}
			problems = append(problems, fmt.Sprintf("%s is virtual, provided by %s: add one of them to the board's packages", r, strings.Join(names, ", ")))
		}
	}
	return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
}

// preferEssentialPriority narrows several providers of a virtual package
// to the one with Priority required or important, if there is exactly one:
// that is the provider every Debian system has (debootstrap installs those
// priorities), e.g. mawk for awk. Otherwise all are returned, and the caller
// reports the choice to the user instead of guessing.
func preferEssentialPriority(provs []*Package) []*Package {
	var top []*Package
	for _, p := range provs {
		if p.Priority == "required" || p.Priority == "important" {
			top = append(top, p)
		}
	}
	if len(top) == 1 {
		return top
	}
	return provs
}

// highestProviding returns the highest version of package name whose
// Provides satisfies r.
func (c *closure) highestProviding(name string, r relation) *Package {
	for _, p := range c.ix.byName[name] {
		for _, pv := range c.ix.providers[r.name] {
			if pv.pkg == p && providesSatisfy(pv, r) {
				return p
			}
		}
	}
	return c.ix.byName[name][0]
}

func (c *closure) add(p *Package) {
	if c.selected[p.Name] == nil {
		c.selected[p.Name] = p
		c.queue = append(c.queue, p)
	}
}

// Closure returns roots and everything they need through Depends and
// Pre-Depends, sorted by name. A root is a package name, optionally with a
// version restriction or alternatives in Depends syntax ("foo (>= 2) | bar").
// Names in exclude count as satisfied and are not followed (the image
// provides them another way). Alternatives take the first one that can be
// satisfied, unless a later one is already selected; version restrictions
// and versioned Provides are honoured; multiarch qualifiers are ignored. A
// virtual package is satisfied by its only provider, or among several by
// the only one of Priority required or important (mawk for awk); any other
// choice is an error listing the providers, so the board names one.
//
// Recommends, Suggests, Conflicts and Breaks are not considered: an image
// is assembled from explicit inputs, not upgraded in place, and Essential
// packages are not added implicitly either.
func (ix *Index) Closure(roots []string, exclude map[string]bool) ([]*Package, error) {
	c := &closure{ix: ix, exclude: exclude, selected: map[string]*Package{}}
	// Sorting the roots makes the result independent of the order a board
	// file lists them in; choices between alternatives depend on what is
	// already selected.
	sorted := slices.Clone(roots)
	slices.Sort(sorted)
	for _, root := range sorted {
		groups := parseRelations(root)
		if len(groups) != 1 {
			return nil, fmt.Errorf("closure root %q: want one package name, optionally with a version or alternatives", root)
		}
		if c.satisfied(groups[0]) {
			continue
		}
		p, err := c.choose(groups[0])
		if err != nil {
			if len(groups[0]) == 1 && groups[0][0].op == "" {
				// The common case: give Resolve's fuller message.
				if _, rerr := ix.Resolve(groups[0][0].name); rerr != nil {
					return nil, rerr
				}
			}
			return nil, fmt.Errorf("closure root %q in %s: %w", root, ix.where(), err)
		}
		c.add(p)
	}
	for len(c.queue) > 0 {
		p := c.queue[0]
		c.queue = c.queue[1:]
		for _, field := range []string{p.PreDepends, p.Depends} {
			for _, group := range parseRelations(field) {
				if c.satisfied(group) {
					continue
				}
				dep, err := c.choose(group)
				if err != nil {
					return nil, fmt.Errorf("%s depends on %s, which cannot be satisfied from %s: %w", p, formatGroup(group), ix.where(), err)
				}
				c.add(dep)
			}
		}
	}
	out := make([]*Package, 0, len(c.selected))
	for _, p := range c.selected {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Package) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Architecture, b.Architecture))
	})
	return out, nil
}
