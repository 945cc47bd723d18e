package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesAtomicallyAndLeavesNoTemporaries(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteJSON(p, map[string]int{"a": 1}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(p, map[string]int{"a": 2}, 0o600); err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	if err := ReadJSON(p, &got); err != nil || got["a"] != 2 {
		t.Fatalf("read back %v, %v", got, err)
	}
	// A temporary left by a crash is cleaned up.
	os.WriteFile(filepath.Join(dir, TempPrefix+"state.json-dead"), []byte("{"), 0o600)
	if err := CleanTemp(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only state.json", len(ents))
	}
}

func TestRemoveAllMovesAwayBeforeDeleting(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "layer")
	os.MkdirAll(filepath.Join(victim, "fs", "deep"), 0o755)
	os.WriteFile(filepath.Join(victim, "fs", "deep", "f"), []byte("x"), 0o644)
	if err := RemoveAll(victim, filepath.Join(dir, "trash")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(victim); !os.IsNotExist(err) {
		t.Errorf("still there: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "trash")); len(ents) != 0 {
		t.Errorf("trash not emptied: %d entries", len(ents))
	}
	if err := RemoveAll(victim, filepath.Join(dir, "trash")); err != nil {
		t.Errorf("removing a missing path: %v", err)
	}
}

func TestReadJSONNamesTheFixForACorruptFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(p, []byte("{not json"), 0o600)
	var v any
	if err := ReadJSON(p, &v); err == nil {
		t.Fatal("corrupt file accepted")
	}
}
