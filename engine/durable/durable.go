// Package durable writes files and directories so that a power cut leaves
// either the old or the new content, never a torn or empty file.
//
// It owns the write-temp, fsync, rename, fsync-parent sequence that every
// piece of engine metadata goes through. It must not know what the bytes
// mean: callers own formats, this package owns only the crash ordering.
package durable

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data atomically and durably. The temporary
// file lives in the same directory so that the final rename cannot cross a
// filesystem; a leftover temporary (".tmp-" prefix) after a crash is removed
// by CleanTemp.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, TempPrefix+filepath.Base(path)+"-"+randomSuffix())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// ext4 with data=ordered would usually get this right without fsync,
	// but "usually" loses configuration on a power cut after rename.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	ok = true
	return SyncDir(dir)
}

// WriteJSON is WriteFile of v marshalled with indentation (the files are read
// by people debugging a device as often as by the engine).
func WriteJSON(path string, v any, perm os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return WriteFile(path, append(data, '\n'), perm)
}

// ReadJSON decodes path into v.
func ReadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w (the file is corrupt: remove it to let the engine rebuild its state)", path, err)
	}
	return nil
}

// SyncDir makes the entries of dir (creations, renames, removals) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAll creates dir and its missing parents and syncs every directory it
// created and the parent of the first one, so the new path survives a power
// cut.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, d := range created {
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// RemoveAll deletes path so that it disappears atomically: it is first
// renamed into trash (a directory on the same filesystem, emptied on every
// start by the owner), the rename is synced, then the contents are deleted.
// A power cut therefore never leaves a half-deleted layer or container
// visible under its real name.
func RemoveAll(path, trash string) error {
	if _, err := os.Lstat(path); os.IsNotExist(err) {
		return nil
	}
	if err := os.MkdirAll(trash, 0o700); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	tmp := filepath.Join(trash, "del-"+filepath.Base(path)+"-"+randomSuffix())
	if err := os.Rename(path, tmp); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return err
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove %s (moved to %s): %w", path, tmp, err)
	}
	return nil
}

// TempPrefix starts the name of every temporary file WriteFile creates.
const TempPrefix = ".tmp-"

// CleanTemp removes temporary files that an interrupted WriteFile left in dir.
func CleanTemp(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if len(e.Name()) > len(TempPrefix) && e.Name()[:len(TempPrefix)] == TempPrefix {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RandomID returns n random bytes in hex, for container and exec IDs.
func RandomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
