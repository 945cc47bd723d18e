package debian

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Fetch returns the path of the pinned package in the cache, downloading it
// if needed. A cached copy is re-hashed before it is returned, and one that
// no longer matches is deleted and downloaded again; a cache hit uses no
// network at all and needs no sources.
//
// Downloads try the sources serving p.Suite first, then every other source
// (mirrors keep pool files of all suites), with retries and back-off; the
// file is checked against p.Size and p.SHA256 while it streams into the
// cache, so nothing unverified is ever stored.
func (a *Archive) Fetch(ctx context.Context, p Pin) (string, error) {
	what := fmt.Sprintf("fetch %s (%s)", p.Name, p.Arch)
	if !validSHA256(p.SHA256) || p.Size <= 0 || p.Filename == "" || strings.HasPrefix(p.Filename, "/") || slices.Contains(strings.Split(p.Filename, "/"), "..") {
		return "", fmt.Errorf("%s: the pin is incomplete or malformed (sha256 %q, size %d, filename %q): regenerate the lock file with \"make lock\"", what, p.SHA256, p.Size, p.Filename)
	}
	if path, ok := a.cache.Path(p.SHA256); ok {
		err := a.cache.Verify(p.SHA256)
		if err == nil {
			if fi, err := os.Stat(path); err == nil && fi.Size() != p.Size {
				// The content is right for the digest, so the
				// lock's size is what is wrong.
				return "", fmt.Errorf("%s: the lock says %d bytes but the file with sha256 %s has %d: the lock file is damaged; regenerate it with \"make lock\"", what, p.Size, p.SHA256, fi.Size())
			}
			a.emit(Event{Kind: EventCached, Name: p.Name, Done: p.Size, Total: p.Size})
			return path, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			a.warn("", p.Name, fmt.Sprintf("%s: %v; downloading it again", what, err))
		}
	}
	if len(a.sources) == 0 {
		return "", fmt.Errorf("%s: %s is not in the download cache and no Debian mirror is configured: add one to the host's apt sources or set %s", what, p.Filename, MirrorEnv)
	}
	var (
		notFound []string
		bad      error // a mismatch, reported if no other source has the file right
		lastErr  error
	)
	for _, uri := range a.fetchOrder(p.Suite) {
		var path string
		err := a.retry(ctx, p.Name, uri, func() (err error) {
			path, err = a.download(ctx, uri, p.Filename, p.SHA256, p.Size, EventDownload, p.Name)
			return err
		})
		switch {
		case err == nil:
			return path, nil
		case ctx.Err() != nil:
			return "", fmt.Errorf("%s: %w", what, ctx.Err())
		case isNotFound(err):
			notFound = append(notFound, uri)
		case isCorrupt(err):
			bad = fmt.Errorf("%s: sha256 mismatch for %s from %s: the downloaded file is corrupt; it was deleted, run the build again (if this repeats, the mirror or a proxy serves bad data: try another mirror with %s)", what, p.Filename, uri, MirrorEnv)
		case errors.Is(err, errSize):
			bad = fmt.Errorf("%s: size mismatch for %s from %s (%v): the download is incomplete or wrong; nothing was kept, run the build again", what, p.Filename, uri, err)
		default:
			lastErr = err
		}
	}
	switch {
	case bad != nil:
		return "", bad
	case lastErr != nil:
		return "", fmt.Errorf("%s: %w", what, lastErr)
	}
	return "", fmt.Errorf("%s: %s (version %s) is not on any configured mirror (%s): the pinned version was probably superseded and removed from the archive; refresh the lock with \"make lock\", or point %s at a snapshot archive that still has it",
		what, p.Filename, p.Version, strings.Join(notFound, ", "), MirrorEnv)
}

// fetchOrder lists the distinct source URIs, those serving suite first.
func (a *Archive) fetchOrder(suite string) []string {
	var first, rest []string
	for _, s := range a.sources {
		if slices.Contains(first, s.URI) || slices.Contains(rest, s.URI) {
			continue
		}
		if slices.Contains(s.Suites, suite) {
			first = append(first, s.URI)
		} else {
			rest = append(rest, s.URI)
		}
	}
	// A URI seen first in rest may also serve the suite in a later
	// source entry.
	rest = slices.DeleteFunc(rest, func(u string) bool { return slices.Contains(first, u) })
	return append(first, rest...)
}
