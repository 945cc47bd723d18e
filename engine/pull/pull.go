// Package pull fetches images from OCI and Docker registries into the store.
//
// It owns the network side of a pull: manifest and platform selection,
// credentials, retries of dropped connections, and streaming each layer
// through decompression and digest checks straight into the store's staging
// directory (no temporary tarball, so a layer costs its extracted size in
// flash writes). It must not decide what is durable or visible: it hands
// finished layers and the image record to the store.
package pull

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/bulkhead-os/bulkhead/engine/archive"
	"github.com/bulkhead-os/bulkhead/engine/store"
)

// ErrNoPlatform is wrapped when an image has no variant for the platform.
var ErrNoPlatform = errors.New("image has no variant for this platform")

// ErrDiskFull is wrapped when the data partition filled up during a pull.
var ErrDiskFull = errors.New("data partition is full")

// Options configure a Puller.
type Options struct {
	Platform  v1.Platform       // the device's platform (DefaultPlatform())
	Keychain  authn.Keychain    // credentials; nil means anonymous
	Transport http.RoundTripper // nil means http.DefaultTransport
	Insecure  map[string]bool   // registries reached over plain HTTP
	Jobs      int               // layers fetched at once (default 3)
	Attempts  int               // tries per layer (default 5)
	Backoff   time.Duration     // first wait between tries (default 500ms)
}

// Event reports progress, in the terms of docker's pull output.
type Event struct {
	ID      string // short layer digest; empty for image-level messages
	Status  string // "Pulling fs layer", "Downloading", "Pull complete", ...
	Current int64
	Total   int64
}

// Puller pulls images into a store.
type Puller struct {
	store *store.Store
	opts  Options
}

// New returns a Puller that writes to s.
func New(s *store.Store, opts Options) *Puller {
	if opts.Jobs <= 0 {
		opts.Jobs = 3
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 5
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 500 * time.Millisecond
	}
	if opts.Platform.OS == "" {
		opts.Platform = DefaultPlatform()
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.NewMultiKeychain()
	}
	return &Puller{store: s, opts: opts}
}

// Platform is the platform the puller selects.
func (p *Puller) Platform() v1.Platform { return p.opts.Platform }

// Pull fetches ref (e.g. "registry:5000/app:1") and records it in the
// store. auth overrides the keychain when non-nil (docker's X-Registry-Auth);
// progress, when non-nil, receives events from several goroutines one at a
// time.
func (p *Puller) Pull(ctx context.Context, refStr string, auth authn.Authenticator, progress func(Event)) (*store.Image, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	var emitMu sync.Mutex
	emit := func(e Event) {
		emitMu.Lock()
		defer emitMu.Unlock()
		progress(e)
	}
	ref, err := store.ParseRef(refStr)
	if err != nil {
		return nil, err
	}
	if p.opts.Insecure[ref.Context().RegistryStr()] {
		if ref, err = name.ParseReference(refStr, name.WeakValidation, name.Insecure); err != nil {
			return nil, err
		}
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(p.opts.Platform), remote.WithUserAgent("bulkhead-engine")}
	if p.opts.Transport != nil {
		ropts = append(ropts, remote.WithTransport(p.opts.Transport))
	}
	if auth != nil {
		ropts = append(ropts, remote.WithAuth(auth))
	} else {
		ropts = append(ropts, remote.WithAuthFromKeychain(p.opts.Keychain))
	}

	var desc *remote.Descriptor
	err = p.retry(ctx, "manifest of "+refStr, func() error {
		var err error
		desc, err = remote.Get(ref, ropts...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", refStr, registryHint(err))
	}
	manifestDigest := desc.Digest
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", refStr, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("pull %s: read index: %w", refStr, err)
		}
		chosen, err := selectManifest(p.opts.Platform, im.Manifests)
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", refStr, err)
		}
		if img, err = idx.Image(chosen.Digest); err != nil {
			return nil, fmt.Errorf("pull %s: %w", refStr, err)
		}
	} else if img, err = desc.Image(); err != nil {
		return nil, fmt.Errorf("pull %s: %w", refStr, err)
	}

	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("pull %s: fetch config: %w", refStr, registryHint(err))
	}
	cfgDigest, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", refStr, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("pull %s: parse config: %w", refStr, err)
	}
	have := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if cf.OS != "" && rank(p.opts.Platform, have) < 0 {
		return nil, fmt.Errorf("pull %s: %w: the image is %s, this device needs %s: publish a %s variant of the image",
			refStr, ErrNoPlatform, FormatPlatform(have), FormatPlatform(p.opts.Platform), FormatPlatform(p.opts.Platform))
	}
	mf, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", refStr, err)
	}
	if len(mf.Layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("pull %s: manifest lists %d layers, config %d diff IDs: the image is malformed", refStr, len(mf.Layers), len(cf.RootFS.DiffIDs))
	}

	diffIDs := make([]string, len(mf.Layers))
	for i, d := range cf.RootFS.DiffIDs {
		diffIDs[i] = d.String()
	}
	release := p.store.Lease(diffIDs)
	defer release()

	emit(Event{Status: "Pulling from " + store.Familiar(ref.Context().Name()), ID: ref.Identifier()})
	layers := make([]store.Layer, len(mf.Layers))
	sem := make(chan struct{}, p.opts.Jobs)
	var wg sync.WaitGroup
	errs := make([]error, len(mf.Layers))
	for i, ld := range mf.Layers {
		short := shortDigest(ld.Digest.String())
		if p.store.HasLayer(diffIDs[i]) {
			l, err := p.store.Layer(diffIDs[i])
			if err != nil {
				return nil, fmt.Errorf("pull %s: %w", refStr, err)
			}
			layers[i] = l
			emit(Event{ID: short, Status: "Already exists"})
			continue
		}
		emit(Event{ID: short, Status: "Pulling fs layer"})
		wg.Add(1)
		go func(i int, ld v1.Descriptor) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			layer, err := img.LayerByDigest(ld.Digest)
			if err != nil {
				errs[i] = err
				return
			}
			err = p.retry(ctx, "layer "+short, func() error {
				l, err := p.fetchLayer(ctx, layer, ld, diffIDs[i], func(cur int64) {
					emit(Event{ID: short, Status: "Downloading", Current: cur, Total: ld.Size})
				})
				layers[i] = l
				return err
			})
			if err != nil {
				errs[i] = err
				return
			}
			emit(Event{ID: short, Status: "Pull complete"})
		}(i, ld)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pull %s: %w", refStr, registryHint(err))
	}

	im := &store.Image{
		ID:             cfgDigest.String(),
		ManifestDigest: manifestDigest.String(),
		RepoDigests:    []string{ref.Context().Digest(manifestDigest.String()).Name()},
		Config:         rawCfg,
		Layers:         layers,
		Platform:       FormatPlatform(have),
		Pulled:         time.Now().UTC(),
	}
	var tags []string
	if t, ok := ref.(name.Tag); ok {
		tags = append(tags, t.Name())
	}
	if err := p.store.PutImage(im, tags...); err != nil {
		return nil, fmt.Errorf("pull %s: %w", refStr, err)
	}
	emit(Event{Status: "Digest: " + manifestDigest.String()})
	return p.store.Resolve(im.ID)
}

// retry runs f until it succeeds, fails for good, or attempts run out.
// Connections dropped in the middle of a layer are the common failure on
// devices (Wi-Fi, cellular), and each attempt restarts the layer from a
// clean staging directory.
func (p *Puller) retry(ctx context.Context, what string, f func() error) error {
	wait := p.opts.Backoff
	var err error
	for attempt := 1; attempt <= p.opts.Attempts; attempt++ {
		if err = f(); err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if attempt == p.opts.Attempts {
			break
		}
		slog.Warn("pull: retrying", "what", what, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
	return fmt.Errorf("%s: gave up after %d attempts: %w", what, p.opts.Attempts, err)
}

func retryable(err error) bool {
	var te *transport.Error
	switch {
	case errors.Is(err, ErrDiskFull), errors.Is(err, archive.ErrUnsafe), errors.Is(err, ErrNoPlatform),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES):
		return false
	case errors.As(err, &te):
		// Retry on server trouble and rate limits, not on "no such image"
		// or "unauthorized".
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests || te.StatusCode == 0
	}
	return true
}

// registryHint adds the usual fix to errors people hit first.
func registryHint(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w (log in: put credentials for this registry in the engine's registry config.json)", err)
		case http.StatusNotFound:
			return fmt.Errorf("%w (check the image name and tag)", err)
		}
	}
	return err
}

// fetchLayer streams one layer into a fresh staging directory and commits
// it. The compressed stream is read to its end so go-containerregistry
// verifies the blob digest; the uncompressed stream is hashed against the
// config's diffID.
func (p *Puller) fetchLayer(ctx context.Context, layer v1.Layer, ld v1.Descriptor, diffID string, progress func(int64)) (store.Layer, error) {
	w, err := p.store.NewLayer()
	if err != nil {
		return store.Layer{}, diskFull(err, ld.Digest.String())
	}
	defer w.Abort()
	rc, err := layer.Compressed()
	if err != nil {
		return store.Layer{}, err
	}
	defer rc.Close()
	counted := &countingReader{r: rc, report: progress, every: 256 << 10}
	br := bufio.NewReaderSize(counted, 64<<10)
	dec, err := decompress(br)
	if err != nil {
		return store.Layer{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
	}
	defer dec.Close()
	h := sha256.New()
	tee := io.TeeReader(dec, h)
	st, err := archive.Extract(tee, w.Dir())
	if err != nil {
		return store.Layer{}, diskFull(fmt.Errorf("layer %s: %w", ld.Digest, err), ld.Digest.String())
	}
	// Tar padding and the compressed trailer follow the last entry; both
	// must pass through the hashes.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return store.Layer{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return store.Layer{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return store.Layer{}, fmt.Errorf("layer %s: uncompressed content is %s, the image config says %s: the registry served a corrupt layer", ld.Digest, got, diffID)
	}
	if err := ctx.Err(); err != nil {
		return store.Layer{}, err
	}
	l := store.Layer{DiffID: diffID, Digest: ld.Digest.String(), CompressedSize: counted.n, Size: st.Bytes, Created: time.Now().UTC()}
	if err := w.Commit(l); err != nil {
		return store.Layer{}, diskFull(err, ld.Digest.String())
	}
	progress(counted.n)
	return l, nil
}

func diskFull(err error, what string) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w while writing %s: %v: free space on the data partition (docker rmi, docker rm, docker system df) and pull again", ErrDiskFull, what, err)
	}
	return err
}

type nopReadCloser struct{ io.Reader }

func (nopReadCloser) Close() error { return nil }

// decompress recognises gzip and zstd by their magic numbers (the media
// type is advisory: registries serve docker and OCI types for the same
// bytes) and passes an uncompressed tar through.
func decompress(br *bufio.Reader) (io.ReadCloser, error) {
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		// One decoder goroutine and a bounded window keep a Pi Zero's memory
		// flat while extracting.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return nopReadCloser{br}, nil
}

type countingReader struct {
	r      io.Reader
	n      int64
	last   int64
	every  int64
	report func(int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.n-c.last >= c.every {
		c.last = c.n
		c.report(c.n)
	}
	return n, err
}

func shortDigest(d string) string {
	if len(d) > 7+12 {
		return d[7 : 7+12]
	}
	return d
}
