// Package source fetches update bundles: from a local file, an HTTP(S) URL
// (resuming interrupted downloads with Range requests) or an OCI registry
// (go-containerregistry; the layout is the bundle package's).
//
// A source only delivers bytes. It checks transport integrity where the
// transport offers it (the registry's blob digest) but never decides
// whether a bundle is trustworthy: that is bundle.Open's signature check.
// Nothing here writes to disk.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Source is where a bundle comes from.
type Source interface {
	// Open starts reading the bundle from its first byte. size is the
	// bundle's length when the source knows it, else -1. The reader
	// resumes by itself after transient network errors, within the
	// source's retry policy.
	Open(ctx context.Context) (rc io.ReadCloser, size int64, err error)
	// String names the source in logs and status reports.
	String() string
}

// Kinds of Spec.
const (
	KindFile   = "file"
	KindHTTP   = "http"
	KindOCI    = "oci"
	KindUpload = "upload"
)

// Spec describes a source in a form that survives a restart: the
// supervisor stores it in its state file so that an install interrupted by
// a crash or power cut can start over from the same place.
type Spec struct {
	// Kind is KindFile, KindHTTP, KindOCI or KindUpload.
	Kind string `json:"kind"`
	// Location is the path, the URL or the registry reference; empty for
	// an upload, which cannot be fetched again.
	Location string `json:"location,omitempty"`
}

func (s Spec) String() string {
	if s.Location == "" {
		return s.Kind
	}
	return s.Kind + " " + s.Location
}

// Refetchable reports whether the bytes can be fetched again after a
// restart (everything but an upload).
func (s Spec) Refetchable() bool { return s.Kind != KindUpload && s.Location != "" }

// ParseSpec guesses the kind of a location as a user types it: an
// http:// or https:// URL, an absolute file path (or file:// URL), or
// otherwise a registry reference such as registry.example.com/fleet/os:1.2.
func ParseSpec(loc string) (Spec, error) {
	switch {
	case loc == "":
		return Spec{}, errors.New("empty update source: give a URL, a file path or a registry reference")
	case strings.HasPrefix(loc, "http://"), strings.HasPrefix(loc, "https://"):
		return Spec{Kind: KindHTTP, Location: loc}, nil
	case strings.HasPrefix(loc, "file://"):
		return Spec{Kind: KindFile, Location: strings.TrimPrefix(loc, "file://")}, nil
	case strings.HasPrefix(loc, "/"):
		return Spec{Kind: KindFile, Location: loc}, nil
	case strings.HasPrefix(loc, "oci://"):
		return Spec{Kind: KindOCI, Location: strings.TrimPrefix(loc, "oci://")}, nil
	case strings.Contains(loc, "/"):
		return Spec{Kind: KindOCI, Location: loc}, nil
	}
	return Spec{}, fmt.Errorf("update source %q: want an http(s):// URL, an absolute file path or a registry reference like registry.example.com/fleet/os:1.2", loc)
}

// Options are what a device needs to turn a Spec into a Source.
type Options struct {
	// HTTP is used for HTTP(S) sources and registries; nil means
	// DefaultClient.
	HTTP HTTPClient
	// Retry governs resumption; the zero value means DefaultRetry.
	Retry Retry
	// Board selects a registry index entry.
	Board string
}

// New returns the Source a Spec describes.
func New(s Spec, o Options) (Source, error) {
	switch s.Kind {
	case KindFile:
		return File{Path: s.Location}, nil
	case KindHTTP:
		return &HTTP{URL: s.Location, Client: o.HTTP, Retry: o.Retry}, nil
	case KindOCI:
		return &OCI{Ref: s.Location, Board: o.Board, Client: o.HTTP, Retry: o.Retry}, nil
	}
	return nil, fmt.Errorf("update source %s cannot be opened again: start the update again", s)
}

// File is a bundle on a local filesystem, for example one copied to the
// data partition.
type File struct{ Path string }

// Open implements Source.
func (f File) Open(ctx context.Context) (io.ReadCloser, int64, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, -1, fmt.Errorf("open bundle: %w", err)
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, -1, fmt.Errorf("open bundle: %w", err)
	}
	if !fi.Mode().IsRegular() {
		fh.Close()
		return nil, -1, fmt.Errorf("open bundle: %s is not a regular file", f.Path)
	}
	return fh, fi.Size(), nil
}

func (f File) String() string { return "file " + f.Path }

// Retry is the resumption policy of network sources.
type Retry struct {
	// Attempts is how many consecutive failures (the interruption and
	// the reconnections after it) without a single byte of progress end
	// the download.
	Attempts int
	// Backoff is the first wait between attempts; it doubles up to
	// MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Stall is how long a connection may deliver nothing before it is
	// dropped and resumed.
	Stall time.Duration
}

// DefaultRetry suits a device on a flaky link: about 6 minutes of
// retrying without progress before giving up.
var DefaultRetry = Retry{Attempts: 10, Backoff: time.Second, MaxBackoff: time.Minute, Stall: time.Minute}

func (r Retry) orDefault() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetry.Attempts
	}
	if r.Backoff <= 0 {
		r.Backoff = DefaultRetry.Backoff
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = DefaultRetry.MaxBackoff
	}
	if r.Stall <= 0 {
		r.Stall = DefaultRetry.Stall
	}
	return r
}

func (r Retry) wait(ctx context.Context, attempt int) error {
	d := r.Backoff << min(attempt, 20)
	if d > r.MaxBackoff || d <= 0 {
		d = r.MaxBackoff
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
