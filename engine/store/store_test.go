package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func commitLayer(t *testing.T, s *Store, diffID string) {
	t.Helper()
	w, err := s.NewLayer()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(w.Dir(), "f"), []byte("x"), 0o644)
	if err := w.Commit(Layer{DiffID: diffID, Size: 1}); err != nil {
		t.Fatal(err)
	}
}

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	i1 = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	i2 = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestOpenRemovesInterruptedPullsAndKeepsCommittedWork(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	commitLayer(t, s, d1)
	if err := s.PutImage(&Image{ID: i1, Config: []byte("{}"), Layers: []Layer{{DiffID: d1}}}, "example.com/app:1"); err != nil {
		t.Fatal(err)
	}
	// An interrupted pull: a staging directory and a half-written record.
	w, _ := s.NewLayer()
	os.WriteFile(filepath.Join(w.Dir(), "partial"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "images", "sha256", ".tmp-x.json-123"), []byte("{"), 0o600)

	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := s2.StagingEntries(); len(ents) != 0 {
		t.Errorf("staging after reopen: %v", ents)
	}
	im, err := s2.Resolve("example.com/app:1")
	if err != nil || im.ID != i1 || len(im.RepoTags) != 1 {
		t.Fatalf("image after reopen: %+v %v", im, err)
	}
	if _, err := s2.Resolve("aaaaaaaaaaaa"); err != nil {
		t.Errorf("short ID: %v", err)
	}
}

func TestRemoveRefusesImagesInUseAndCollectsUnusedLayers(t *testing.T) {
	s, _ := Open(t.TempDir())
	commitLayer(t, s, d1)
	commitLayer(t, s, d2)
	s.PutImage(&Image{ID: i1, Config: []byte("{}"), Layers: []Layer{{DiffID: d1}}}, "example.com/a:1")
	s.PutImage(&Image{ID: i2, Config: []byte("{}"), Layers: []Layer{{DiffID: d1}, {DiffID: d2}}}, "example.com/b:1", "example.com/b:2")

	if _, err := s.Remove("example.com/a:1", false, func(id string) bool { return id == i1 }); !errors.Is(err, ErrInUse) {
		t.Errorf("removing an image in use: %v", err)
	}
	if _, err := s.Remove(i2, false, nil); err == nil {
		t.Error("removing by ID an image with two tags should need force")
	}
	rm, err := s.Remove("example.com/b:1", false, nil)
	if err != nil || len(rm.Deleted) != 0 {
		t.Fatalf("untag one of two tags: %+v %v", rm, err)
	}
	rm, err = s.Remove("example.com/b:2", false, nil)
	if err != nil || len(rm.Deleted) != 2 || rm.Deleted[1] != d2 {
		t.Fatalf("last tag: %+v %v (want the image and its unshared layer)", rm, err)
	}
	if !s.HasLayer(d1) || s.HasLayer(d2) {
		t.Error("the shared layer must stay and the unshared one go")
	}
}
