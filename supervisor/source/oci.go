package source

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// OCI is a bundle published to a registry with bundle.Publish.
type OCI struct {
	// Ref is a registry reference: registry/repository:tag or @digest.
	Ref string
	// Board picks the entry of a multi-board index.
	Board string
	// Auth defaults to anonymous access.
	Auth authn.Authenticator
	// Client's transport carries the registry requests when it is an
	// *http.Client; nil means DefaultClient.
	Client HTTPClient
	Retry  Retry
}

func (o *OCI) String() string { return "oci " + o.Ref }

// Open implements Source. It resolves the board's bundle with the
// registry API, then streams the blob through the same resuming reader as
// an HTTP source, over the registry's authenticated transport, and checks
// the blob's digest at the end.
func (o *OCI) Open(ctx context.Context) (io.ReadCloser, int64, error) {
	rt := http.DefaultTransport
	c := o.Client
	if c == nil {
		c = DefaultClient
	}
	if hc, ok := c.(*http.Client); ok && hc.Transport != nil {
		rt = hc.Transport
	}
	auth := o.Auth
	if auth == nil {
		auth = authn.Anonymous
	}
	pub, err := bundle.Resolve(ctx, o.Ref, o.Board, remote.WithAuth(auth), remote.WithTransport(rt))
	if err != nil {
		return nil, -1, err
	}
	repo := pub.Blob.Context()
	tr, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, -1, fmt.Errorf("registry %s: %w", repo.Registry, err)
	}
	hexSum, ok := strings.CutPrefix(pub.Blob.DigestStr(), "sha256:")
	want, err := hex.DecodeString(hexSum)
	if !ok || err != nil || len(want) != 32 {
		return nil, -1, fmt.Errorf("registry %s: bundle digest %s is not sha256", repo.Registry, pub.Blob.DigestStr())
	}
	url := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), pub.Blob.DigestStr())
	r := &rangeReader{ctx: ctx, client: &http.Client{Transport: tr}, url: url, retry: o.Retry.orDefault(), size: -1, want: want, h: newSHA256()}
	if err := r.connect(); err != nil {
		return nil, -1, err
	}
	if r.size >= 0 && r.size != pub.Size {
		r.Close()
		return nil, -1, fmt.Errorf("registry %s: blob %s is %d bytes, its manifest says %d", repo.Registry, pub.Blob.DigestStr(), r.size, pub.Size)
	}
	return r, pub.Size, nil
}
