package source

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTPClient is the part of *http.Client sources use.
type HTTPClient interface {
	Do(*http.Request) (*http.Response, error)
}

// DefaultClient verifies TLS certificates against the system roots (the
// image must ship /etc/ssl/certs/ca-certificates.crt, and the clock must
// not be before the image's build time, see package clock) and bounds
// every phase of a request except the body, whose progress the reader
// watches itself (Retry.Stall).
var DefaultClient HTTPClient = &http.Client{
	Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       90 * time.Second,
	},
}

// HTTP is a bundle at an http:// or https:// URL.
type HTTP struct {
	URL string
	// Header is added to every request (e.g. Authorization).
	Header http.Header
	// Client defaults to DefaultClient.
	Client HTTPClient
	Retry  Retry
}

func (h *HTTP) String() string { return "http " + h.URL }

// Open implements Source. The first request must succeed (a wrong URL
// fails at once); later failures are resumed with Range requests.
func (h *HTTP) Open(ctx context.Context) (io.ReadCloser, int64, error) {
	c := h.Client
	if c == nil {
		c = DefaultClient
	}
	r := &rangeReader{ctx: ctx, client: c, url: h.URL, header: h.Header, retry: h.Retry.orDefault(), size: -1}
	// The first connection is retried like a resumption: after a power
	// cut the supervisor restarts an interrupted download at boot, often
	// before DHCP has configured the link.
	if err := r.dial(); err != nil {
		return nil, -1, err
	}
	return r, r.size, nil
}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// rangeReader reads one HTTP resource, reconnecting after errors with
// "Range: bytes=<offset>-" and If-Range, so the bytes already received are
// not fetched again and a resource that changed meanwhile is not spliced.
type rangeReader struct {
	ctx    context.Context
	client HTTPClient
	url    string
	header http.Header
	retry  Retry

	size      int64  // -1: unknown
	validator string // strong ETag or Last-Modified of the first response
	off       int64
	body      io.ReadCloser
	cancel    context.CancelFunc
	stall     *time.Timer
	fails     int
	resumes   int

	// want is the expected SHA-256 (OCI blobs), nil if none.
	want []byte
	h    hash.Hash
}

func (r *rangeReader) connect() error {
	reqCtx, cancel := context.WithCancel(r.ctx)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, r.url, nil)
	if err != nil {
		cancel()
		return permanentError{fmt.Errorf("bundle URL %q: %w", r.url, err)}
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	// Identity encoding: byte offsets must be offsets of the resource, not
	// of a gzip stream the transport would silently decode.
	req.Header.Set("Accept-Encoding", "identity")
	if r.off > 0 {
		if r.size > 0 {
			// Some servers (go-containerregistry's test registry
			// among them) only understand closed ranges.
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r.off, r.size-1))
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", r.off))
		}
		if r.validator != "" {
			req.Header.Set("If-Range", r.validator)
		}
	}
	resp, err := r.client.Do(req)
	if err != nil {
		cancel()
		return fmt.Errorf("GET %s: %w", r.url, err)
	}
	fail := func(err error) error {
		resp.Body.Close()
		cancel()
		return err
	}
	switch {
	case r.off == 0 && resp.StatusCode == http.StatusOK:
		r.size = resp.ContentLength
		if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
			r.validator = et
		} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
			r.validator = lm
		}
	case r.off > 0 && resp.StatusCode == http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fail(permanentError{fmt.Errorf("GET %s: %w", r.url, err)})
		}
		if start != r.off || (r.size > 0 && total > 0 && total != r.size) {
			return fail(permanentError{fmt.Errorf("GET %s: server resumed at byte %d of %d, asked for %d of %d", r.url, start, total, r.off, r.size)})
		}
	case r.off > 0 && resp.StatusCode == http.StatusOK:
		// The server ignores ranges, or If-Range said the resource
		// changed: only the former can be continued, by skipping.
		if r.validator != "" && resp.Header.Get("ETag") != r.validator && resp.Header.Get("Last-Modified") != r.validator {
			return fail(permanentError{fmt.Errorf("GET %s: the bundle changed on the server during the download: start the update again", r.url)})
		}
		if resp.ContentLength >= 0 && r.size >= 0 && resp.ContentLength != r.size {
			return fail(permanentError{fmt.Errorf("GET %s: the bundle changed size on the server during the download: start the update again", r.url)})
		}
		slog.Debug("server ignores Range, skipping received bytes", "url", r.url, "bytes", r.off)
		if _, err := io.CopyN(io.Discard, resp.Body, r.off); err != nil {
			return fail(fmt.Errorf("GET %s: skip %d received bytes: %w", r.url, r.off, err))
		}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return fail(fmt.Errorf("GET %s: %s", r.url, resp.Status))
	default:
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return fail(permanentError{fmt.Errorf("GET %s: %s %s: check the URL and that the server serves the bundle", r.url, resp.Status, strings.TrimSpace(string(snippet)))})
	}
	r.body, r.cancel = resp.Body, cancel
	// A connection that delivers nothing for Retry.Stall is cut, and
	// Read resumes: TCP alone can take hours to notice a dead peer.
	r.stall = time.AfterFunc(r.retry.Stall, cancel)
	return nil
}

func parseContentRange(v string) (start, total int64, err error) {
	// bytes <start>-<end>/<total|*>
	rest, ok := strings.CutPrefix(v, "bytes ")
	rng, tot, ok2 := strings.Cut(rest, "/")
	s, _, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, fmt.Errorf("malformed Content-Range %q", v)
	}
	if start, err = strconv.ParseInt(s, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("malformed Content-Range %q", v)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("malformed Content-Range %q", v)
		}
	}
	return start, total, nil
}

func (r *rangeReader) drop() {
	if r.body != nil {
		r.stall.Stop()
		r.body.Close()
		r.cancel()
		r.body = nil
	}
}

// dial connects, retrying failures that retrying can fix with back-off
// while fewer than Retry.Attempts failures in a row (the interruption
// that led here counts) made no progress.
func (r *rangeReader) dial() error {
	var last error
	for {
		if r.fails >= r.retry.Attempts {
			if last == nil {
				return fmt.Errorf("download %s: gave up after %d attempts without progress at byte %d", r.url, r.fails, r.off)
			}
			return fmt.Errorf("download %s: gave up after %d attempts without progress at byte %d: %w", r.url, r.fails, r.off, last)
		}
		if r.fails > 0 {
			if err := r.retry.wait(r.ctx, r.fails); err != nil {
				return err
			}
		}
		last = r.connect()
		if last == nil {
			return nil
		}
		var pe permanentError
		if errors.As(last, &pe) {
			r.fails = r.retry.Attempts
			return last
		}
		r.fails++
		slog.Debug("download attempt failed", "url", r.url, "attempt", r.fails, "err", last)
	}
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for {
		if err := r.ctx.Err(); err != nil {
			r.drop()
			return 0, err
		}
		if r.size >= 0 && r.off >= r.size {
			r.drop()
			return 0, r.eof()
		}
		if r.body == nil {
			r.resumes++
			slog.Info("resuming download", "url", r.url, "bytes", r.off, "attempt", r.fails+1)
			if err := r.dial(); err != nil {
				return 0, err
			}
		}
		if r.size >= 0 && int64(len(p)) > r.size-r.off {
			p = p[:r.size-r.off]
		}
		n, err := r.body.Read(p)
		if n > 0 {
			r.stall.Reset(r.retry.Stall)
			r.fails = 0
			r.off += int64(n)
			if r.h != nil {
				r.h.Write(p[:n])
			}
		}
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (r.size < 0 || r.off >= r.size):
			r.drop()
			if n > 0 {
				return n, nil
			}
			return 0, r.eof()
		default:
			// A reset, a stall cut, or a body shorter than announced.
			slog.Debug("download interrupted", "url", r.url, "bytes", r.off, "err", err)
			r.drop()
			r.fails++
			if n > 0 {
				return n, nil
			}
		}
	}
}

func (r *rangeReader) eof() error {
	if r.want != nil {
		if got := r.h.Sum(nil); string(got) != string(r.want) {
			return fmt.Errorf("download %s: sha256 %x, registry says %x: download again", r.url, got, r.want)
		}
	}
	return io.EOF
}

// Close ends the download. Like most readers it must not be called while a
// Read runs; cancel the context given to Open to interrupt a Read.
func (r *rangeReader) Close() error {
	r.drop()
	return nil
}

func newSHA256() hash.Hash { return sha256.New() }
