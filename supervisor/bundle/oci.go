package bundle

// How bundles travel through OCI registries.
//
// A published tag is an OCI image index with one entry per board. Each
// entry is an OCI image manifest (artifactType MediaTypeBundle) whose config
// blob is the bundle's manifest JSON (MediaTypeManifest, so `crane config`
// shows what the tag holds without downloading the bundle) and whose single
// layer is the bundle file byte for byte (MediaTypeBundle; the payload is
// already compressed, so the layer is not gzipped again). The index entry
// carries the OCI platform of the board's architecture and the annotation
// AnnotationBoards, the board and its compatible boards separated by
// commas, by which a device picks its entry: several boards share an
// architecture (raspberrypi3, raspberrypi4 and qemu-aarch64 are all
// linux/arm64), so the platform alone cannot choose.
//
// The registry's digests are checked while downloading, but they are not
// what makes a bundle trustworthy: Open verifies the signature as always.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OCI media types and annotations of published bundles.
const (
	MediaTypeBundle   = "application/vnd.bulkhead.bundle.v1"
	MediaTypeManifest = "application/vnd.bulkhead.bundle.manifest.v1+json"
	// AnnotationBoards on an index entry: the boards that may install it.
	AnnotationBoards = "org.bulkhead.boards"
	// AnnotationVersion on index entries and image manifests.
	AnnotationVersion = "org.opencontainers.image.version"
	// AnnotationTitle names the layer's file, as `oras pull` expects.
	AnnotationTitle = "org.opencontainers.image.title"
)

// Platform returns the OCI platform of a bundle's Debian architecture.
func Platform(m Manifest) v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: m.Arch}
	switch m.Arch {
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "arm64":
		p.Variant = "v8"
	}
	return p
}

// Publish pushes the bundle file at bundlePath to ref (a tag such as
// registry.example.com/fleet/os:stable) as this board's entry of the tag's
// index. Entries of other boards already under the tag are kept, so the
// builder publishes each board's bundle to the same tag in turn; an entry
// for the same board is replaced. It returns the digest of the new index.
// The bundle's signature is not checked here (the builder just made it);
// devices check it.
func Publish(ctx context.Context, ref, bundlePath string, opts ...remote.Option) (v1.Hash, error) {
	tag, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("publish bundle: reference %q: %w", ref, err)
	}
	opts = append(slices.Clone(opts), remote.WithContext(ctx))
	img, m, err := bundleImage(bundlePath)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("publish bundle %s: %w", bundlePath, err)
	}

	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	switch old, err := remote.Index(tag, opts...); {
	case err == nil:
		if mt, _ := old.MediaType(); mt.IsIndex() {
			idx = old
		}
	case isNotFound(err):
	default:
		return v1.Hash{}, fmt.Errorf("publish bundle: read the current index of %s: %w", tag, err)
	}
	idx = mutate.RemoveManifests(idx, func(d v1.Descriptor) bool {
		return slices.Contains(strings.Split(d.Annotations[AnnotationBoards], ","), m.Board)
	})
	p := Platform(m)
	idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
		Add: img,
		Descriptor: v1.Descriptor{
			MediaType:    types.OCIManifestSchema1,
			Platform:     &p,
			ArtifactType: MediaTypeBundle,
			Annotations: map[string]string{
				AnnotationBoards:  strings.Join(m.Boards(), ","),
				AnnotationVersion: m.Version,
			},
		},
	})
	if err := remote.WriteIndex(tag, idx, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("publish bundle to %s: %w", tag, err)
	}
	h, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("publish bundle to %s: %w", tag, err)
	}
	return h, nil
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// bundleImage describes the bundle file as a one-layer OCI image.
func bundleImage(path string) (v1.Image, Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Manifest{}, err
	}
	defer f.Close()
	m, _, err := Inspect(f)
	if err != nil {
		return nil, Manifest{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, Manifest{}, err
	}
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return nil, Manifest{}, err
	}
	layer := &fileLayer{path: path, size: size, digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}}
	config, err := json.Marshal(m)
	if err != nil {
		return nil, Manifest{}, err
	}
	cfgSum := sha256.Sum256(config)
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  MediaTypeBundle,
		Config: v1.Descriptor{
			MediaType: MediaTypeManifest,
			Size:      int64(len(config)),
			Digest:    v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", cfgSum)},
		},
		Layers: []v1.Descriptor{{
			MediaType:   MediaTypeBundle,
			Size:        size,
			Digest:      layer.digest,
			Annotations: map[string]string{AnnotationTitle: filepath.Base(path)},
		}},
		Annotations: map[string]string{AnnotationVersion: m.Version},
	}
	raw, err := json.Marshal(man)
	if err != nil {
		return nil, Manifest{}, err
	}
	img, err := partial.CompressedToImage(&imageCore{config: config, manifest: raw, layer: layer})
	return img, m, err
}

// imageCore is the minimal image partial.CompressedToImage completes.
type imageCore struct {
	config, manifest []byte
	layer            *fileLayer
}

func (c *imageCore) RawConfigFile() ([]byte, error) { return c.config, nil }
func (c *imageCore) MediaType() (types.MediaType, error) {
	return types.OCIManifestSchema1, nil
}
func (c *imageCore) RawManifest() ([]byte, error) { return c.manifest, nil }
func (c *imageCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == c.layer.digest {
		return c.layer, nil
	}
	return nil, fmt.Errorf("no layer %s in the bundle image", h)
}

// fileLayer is the bundle file as a layer, read from disk on demand so a
// 300 MB bundle is never held in memory. It is stored as is: "compressed"
// and "uncompressed" are the same bytes.
type fileLayer struct {
	path   string
	size   int64
	digest v1.Hash
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return MediaTypeBundle, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }

// Published is a bundle found in a registry by Resolve.
type Published struct {
	// Blob is repository@digest of the bundle layer.
	Blob name.Digest
	// Size of the bundle in bytes.
	Size int64
	// Manifest is the image's config blob: the bundle manifest as
	// published, NOT verified. Show it; never trust it.
	Manifest Manifest
}

// Resolve finds the bundle for board under ref, which may name an index
// written by Publish (the entry whose AnnotationBoards lists board is
// taken) or a single bundle image. It downloads manifests and the small
// config blob, not the bundle.
func Resolve(ctx context.Context, ref, board string, opts ...remote.Option) (Published, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Published{}, fmt.Errorf("registry reference %q: %w", ref, err)
	}
	opts = append(slices.Clone(opts), remote.WithContext(ctx))
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return Published{}, fmt.Errorf("look up %s: %w", r, err)
	}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Published{}, fmt.Errorf("read index %s: %w", r, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return Published{}, fmt.Errorf("read index %s: %w", r, err)
		}
		var found *v1.Descriptor
		var boards []string
		for i, d := range im.Manifests {
			bs := d.Annotations[AnnotationBoards]
			boards = append(boards, bs)
			if slices.Contains(strings.Split(bs, ","), board) {
				found = &im.Manifests[i]
				break
			}
		}
		if found == nil {
			return Published{}, fmt.Errorf("%s has no bundle for board %s (it has: %s): publish one with `builder publish`", r, board, strings.Join(boards, "; "))
		}
		if img, err = idx.Image(found.Digest); err != nil {
			return Published{}, fmt.Errorf("read %s entry of %s: %w", board, r, err)
		}
	} else if img, err = desc.Image(); err != nil {
		return Published{}, fmt.Errorf("read image %s: %w", r, err)
	}
	man, err := img.Manifest()
	if err != nil {
		return Published{}, fmt.Errorf("read image manifest of %s: %w", r, err)
	}
	if len(man.Layers) != 1 || man.Layers[0].MediaType != MediaTypeBundle {
		return Published{}, fmt.Errorf("%s is not a Bulkhead bundle image: want one layer of type %s", r, MediaTypeBundle)
	}
	var m Manifest
	if man.Config.MediaType == MediaTypeManifest {
		if raw, err := img.RawConfigFile(); err == nil {
			m, _ = ParseManifest(bytes.TrimSpace(raw))
		}
	}
	return Published{
		Blob:     r.Context().Digest(man.Layers[0].Digest.String()),
		Size:     man.Layers[0].Size,
		Manifest: m,
	}, nil
}
