package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// alias is one "alias=" pattern of a module (fnmatch syntax, normalized).
type alias struct {
	pattern string
	module  string
}

// indexModules lists the module files under ModulesDir and reads
// modules.builtin and modules.builtin.modinfo. Module contents are read
// lazily: Debian's arm64 tree has ~3700 modules and an initramfs needs ~20.
func (k *Kernel) indexModules() error {
	k.modules = map[string]string{}
	k.builtin = map[string]bool{}
	err := filepath.WalkDir(k.ModulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// Only regular files: Debian's build and source entries are
		// symlinks to the (absent) headers package.
		if !d.Type().IsRegular() {
			return nil
		}
		name := moduleName(d.Name())
		if name == "" {
			return nil
		}
		rel, err := filepath.Rel(k.ModulesDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		old, dup := k.modules[name]
		switch {
		case !dup:
			k.modules[name] = rel
		// depmod's default search order prefers updates/ over the
		// kernel's own tree, so a vendor can replace a module there.
		case strings.HasPrefix(rel, "updates/") && !strings.HasPrefix(old, "updates/"):
			k.modules[name] = rel
		case strings.HasPrefix(old, "updates/") && !strings.HasPrefix(rel, "updates/"):
		default:
			return fmt.Errorf("module %s exists twice, as %s and %s: remove one from the kernel tree", name, old, rel)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("modules of kernel %s: %w", k.Version, err)
	}

	data, err := os.ReadFile(filepath.Join(k.ModulesDir, "modules.builtin"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Kernels built without modules.builtin (very old or custom)
		// simply have no built-in module we could skip.
	case err != nil:
		return fmt.Errorf("kernel %s: %w", k.Version, err)
	default:
		for _, line := range strings.Split(string(data), "\n") {
			if name := moduleName(path.Base(strings.TrimSpace(line))); name != "" {
				k.builtin[name] = true
			}
		}
	}

	data, err = os.ReadFile(filepath.Join(k.ModulesDir, "modules.builtin.modinfo"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("kernel %s: %w", k.Version, err)
	default:
		// Entries read "<module>.<key>=<value>".
		for _, field := range bytes.Split(data, []byte{0}) {
			key, value, ok := strings.Cut(string(field), "=")
			mod, key2, ok2 := strings.Cut(key, ".")
			if ok && ok2 && key2 == "alias" {
				k.builtinAliases = append(k.builtinAliases, alias{normalizeAlias(value), normalize(mod)})
				k.builtin[normalize(mod)] = true
			}
		}
	}
	return nil
}

// modinfo returns the parsed .modinfo of the module at rel (cached).
func (k *Kernel) modinfo(rel string) (*modinfo, error) {
	k.mu.Lock()
	mi := k.info[rel]
	k.mu.Unlock()
	if mi != nil {
		return mi, nil
	}
	mi, err := readModinfo(filepath.Join(k.ModulesDir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Version, err)
	}
	k.mu.Lock()
	k.info[rel] = mi
	k.mu.Unlock()
	return mi, nil
}

// Closure returns the modules named by names (module names; "-" and "_"
// are equivalent) together with everything they need, in an order in which
// they can be loaded one after the other: every module comes after its
// dependencies. Modules built into the kernel image are left out, since
// there is nothing to load.
//
// Dependencies are the "depends=" of each module's .modinfo (what depmod
// computes from symbols) plus its soft dependencies ("softdep=pre:" and
// "post:"), which the kernel cannot express as symbols but needs at run
// time: ext4 and jbd2 declare "pre: crypto-crc32c" because mounting a
// metadata_csum filesystem asks the crypto API for crc32c, which would try
// to load a module by that alias, and an initramfs has no modprobe to
// answer. Soft dependency targets may be aliases; they resolve like
// modprobe's (every module whose alias pattern matches), and a target the
// kernel lacks is skipped, as modprobe does. A soft dependency that would
// contradict a hard one (a cycle) is ignored for ordering.
//
// The order is deterministic: modules follow the order of names, each
// preceded by its soft "pre" dependencies and then its hard dependencies in
// the order .modinfo lists them. An unknown name is an error that lists the
// closest module names.
func (k *Kernel) Closure(names []string) ([]Module, error) {
	var unknown []string
	var roots []string
	for _, n := range names {
		name := normalize(strings.TrimSpace(n))
		switch {
		case name == "":
			unknown = append(unknown, fmt.Sprintf("%q (empty)", n))
		case k.builtin[name]:
		case k.modules[name] == "":
			unknown = append(unknown, fmt.Sprintf("%q%s", n, suggest(name, namesMap(k.names()))))
		default:
			roots = append(roots, name)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("kernel %s has no module %s: fix the module names in the board file (names as modinfo prints them)", k.Version, strings.Join(unknown, ", "))
	}
	g, err := k.graph(roots)
	if err != nil {
		return nil, err
	}
	return g.order(roots), nil
}

// depGraph holds the modules of a closure and the "loads before" edges
// between them.
type depGraph struct {
	k     *Kernel
	nodes []string // in discovery order
	seen  map[string]bool
	// deps and pre are a node's predecessors (hard dependencies, accepted
	// soft "pre" targets); post are its accepted soft "post" successors.
	deps, pre, post map[string][]string
	succ            map[string][]string // every accepted edge, u before v
}

type softEdge struct {
	before, after string
	pre           bool // a "pre:" edge (after's predecessor), else "post:"
}

func (k *Kernel) graph(roots []string) (*depGraph, error) {
	g := &depGraph{
		k: k, seen: map[string]bool{},
		deps: map[string][]string{}, pre: map[string][]string{}, post: map[string][]string{},
		succ: map[string][]string{},
	}
	var soft []softEdge
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if g.seen[n] {
			continue
		}
		g.seen[n] = true
		g.nodes = append(g.nodes, n)
		mi, err := k.modinfo(k.modules[n])
		if err != nil {
			return nil, err
		}
		for _, t := range mi.pre {
			targets, err := k.resolveSoft(t)
			if err != nil {
				return nil, err
			}
			for _, m := range targets {
				if m != n {
					soft = append(soft, softEdge{before: m, after: n, pre: true})
					queue = append(queue, m)
				}
			}
		}
		for _, d := range mi.depends {
			if k.builtin[d] {
				continue
			}
			if k.modules[d] == "" {
				return nil, fmt.Errorf("kernel %s: module %s depends on %s, which is neither a module file nor built in: the kernel package is incomplete or mixed with another version", k.Version, n, d)
			}
			g.deps[n] = append(g.deps[n], d)
			g.succ[d] = append(g.succ[d], n)
			queue = append(queue, d)
		}
		for _, t := range mi.post {
			targets, err := k.resolveSoft(t)
			if err != nil {
				return nil, err
			}
			for _, m := range targets {
				if m != n {
					soft = append(soft, softEdge{before: n, after: m})
					queue = append(queue, m)
				}
			}
		}
	}
	if cycle := g.findCycle(); cycle != nil {
		return nil, fmt.Errorf("kernel %s: modules depend on each other in a cycle (%s): the kernel package is broken", k.Version, strings.Join(cycle, " -> "))
	}
	// Soft edges go in after the hard ones, each only if it keeps the
	// graph acyclic, so a soft dependency never breaks a hard one.
	for _, e := range soft {
		if g.reaches(e.after, e.before) {
			continue
		}
		g.succ[e.before] = append(g.succ[e.before], e.after)
		if e.pre {
			g.pre[e.after] = append(g.pre[e.after], e.before)
		} else {
			g.post[e.before] = append(g.post[e.before], e.after)
		}
	}
	return g, nil
}

// reaches reports whether to can be reached from from along accepted edges.
func (g *depGraph) reaches(from, to string) bool {
	seen := map[string]bool{from: true}
	stack := []string{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == to {
			return true
		}
		for _, s := range g.succ[n] {
			if !seen[s] {
				seen[s] = true
				stack = append(stack, s)
			}
		}
	}
	return false
}

// findCycle returns a cycle of hard dependencies, or nil.
func (g *depGraph) findCycle() []string {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var stack []string
	var walk func(n string) []string
	walk = func(n string) []string {
		state[n] = visiting
		stack = append(stack, n)
		for _, d := range g.deps[n] {
			switch state[d] {
			case visiting:
				for i, s := range stack {
					if s == d {
						return append(append([]string(nil), stack[i:]...), d)
					}
				}
			case 0:
				if c := walk(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return nil
	}
	for _, n := range g.nodes {
		if state[n] == 0 {
			if c := walk(n); c != nil {
				return c
			}
		}
	}
	return nil
}

// order returns the closure in load order. A depth-first walk from the
// roots gives each module a preferred rank (its pre targets, then its
// dependencies, then itself, then its post targets); a topological sort
// that always takes the ready module of lowest rank then guarantees every
// edge even where the walk alone would not.
func (g *depGraph) order(roots []string) []Module {
	rank := map[string]int{}
	next := 0
	var walk func(n string)
	walk = func(n string) {
		if _, ok := rank[n]; ok {
			return
		}
		rank[n] = -1 // in progress
		for _, p := range g.pre[n] {
			walk(p)
		}
		for _, p := range g.deps[n] {
			walk(p)
		}
		rank[n] = next
		next++
		for _, s := range g.post[n] {
			walk(s)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	// Targets of soft edges dropped to avoid a cycle are still loaded.
	for _, n := range g.nodes {
		walk(n)
	}

	indeg := map[string]int{}
	for _, n := range g.nodes {
		for _, s := range g.succ[n] {
			indeg[s]++
		}
	}
	var ready []string
	for _, n := range g.nodes {
		if indeg[n] == 0 {
			ready = append(ready, n)
		}
	}
	var out []Module
	for len(ready) > 0 {
		sort.Slice(ready, func(i, j int) bool { return rank[ready[i]] < rank[ready[j]] })
		n := ready[0]
		ready = ready[1:]
		out = append(out, Module{Name: n, Path: g.k.modules[n]})
		for _, s := range g.succ[n] {
			if indeg[s]--; indeg[s] == 0 {
				ready = append(ready, s)
			}
		}
	}
	return out
}

// resolveSoft turns a soft dependency target (a module name or an alias)
// into the modules to load; nil when it is built in or unknown.
func (k *Kernel) resolveSoft(target string) ([]string, error) {
	n := normalize(target)
	if k.builtin[n] {
		return nil, nil
	}
	if k.modules[n] != "" {
		return []string{n}, nil
	}
	a := normalizeAlias(target)
	for _, b := range k.builtinAliases {
		if ok, _ := path.Match(b.pattern, a); ok {
			return nil, nil
		}
	}
	aliases, err := k.allAliases()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range aliases {
		if ok, _ := path.Match(m.pattern, a); ok && !k.builtin[m.module] {
			if len(out) == 0 || out[len(out)-1] != m.module {
				out = append(out, m.module)
			}
		}
	}
	return out, nil
}

// allAliases reads the aliases of every module once. It is needed only
// when a soft dependency names an alias; reading ~3700 uncompressed modules
// takes about a second, compressed ones longer, hence the parallelism.
func (k *Kernel) allAliases() ([]alias, error) {
	k.aliasOnce.Do(func() {
		names := k.names()
		infos := make([]*modinfo, len(names))
		errs := make([]error, len(names))
		var wg sync.WaitGroup
		next := make(chan int)
		for range max(1, min(runtime.NumCPU(), 8)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					infos[i], errs[i] = k.modinfo(k.modules[names[i]])
				}
			}()
		}
		for i := range names {
			next <- i
		}
		close(next)
		wg.Wait()
		for i, n := range names {
			if errs[i] != nil {
				k.aliasErr = errs[i]
				return
			}
			for _, a := range infos[i].aliases {
				k.aliases = append(k.aliases, alias{normalizeAlias(a), n})
			}
		}
	})
	return k.aliases, k.aliasErr
}

// names returns all module names, sorted.
func (k *Kernel) names() []string {
	out := make([]string, 0, len(k.modules))
	for n := range k.modules {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// normalizeAlias turns "-" into "_" outside bracket expressions, as
// modprobe does for both the aliases it indexes and the names it looks up.
func normalizeAlias(s string) string {
	b := []byte(s)
	inBracket := false
	for i, c := range b {
		switch {
		case c == '[':
			inBracket = true
		case c == ']':
			inBracket = false
		case c == '-' && !inBracket:
			b[i] = '_'
		}
	}
	return string(b)
}

// WriteModulesDep writes modules.dep for mods, typically Closure's result,
// in depmod's format: one line per module, "<path>: <dependency paths>",
// listing all of its transitive hard dependencies ordered so that the one
// to load first comes last. (libkmod reverses the list when it loads;
// u-root's kmodule resolves it recursively and does not mind the order.)
// Lines follow the order of mods. Every dependency must be in mods and
// before the module that needs it.
func (k *Kernel) WriteModulesDep(dst io.Writer, mods []Module) error {
	pos := map[string]int{}
	for i, m := range mods {
		if _, dup := pos[m.Name]; dup {
			return fmt.Errorf("modules.dep: %s listed twice", m.Name)
		}
		if k.modules[m.Name] != m.Path {
			return fmt.Errorf("modules.dep: module %s is %q in kernel %s, not %q: pass modules from this kernel's Closure", m.Name, k.modules[m.Name], k.Version, m.Path)
		}
		pos[m.Name] = i
	}
	w := bufio.NewWriter(dst)
	for i, m := range mods {
		deps := map[string]bool{}
		stack := []string{m.Name}
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			mi, err := k.modinfo(k.modules[n])
			if err != nil {
				return err
			}
			for _, d := range mi.depends {
				if k.builtin[d] || deps[d] {
					continue
				}
				p, ok := pos[d]
				if !ok {
					return fmt.Errorf("modules.dep: %s needs %s, which is not among the modules: pass the whole Closure", m.Name, d)
				}
				if p > i {
					return fmt.Errorf("modules.dep: %s is listed before its dependency %s: pass modules in Closure's order", m.Name, d)
				}
				deps[d] = true
				stack = append(stack, d)
			}
		}
		list := make([]string, 0, len(deps))
		for d := range deps {
			list = append(list, d)
		}
		// Last loaded first, as depmod writes it.
		sort.Slice(list, func(a, b int) bool { return pos[list[a]] > pos[list[b]] })
		fmt.Fprintf(w, "%s:", m.Path)
		for _, d := range list {
			fmt.Fprintf(w, " %s", mods[pos[d]].Path)
		}
		w.WriteString("\n")
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("modules.dep: %w", err)
	}
	return nil
}

// suggest returns ": did you mean a, b?" with up to five candidates close to
// want (by edit distance or substring), or "" when none is close. The keys
// of cands are compared, the values shown.
func suggest(want string, cands map[string]string) string {
	type scored struct {
		show string
		d    int
	}
	var close []scored
	limit := max(2, len(want)/3)
	for key, show := range cands {
		d := editDistance(want, key)
		// "bcm2835" should suggest "bcm2835_wdt" despite the distance,
		// but after the names that are close by spelling.
		if (len(want) > 2 && strings.Contains(key, want)) || (len(key) > 2 && strings.Contains(want, key)) {
			d = min(d, limit)
		}
		if d <= limit {
			close = append(close, scored{show, d})
		}
	}
	if len(close) == 0 {
		return ""
	}
	sort.Slice(close, func(i, j int) bool {
		if close[i].d != close[j].d {
			return close[i].d < close[j].d
		}
		return close[i].show < close[j].show
	})
	var out []string
	for i := 0; i < len(close) && i < 5; i++ {
		out = append(out, close[i].show)
	}
	return " (did you mean " + strings.Join(out, ", ") + "?)"
}

// namesMap turns a list into the map suggest takes.
func namesMap(list []string) map[string]string {
	m := make(map[string]string, len(list))
	for _, n := range list {
		m[n] = n
	}
	return m
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
