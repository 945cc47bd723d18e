package debian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/bulkhead-os/bulkhead/builder/cache"
)

// ErrUnreachable is wrapped by errors about a mirror that could not be
// contacted at all (DNS, connection refused, timeouts), as opposed to one
// that answered with an error or bad data.
var ErrUnreachable = errors.New("the Debian mirror could not be reached")

// EventKind says what an Event reports.
type EventKind int

const (
	// EventRelease: a suite's Release file was fetched and verified
	// (Name is the suite).
	EventRelease EventKind = iota + 1
	// EventIndex: bytes of a Packages index arrived (Name is its path
	// under dists/).
	EventIndex
	// EventDownload: bytes of a package arrived (Name is the package).
	EventDownload
	// EventCached: a package or index was found in the cache; no network
	// was used for it.
	EventCached
	// EventRetry: an attempt failed and will be retried (Message says why).
	EventRetry
	// EventWarning: something was skipped or repaired, and the build goes
	// on (Message says what and why). Worth showing to the user.
	EventWarning
)

func (k EventKind) String() string {
	switch k {
	case EventRelease:
		return "release"
	case EventIndex:
		return "index"
	case EventDownload:
		return "download"
	case EventCached:
		return "cached"
	case EventRetry:
		return "retry"
	case EventWarning:
		return "warning"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one progress report. Done and Total are bytes (Total is 0 when
// unknown); a transfer reports Done == Total once at the end.
type Event struct {
	Kind        EventKind
	Name        string
	URI         string
	Done, Total int64
	Message     string
}

// Config is what an Archive works with. Nothing is global: the caller
// chooses the sources, the cache and the HTTP client.
type Config struct {
	// Sources are the mirrors and suites to read, normally from
	// SourcesFor. They may be empty when every package is in the cache.
	Sources []Source
	// Cache stores downloads by SHA-256. Required.
	Cache *cache.Cache
	// Client is the HTTP client; nil means one with sane timeouts that
	// honours the proxy environment variables.
	Client *http.Client
	// Progress receives progress events; nil discards them. It is called
	// from the goroutine that called Index or Fetch, so concurrent Fetch
	// calls mean concurrent Progress calls.
	Progress func(Event)
	// Keyring verifies Release files; nil means Debian's archive keys
	// embedded in this package. Tests and private archives set their own.
	Keyring openpgp.KeyRing
}

// Archive reads the Debian archive described by a Config: it verifies
// Release files, builds package indexes and downloads packages into the
// cache.
type Archive struct {
	sources  []Source
	cache    *cache.Cache
	client   *http.Client
	progress func(Event)
	keyring  openpgp.KeyRing
	now      func() time.Time

	// attempts and backoff govern retries: attempt n waits backoff<<(n-1)
	// first. Tests shorten backoff.
	attempts int
	backoff  time.Duration

	mu       sync.Mutex
	releases map[string]*Release
}

// Open checks cfg and returns an Archive. It does not touch the network:
// Release files are fetched when an index is first needed, so a build that
// only fetches locked packages from a warm cache runs offline.
func Open(ctx context.Context, cfg Config) (*Archive, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Cache == nil {
		return nil, errors.New("debian archive: no download cache given (open one with cache.Open)")
	}
	for _, s := range cfg.Sources {
		if !supportedURI(s.URI) {
			return nil, fmt.Errorf("debian archive: source %q: only http:// and https:// mirrors are supported: set %s to one", s.URI, MirrorEnv)
		}
	}
	a := &Archive{
		sources:  cfg.Sources,
		cache:    cfg.Cache,
		client:   cfg.Client,
		progress: cfg.Progress,
		keyring:  cfg.Keyring,
		now:      time.Now,
		attempts: 4,
		backoff:  500 * time.Millisecond,
		releases: map[string]*Release{},
	}
	if a.client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// No overall timeout: a kernel package is 60 MB on any link
		// speed. A mirror that accepts the connection but never
		// answers is caught here; cancellation covers the rest.
		t.ResponseHeaderTimeout = 60 * time.Second
		a.client = &http.Client{Transport: t}
	}
	if a.keyring == nil {
		kr, err := DebianKeyring()
		if err != nil {
			return nil, fmt.Errorf("debian archive: %w", err)
		}
		a.keyring = kr
	}
	return a, nil
}

func (a *Archive) emit(e Event) {
	if a.progress != nil {
		a.progress(e)
	}
}

func (a *Archive) warn(uri, name, msg string) {
	slog.Debug("debian: warning", "name", name, "uri", uri, "msg", msg)
	a.emit(Event{Kind: EventWarning, Name: name, URI: uri, Message: msg})
}

// StatusError is an HTTP answer other than 200 OK.
type StatusError struct {
	URL    string
	Code   int
	Status string
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

func isNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && (se.Code == http.StatusNotFound || se.Code == http.StatusGone)
}

func isCorrupt(err error) bool { return errors.Is(err, cache.ErrCorrupt) }

// unreachable wraps a transport error so that it says what to do, including
// that the network is optional for a locked build.
func unreachable(base string, err error) error {
	return fmt.Errorf("%w: %s: %v: check the network, the proxy settings and the mirror (apt sources or %s); a build with a warm download cache and a lock file needs no network",
		ErrUnreachable, base, err, MirrorEnv)
}

// get starts one GET of base + "/" + rel. The caller closes the body.
func (a *Archive) get(ctx context.Context, base, rel string) (*http.Response, error) {
	url := base + "/" + rel
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "bulkhead-builder")
	resp, err := a.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, unreachable(base, err)
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, &StatusError{URL: url, Code: resp.StatusCode, Status: resp.Status}
	}
	return resp, nil
}

// readAll GETs a small file (Release, InRelease, Release.gpg). The limit
// protects memory against a hostile or broken server; Debian's largest
// InRelease is a few hundred KiB.
func (a *Archive) readAll(ctx context.Context, base, rel string) ([]byte, error) {
	const limit = 32 << 20
	resp, err := a.get(ctx, base, rel)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s/%s: %w", base, rel, err)
	}
	if len(data) > limit {
		return nil, fmt.Errorf("GET %s/%s: larger than %d bytes, not a Release file", base, rel, limit)
	}
	return data, nil
}

// retryable reports whether trying again may help: network trouble, server
// errors, truncated or mismatching transfers. A 404, a bad signature or a
// cancelled context will not change by waiting.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrSignature) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout
	}
	return true
}

// retry calls fn until it succeeds, fails for good, or the attempts are
// used up, waiting with exponential back-off in between.
func (a *Archive) retry(ctx context.Context, what, uri string, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !retryable(err) || attempt >= a.attempts {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		delay := a.backoff << (attempt - 1)
		slog.Debug("debian: retrying", "what", what, "attempt", attempt, "delay", delay, "err", err)
		a.emit(Event{Kind: EventRetry, Name: what, URI: uri, Message: fmt.Sprintf("attempt %d of %d failed: %v; retrying in %s", attempt, a.attempts, err, delay)})
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// errSize is wrapped when a transfer's length differs from what the
// Release file or the lock says.
var errSize = errors.New("size mismatch")

// countingReader checks the length of a transfer while it streams and
// reports progress. Exceeding the expected size fails at once, so a wrong
// or hostile response cannot fill the disk.
type countingReader struct {
	r     io.Reader
	n     int64
	want  int64
	every int64
	next  int64
	tick  func(done int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.want {
		return n, fmt.Errorf("%w: received more than the expected %d bytes", errSize, c.want)
	}
	if c.tick != nil && c.n >= c.next {
		c.tick(c.n)
		c.next = c.n + c.every
	}
	if errors.Is(err, io.EOF) && c.n != c.want {
		return n, fmt.Errorf("%w: received %d of the expected %d bytes", errSize, c.n, c.want)
	}
	return n, err
}

// download streams base/rel into the cache under digest, checking size and
// digest on the way. Nothing is stored unless both match.
func (a *Archive) download(ctx context.Context, base, rel, digest string, size int64, kind EventKind, name string) (string, error) {
	resp, err := a.get(ctx, base, rel)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	ev := Event{Kind: kind, Name: name, URI: base, Total: size}
	a.emit(ev)
	cr := &countingReader{r: resp.Body, want: size, every: 1 << 20, next: 1 << 20, tick: func(done int64) {
		ev.Done = done
		a.emit(ev)
	}}
	path, err := a.cache.Put(digest, cr)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("GET %s/%s: %w", base, rel, err)
	}
	if ev.Done != size {
		ev.Done = size
		a.emit(ev)
	}
	return path, nil
}

// release returns the verified Release of suite at src, fetching it once
// per Archive.
func (a *Archive) release(ctx context.Context, src Source, suite string) (*Release, error) {
	key := src.URI + " " + suite
	a.mu.Lock()
	r := a.releases[key]
	a.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := a.fetchRelease(ctx, src, suite)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.releases[key] = r
	a.mu.Unlock()
	return r, nil
}

func (a *Archive) fetchRelease(ctx context.Context, src Source, suite string) (*Release, error) {
	dists := "dists/" + suite + "/"
	where := fmt.Sprintf("suite %s at %s", suite, src.URI)
	var data []byte
	err := a.retry(ctx, suite+" InRelease", src.URI, func() (err error) {
		data, err = a.readAll(ctx, src.URI, dists+"InRelease")
		return err
	})
	var text []byte
	switch {
	case err == nil:
		text, err = VerifyInRelease(data, a.keyring, a.now())
		if err != nil {
			return nil, fmt.Errorf("%s: InRelease: %w: the file was not signed by a Debian archive key or was altered on the way; refusing it (try another mirror with %s)", where, err, MirrorEnv)
		}
	case isNotFound(err):
		// Archives made before InRelease existed (and some private
		// ones) only have Release plus a detached Release.gpg.
		err = a.retry(ctx, suite+" Release", src.URI, func() (err error) {
			text, err = a.readAll(ctx, src.URI, dists+"Release")
			return err
		})
		if isNotFound(err) {
			return nil, fmt.Errorf("%s: no InRelease or Release file under %s: the suite does not exist on this mirror; fix the suite name in the apt sources or %s", where, dists, MirrorEnv)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		var sig []byte
		err = a.retry(ctx, suite+" Release.gpg", src.URI, func() (err error) {
			sig, err = a.readAll(ctx, src.URI, dists+"Release.gpg")
			return err
		})
		if isNotFound(err) {
			return nil, fmt.Errorf("%s: %w: the Release file is unsigned (no InRelease, no Release.gpg); refusing an archive that cannot be verified", where, ErrSignature)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if err := VerifyDetached(text, sig, a.keyring, a.now()); err != nil {
			return nil, fmt.Errorf("%s: Release.gpg: %w: the file was not signed by a Debian archive key or was altered on the way; refusing it (try another mirror with %s)", where, err, MirrorEnv)
		}
	default:
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	r, err := ParseRelease(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	// A correctly signed Release of another suite (an old one, or
	// testing instead of stable) served under this name would silently
	// change what the image contains: apt checks this too.
	if suite != r.Codename && suite != r.Suite {
		return nil, fmt.Errorf("%s: the signed Release describes %q (suite %q), not %s: the mirror serves the wrong release under this name; use another mirror", where, r.Codename, r.Suite, suite)
	}
	if !r.ValidUntil.IsZero() && a.now().After(r.ValidUntil) {
		return nil, fmt.Errorf("%s: the Release file expired at %s: the mirror has stopped updating (or replays old data); use another mirror", where, r.ValidUntil.Format(time.RFC3339))
	}
	slog.Debug("debian: release verified", "suite", suite, "uri", src.URI, "codename", r.Codename, "date", r.Date)
	a.emit(Event{Kind: EventRelease, Name: suite, URI: src.URI})
	return r, nil
}
