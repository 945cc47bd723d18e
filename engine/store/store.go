// Package store keeps the extracted layers and the image records of the
// engine on the data partition.
//
// It owns the on-disk layout under its directory and the crash rules: a
// layer becomes visible only as a complete, synced directory renamed into
// layers/; an image only once its record is written atomically after all of
// its layers; a tag only in references.json, rewritten atomically. Anything
// else found at start (staging directories, temporary files) is the residue
// of an interrupted pull and is deleted. It must not talk to registries or
// decompress (package pull does) and must not know about containers beyond
// the in-use callback it is given.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/engine/durable"
)

// ErrNotFound is wrapped when no image matches a name or ID.
var ErrNotFound = errors.New("no such image")

// ErrInUse is wrapped when an image cannot be removed because a container
// uses it.
var ErrInUse = errors.New("image is in use")

// Layer is the record of one extracted layer, stored beside its files.
type Layer struct {
	DiffID         string    `json:"diff_id"`         // sha256 of the uncompressed tar
	Digest         string    `json:"digest"`          // sha256 of the blob as downloaded
	CompressedSize int64     `json:"compressed_size"` // bytes downloaded
	Size           int64     `json:"size"`            // bytes of file content extracted
	Created        time.Time `json:"created"`
}

// Image is the record of one pulled image. Its ID is the digest of its
// config, as with docker.
type Image struct {
	ID             string    `json:"id"`
	ManifestDigest string    `json:"manifest_digest"`
	RepoDigests    []string  `json:"repo_digests,omitempty"`
	Config         []byte    `json:"config"` // the raw config blob, served as is by inspect
	Layers         []Layer   `json:"layers"` // bottom first
	Platform       string    `json:"platform"`
	Pulled         time.Time `json:"pulled"`

	// RepoTags is filled from references.json when the store hands a copy
	// out; it is not part of the immutable record.
	RepoTags []string `json:"-"`
}

// Size is the extracted size of all layers.
func (im *Image) Size() int64 {
	var n int64
	for _, l := range im.Layers {
		n += l.Size
	}
	return n
}

// ConfigFile parses the image config.
func (im *Image) ConfigFile() (*v1.ConfigFile, error) {
	cf, err := v1.ParseConfigFile(strings.NewReader(string(im.Config)))
	if err != nil {
		return nil, fmt.Errorf("image %s: parse config: %w", im.ID, err)
	}
	return cf, nil
}

// Store is the layer and image store. All methods are safe for concurrent
// use.
type Store struct {
	dir string

	mu     sync.Mutex
	images map[string]*Image // by ID
	refs   map[string]string // full reference -> image ID
	leases map[string]int    // diffID -> pulls that need it
	sizes  map[string]int64  // diffID -> extracted size of committed layers
}

const (
	refsFile = "references.json"
)

func (s *Store) tmpDir() string    { return filepath.Join(s.dir, "tmp") }
func (s *Store) layersDir() string { return filepath.Join(s.dir, "layers", "sha256") }
func (s *Store) imagesDir() string { return filepath.Join(s.dir, "images", "sha256") }

// Open opens (creating if needed) the store in dir and removes the residue
// of interrupted pulls.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir, images: map[string]*Image{}, refs: map[string]string{}, leases: map[string]int{}, sizes: map[string]int64{}}
	// Staging directories are only ever inside tmp/, so a crashed pull
	// leaves nothing anywhere else. Deleting them is all recovery needs.
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("image store %s: remove interrupted pulls: %w", dir, err)
	}
	for _, d := range []string{s.tmpDir(), s.layersDir(), s.imagesDir()} {
		if err := durable.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w (is the data partition mounted read-write?)", err)
		}
	}
	for _, d := range []string{s.layersDir(), s.imagesDir(), filepath.Join(s.dir, "images")} {
		if err := durable.CleanTemp(d); err != nil {
			return nil, fmt.Errorf("image store: clean %s: %w", d, err)
		}
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	ents, err := os.ReadDir(s.layersDir())
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	for _, e := range ents {
		var l Layer
		if err := durable.ReadJSON(filepath.Join(s.layersDir(), e.Name(), "layer.json"), &l); err != nil {
			// A layer directory is renamed into place only with its record
			// inside, so this is outside damage: drop the layer, a pull
			// fetches it again.
			slog.Warn("image store: dropping unreadable layer", "layer", e.Name(), "err", err)
			durable.RemoveAll(filepath.Join(s.layersDir(), e.Name()), s.tmpDir())
			continue
		}
		s.sizes[l.DiffID] = l.Size
	}
	ents, err = os.ReadDir(s.imagesDir())
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	for _, e := range ents {
		var im Image
		if err := durable.ReadJSON(filepath.Join(s.imagesDir(), e.Name()), &im); err != nil {
			slog.Warn("image store: ignoring unreadable image record", "file", e.Name(), "err", err)
			continue
		}
		missing := false
		for _, l := range im.Layers {
			if _, ok := s.sizes[l.DiffID]; !ok {
				missing = true
			}
		}
		if missing {
			slog.Warn("image store: image has missing layers; pull it again", "image", im.ID)
			continue
		}
		s.images[im.ID] = &im
	}
	var refs map[string]string
	if err := durable.ReadJSON(filepath.Join(s.dir, "images", refsFile), &refs); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("image store: %w", err)
	}
	for r, id := range refs {
		if _, ok := s.images[id]; ok {
			s.refs[r] = id
		}
	}
	return nil
}

func hexOf(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

// LayerDir is the directory holding the files of a committed layer.
func (s *Store) LayerDir(diffID string) string {
	return filepath.Join(s.layersDir(), hexOf(diffID), "fs")
}

// LayersRoot is the directory under which every layer lives as
// <hex>/fs, so that overlay mounts can use short relative paths.
func (s *Store) LayersRoot() string { return s.layersDir() }

// HasLayer reports whether a layer with diffID is committed.
func (s *Store) HasLayer(diffID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sizes[diffID]
	return ok
}

// Lease protects the layers a pull needs from removal until release is
// called, so an rmi running beside a pull cannot delete a layer the pull has
// just found present.
func (s *Store) Lease(diffIDs []string) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range diffIDs {
		s.leases[d]++
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, d := range diffIDs {
			if s.leases[d]--; s.leases[d] <= 0 {
				delete(s.leases, d)
			}
		}
	}
}

// LayerWriter is one layer being extracted into a staging directory.
type LayerWriter struct {
	s       *Store
	staging string
	done    bool
}

// NewLayer creates a staging directory for a layer.
func (s *Store) NewLayer() (*LayerWriter, error) {
	staging, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return nil, fmt.Errorf("create layer staging directory: %w", err)
	}
	if err := os.Mkdir(filepath.Join(staging, "fs"), 0o755); err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("create layer staging directory: %w", err)
	}
	return &LayerWriter{s: s, staging: staging}, nil
}

// Dir is where the layer's files are to be extracted.
func (w *LayerWriter) Dir() string { return filepath.Join(w.staging, "fs") }

// Abort discards the staging directory. It is safe after Commit.
func (w *LayerWriter) Abort() {
	if !w.done {
		w.done = true
		os.RemoveAll(w.staging)
	}
}

// Commit makes the layer durable and visible under its diffID.
func (w *LayerWriter) Commit(l Layer) error {
	if w.done {
		return errors.New("layer writer already finished")
	}
	defer w.Abort()
	// One syncfs flushes every file and directory of the layer: far fewer
	// journal commits on flash than an fsync per file, and the data
	// partition holds nothing else that is being written in bulk.
	if err := syncFS(w.staging); err != nil {
		return fmt.Errorf("layer %s: flush extracted files: %w", l.DiffID, err)
	}
	if err := durable.WriteJSON(filepath.Join(w.staging, "layer.json"), l, 0o600); err != nil {
		return fmt.Errorf("layer %s: %w", l.DiffID, err)
	}
	final := filepath.Join(w.s.layersDir(), hexOf(l.DiffID))
	if err := os.Rename(w.staging, final); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			// A concurrent pull of another image committed the same layer.
			w.s.mu.Lock()
			w.s.sizes[l.DiffID] = l.Size
			w.s.mu.Unlock()
			return nil
		}
		return fmt.Errorf("layer %s: move into place: %w", l.DiffID, err)
	}
	w.done = true
	if err := durable.SyncDir(w.s.layersDir()); err != nil {
		return fmt.Errorf("layer %s: %w", l.DiffID, err)
	}
	w.s.mu.Lock()
	w.s.sizes[l.DiffID] = l.Size
	w.s.mu.Unlock()
	return nil
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// Layer returns the record of a committed layer.
func (s *Store) Layer(diffID string) (Layer, error) {
	var l Layer
	err := durable.ReadJSON(filepath.Join(s.layersDir(), hexOf(diffID), "layer.json"), &l)
	return l, err
}

// PutImage records an image whose layers are all committed and points refs
// at it. The record is written before the references, so a power cut
// between the two leaves an untagged image, never a tag without an image.
func (s *Store) PutImage(im *Image, refs ...string) error {
	for _, l := range im.Layers {
		if !s.HasLayer(l.DiffID) {
			return fmt.Errorf("image %s: layer %s is not in the store", im.ID, l.DiffID)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.images[im.ID]; ok {
		// Same config: keep the first record, add the new repo digests.
		for _, d := range im.RepoDigests {
			if !contains(old.RepoDigests, d) {
				old.RepoDigests = append(old.RepoDigests, d)
			}
		}
		im = old
	}
	if err := durable.WriteJSON(filepath.Join(s.imagesDir(), hexOf(im.ID)+".json"), im, 0o600); err != nil {
		return fmt.Errorf("record image %s: %w", im.ID, err)
	}
	s.images[im.ID] = im
	if len(refs) == 0 {
		return nil
	}
	next := copyMap(s.refs)
	for _, r := range refs {
		next[r] = im.ID
	}
	return s.writeRefs(next)
}

func (s *Store) writeRefs(next map[string]string) error {
	if err := durable.WriteJSON(filepath.Join(s.dir, "images", refsFile), next, 0o600); err != nil {
		return fmt.Errorf("record image tags: %w", err)
	}
	s.refs = next
	return nil
}

// Tag points ref (a full reference) at the image id.
func (s *Store) Tag(ref, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.images[id]; !ok {
		return fmt.Errorf("tag %s: %w: %s", ref, ErrNotFound, id)
	}
	next := copyMap(s.refs)
	next[ref] = id
	return s.writeRefs(next)
}

func copyMap(m map[string]string) map[string]string {
	n := make(map[string]string, len(m)+1)
	for k, v := range m {
		n[k] = v
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// view returns a copy of im with its tags filled in; s.mu must be held.
func (s *Store) view(im *Image) *Image {
	c := *im
	c.RepoTags = nil
	for r, id := range s.refs {
		if id == im.ID {
			c.RepoTags = append(c.RepoTags, r)
		}
	}
	sort.Strings(c.RepoTags)
	return &c
}

// Images lists every image, newest pull first.
func (s *Store) Images() []*Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Image
	for _, im := range s.images {
		out = append(out, s.view(im))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pulled.After(out[j].Pulled) })
	return out
}

// Resolve finds an image by full or short ID, tag, or repo@digest.
func (s *Store) Resolve(nameOrID string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, _, err := s.resolve(nameOrID)
	if err != nil {
		return nil, err
	}
	return s.view(im), nil
}

// resolve returns the image and, when nameOrID was a tag, the full tag.
func (s *Store) resolve(nameOrID string) (*Image, string, error) {
	if id := "sha256:" + strings.TrimPrefix(nameOrID, "sha256:"); len(id) == 71 {
		if im, ok := s.images[id]; ok {
			return im, "", nil
		}
	}
	if ref, err := ParseRef(nameOrID); err == nil {
		if id, ok := s.refs[ref.Name()]; ok {
			return s.images[id], ref.Name(), nil
		}
		for _, im := range s.images {
			if contains(im.RepoDigests, ref.Name()) {
				return im, "", nil
			}
		}
	}
	// Short IDs as printed by `docker images` (12 hex digits), at least 4.
	if p := strings.TrimPrefix(nameOrID, "sha256:"); len(p) >= 4 && isHex(p) {
		var found *Image
		for id, im := range s.images {
			if strings.HasPrefix(hexOf(id), p) {
				if found != nil {
					return nil, "", fmt.Errorf("image ID prefix %q is ambiguous: give more digits", p)
				}
				found = im
			}
		}
		if found != nil {
			return found, "", nil
		}
	}
	return nil, "", fmt.Errorf("%w: %s", ErrNotFound, nameOrID)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Removal says what Remove did, in docker's terms.
type Removal struct {
	Untagged []string
	Deleted  []string // image ID and layer diffIDs
}

// Remove untags nameOrID and deletes the image when no tag is left. inUse
// reports whether a container uses an image ID; such an image is not
// deleted, and without force its last tag is not removed either.
func (s *Store) Remove(nameOrID string, force bool, inUse func(id string) bool) (Removal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rm Removal
	im, tag, err := s.resolve(nameOrID)
	if err != nil {
		return rm, err
	}
	var tags []string
	for r, id := range s.refs {
		if id == im.ID {
			tags = append(tags, r)
		}
	}
	used := inUse != nil && inUse(im.ID)
	remove := tags
	if tag != "" {
		remove = []string{tag}
	} else if len(tags) > 1 && !force {
		return rm, fmt.Errorf("image %s is referenced by %d tags (%s): remove them by name or use --force", shortID(im.ID), len(tags), strings.Join(tags, ", "))
	}
	last := len(remove) == len(tags)
	if last && used && !force {
		return rm, fmt.Errorf("%w: a container uses image %s: remove the container first (docker rm) or use --force to untag only", ErrInUse, shortID(im.ID))
	}
	if len(remove) > 0 {
		next := copyMap(s.refs)
		for _, r := range remove {
			delete(next, r)
			rm.Untagged = append(rm.Untagged, Familiar(r))
		}
		if err := s.writeRefs(next); err != nil {
			return rm, err
		}
	}
	if !last || used {
		return rm, nil
	}
	for _, d := range im.RepoDigests {
		rm.Untagged = append(rm.Untagged, Familiar(d))
	}
	if err := durable.RemoveAll(filepath.Join(s.imagesDir(), hexOf(im.ID)+".json"), s.tmpDir()); err != nil {
		return rm, fmt.Errorf("delete image %s: %w", im.ID, err)
	}
	delete(s.images, im.ID)
	rm.Deleted = append(rm.Deleted, im.ID)
	deleted, err := s.gcLayers()
	rm.Deleted = append(rm.Deleted, deleted...)
	return rm, err
}

// gcLayers deletes committed layers that no image uses and no pull holds.
// Layers of an interrupted pull stay (a re-pull resumes from them) until
// the next image removal. s.mu must be held.
func (s *Store) gcLayers() ([]string, error) {
	used := map[string]bool{}
	for _, im := range s.images {
		for _, l := range im.Layers {
			used[l.DiffID] = true
		}
	}
	var deleted []string
	for d := range s.sizes {
		if used[d] || s.leases[d] > 0 {
			continue
		}
		if err := durable.RemoveAll(filepath.Join(s.layersDir(), hexOf(d)), s.tmpDir()); err != nil {
			return deleted, fmt.Errorf("delete layer %s: %w", d, err)
		}
		delete(s.sizes, d)
		deleted = append(deleted, d)
	}
	return deleted, nil
}

// Usage is the disk usage of the store.
type Usage struct {
	LayersSize int64 // extracted bytes of all committed layers
	Orphans    int   // committed layers no image uses
}

// Usage reports the store's disk usage.
func (s *Store) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	used := map[string]bool{}
	for _, im := range s.images {
		for _, l := range im.Layers {
			used[l.DiffID] = true
		}
	}
	var u Usage
	for d, n := range s.sizes {
		u.LayersSize += n
		if !used[d] {
			u.Orphans++
		}
	}
	return u
}

// LayerUsers counts, for each diffID, the images that use it (for the
// shared size of `docker system df`).
func (s *Store) LayerUsers() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[string]int{}
	for _, im := range s.images {
		for _, l := range im.Layers {
			n[l.DiffID]++
		}
	}
	return n
}

// StagingEntries lists what is in the staging directory (tests use it to
// prove that interrupted pulls leave nothing behind after a restart).
func (s *Store) StagingEntries() ([]string, error) {
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

func shortID(id string) string {
	h := hexOf(id)
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
