package volume

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestVolumesAreCreatedListedAndRemoved(t *testing.T) {
	m, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := m.Create("data", map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(v.Mountpoint, "f"), []byte("hello"), 0o644)
	again, err := m.Create("data", nil)
	if err != nil || again.Mountpoint != v.Mountpoint {
		t.Fatalf("creating an existing volume should return it: %v", err)
	}
	if Size(again) != 5 {
		t.Errorf("size = %d, want 5", Size(again))
	}
	anon, _ := m.Create("", nil)
	list, _ := m.List()
	if len(list) != 2 {
		t.Fatalf("list = %d volumes, want 2", len(list))
	}
	if err := m.Remove("data", func(string) bool { return true }); !errors.Is(err, ErrInUse) {
		t.Errorf("removing a volume in use: %v", err)
	}
	if err := m.Remove("data", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("data"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed volume still found: %v", err)
	}
	if _, err := m.Create("../escape", nil); err == nil {
		t.Error("a volume name with a path was accepted")
	}
	m.Remove(anon.Name, nil)
}
