package debian

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
)

// Index reads the Packages indexes of arch for the requested components in
// every suite of every source and returns them as one Index.
//
// A component is read wherever the suite's signed Release lists it, whether
// or not the source's configuration named it. Each index file is verified
// against the Release (size and SHA-256) and cached by digest, so an
// unchanged suite costs one Release download.
//
// If a suite's index keeps failing verification (a mirror in the middle of
// a sync serves a new index with an old Release, apt's "Hash Sum mismatch")
// the suite is skipped with an EventWarning after the retries, and the
// others are used. It is an error only when no suite yields an index, when a
// mirror cannot be reached, or when a Release is not validly signed.
func (a *Archive) Index(ctx context.Context, arch string, components []string) (*Index, error) {
	if arch == "" || len(components) == 0 {
		return nil, errors.New("debian index: need an architecture and at least one component")
	}
	if len(a.sources) == 0 {
		return nil, fmt.Errorf("debian index for %s: no Debian sources configured: add one to the host's apt sources or set %s", arch, MirrorEnv)
	}
	var (
		all      []*Package
		searched []string
		problems []string
	)
	for _, src := range a.sources {
		if len(src.Suites) == 0 {
			return nil, fmt.Errorf("debian index for %s: source %s lists no suite: pass the sources through ForRelease (or use SourcesFor), which gives a bare %s URI the release and its updates", arch, src.URI, MirrorEnv)
		}
		for _, suite := range src.Suites {
			rel, err := a.release(ctx, src, suite)
			if err != nil {
				return nil, fmt.Errorf("debian index for %s: %w", arch, err)
			}
			if !rel.hasArch(arch) {
				msg := fmt.Sprintf("suite %s at %s has no %s packages; skipped", suite, src.URI, arch)
				a.warn(src.URI, suite, msg)
				problems = append(problems, msg)
				continue
			}
			pkgs, used, err := a.suiteIndex(ctx, src, suite, rel, arch, components)
			if err != nil {
				if errors.Is(err, ErrUnreachable) || ctx.Err() != nil {
					return nil, fmt.Errorf("debian index for %s: %w", arch, err)
				}
				msg := fmt.Sprintf("suite %s at %s skipped: %v", suite, src.URI, err)
				a.warn(src.URI, suite, msg)
				problems = append(problems, msg)
				continue
			}
			if len(used) == 0 {
				msg := fmt.Sprintf("suite %s at %s has none of the components %s", suite, src.URI, strings.Join(components, ", "))
				slog.Debug("debian: " + msg)
				problems = append(problems, msg)
				continue
			}
			searched = append(searched, fmt.Sprintf("%s %s [%s]", src.URI, suite, strings.Join(used, " ")))
			all = append(all, pkgs...)
		}
	}
	if len(searched) == 0 {
		return nil, fmt.Errorf("debian index for %s: no suite yielded an index (%s): check the apt sources or %s, or run again if a mirror was syncing",
			arch, strings.Join(problems, "; "), MirrorEnv)
	}
	return NewIndex(arch, searched, all), nil
}

// suiteIndex reads every requested component of one suite. It returns the
// components that were found.
func (a *Archive) suiteIndex(ctx context.Context, src Source, suite string, rel *Release, arch string, components []string) ([]*Package, []string, error) {
	archs := []string{arch}
	if rel.hasArch("all") && !rel.AllInArchIndexes {
		// Without "No-Support-for-Architecture-all: Packages" the
		// arch-independent packages are in their own index.
		archs = append(archs, "all")
	}
	var (
		out  []*Package
		used []string
	)
	for _, comp := range components {
		if !rel.hasComponent(comp) {
			slog.Debug("debian: component not in suite", "suite", suite, "component", comp, "uri", src.URI)
			continue
		}
		found := false
		for _, ar := range archs {
			pkgs, ok, err := a.componentIndex(ctx, src, suite, rel, comp, ar)
			if err != nil {
				return nil, nil, err
			}
			found = found || ok
			out = append(out, pkgs...)
		}
		if found {
			used = append(used, comp)
		}
	}
	return out, used, nil
}

// indexCandidates returns the Packages files of comp/binary-arch the
// Release lists, best compression first. Debian lists the uncompressed
// Packages in Release without serving it, so it comes last and is only
// tried when the compressed ones are missing.
func (r *Release) indexCandidates(comp, arch string) []string {
	dirs := []string{comp}
	for _, c := range r.Components {
		if strings.HasSuffix(c, "/"+comp) {
			dirs = append(dirs, c)
		}
	}
	var out []string
	for _, d := range dirs {
		for _, ext := range []string{".xz", ".gz", ""} {
			p := d + "/binary-" + arch + "/Packages" + ext
			if _, ok := r.SHA256[p]; ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// componentIndex downloads (or finds in the cache) and parses one
// component's index. ok is false when the Release lists no index for it.
func (a *Archive) componentIndex(ctx context.Context, src Source, suite string, rel *Release, comp, arch string) (pkgs []*Package, ok bool, err error) {
	cands := rel.indexCandidates(comp, arch)
	if len(cands) == 0 {
		slog.Debug("debian: no index", "suite", suite, "component", comp, "arch", arch)
		return nil, false, nil
	}
	var lastErr error
	for _, p := range cands {
		sum := rel.SHA256[p]
		if sum.Size == 0 {
			return nil, true, nil // an empty index lists nothing
		}
		file, err := a.indexFile(ctx, src, suite, p, sum, rel.AcquireByHash)
		if isNotFound(err) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, true, err
		}
		pkgs, err := readPackagesFile(file, p, src.URI, suite, comp)
		if err != nil {
			// The file matched the signed digest, so the index
			// itself is broken: nothing a retry can fix.
			return nil, true, err
		}
		return pkgs, true, nil
	}
	return nil, true, fmt.Errorf("%s: listed in the Release but not served: %w", strings.Join(cands, ", "), lastErr)
}

// indexFile returns the cached path of the index at dists/<suite>/<rel>,
// downloading it if needed. With Acquire-By-Hash the immutable by-hash name
// is tried first: it cannot change under us while the mirror syncs.
func (a *Archive) indexFile(ctx context.Context, src Source, suite, rel string, sum FileSum, byHash bool) (string, error) {
	name := suite + "/" + rel
	if p, ok := a.cache.Path(sum.SHA256); ok {
		err := a.cache.Verify(sum.SHA256)
		if err == nil {
			a.emit(Event{Kind: EventCached, Name: name, URI: src.URI, Done: sum.Size, Total: sum.Size})
			return p, nil
		}
		a.warn(src.URI, name, err.Error())
	}
	dists := "dists/" + suite + "/"
	var urls []string
	if byHash {
		urls = append(urls, dists+path.Dir(rel)+"/by-hash/SHA256/"+sum.SHA256)
	}
	urls = append(urls, dists+rel)
	var file string
	err := a.retry(ctx, name, src.URI, func() error {
		var err error
		for _, u := range urls {
			file, err = a.download(ctx, src.URI, u, sum.SHA256, sum.Size, EventIndex, name)
			if !isNotFound(err) {
				return err
			}
		}
		return err
	})
	if err != nil {
		if errors.Is(err, errSize) || isCorrupt(err) {
			return "", fmt.Errorf("%s does not match the signed Release after %d attempts (%v): the mirror is probably in the middle of a sync", rel, a.attempts, err)
		}
		return "", err
	}
	return file, nil
}

func readPackagesFile(file, name, uri, suite, comp string) ([]*Package, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The cache names files by digest, so the compression comes from the
	// index's name in the Release.
	r, err := decompress(f, compressionOf(name))
	if err != nil {
		return nil, fmt.Errorf("index %s %s/%s: %w", uri, suite, name, err)
	}
	defer r.Close()
	return ParsePackages(r, uri, suite, comp)
}
