// Package volume manages named volumes: directories on the data partition
// that outlive the containers mounting them.
//
// It owns the volumes/ directory of the engine root (one <name>/_data
// directory and one volume.json record per volume, created and removed
// atomically). It must not mount anything or know which containers exist:
// the daemon passes an in-use check when removing.
package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/durable"
)

// ErrNotFound is wrapped when a volume does not exist.
var ErrNotFound = errors.New("no such volume")

// ErrInUse is wrapped when a volume is mounted by a container.
var ErrInUse = errors.New("volume is in use")

// Volume is one named volume.
type Volume struct {
	Name       string            `json:"name"`
	CreatedAt  time.Time         `json:"created_at"`
	Labels     map[string]string `json:"labels,omitempty"`
	Mountpoint string            `json:"-"`
}

// Manager owns the volumes directory.
type Manager struct {
	dir string
	mu  sync.Mutex
}

// validName is docker's rule for volume names.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// Open prepares dir and removes volumes whose creation was interrupted.
func Open(dir string) (*Manager, error) {
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	os.RemoveAll(filepath.Join(dir, ".trash"))
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	for _, e := range ents {
		if len(e.Name()) > 0 && e.Name()[0] == '.' {
			os.RemoveAll(filepath.Join(dir, e.Name())) // staging of an interrupted create
		}
	}
	return &Manager{dir: dir}, nil
}

func (m *Manager) path(name string) string { return filepath.Join(m.dir, name) }

func (m *Manager) load(name string) (*Volume, error) {
	var v Volume
	if err := durable.ReadJSON(filepath.Join(m.path(name), "volume.json"), &v); err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return nil, err
	}
	v.Mountpoint = filepath.Join(m.path(name), "_data")
	return &v, nil
}

// Create makes the volume (or returns the existing one of that name). An
// empty name makes an anonymous volume with a random name.
func (m *Manager) Create(name string, labels map[string]string) (*Volume, error) {
	if name == "" {
		name = durable.RandomID(32)
	}
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("volume name %q: use letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, err := m.load(name); err == nil {
		return v, nil
	}
	// Build the volume under a dot name, then rename: a power cut leaves
	// either no volume or a complete one.
	staging := filepath.Join(m.dir, ".new-"+name)
	os.RemoveAll(staging)
	if err := os.MkdirAll(filepath.Join(staging, "_data"), 0o755); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	v := &Volume{Name: name, CreatedAt: time.Now().UTC(), Labels: labels}
	if err := durable.WriteJSON(filepath.Join(staging, "volume.json"), v, 0o600); err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	if err := os.Rename(staging, m.path(name)); err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	if err := durable.SyncDir(m.dir); err != nil {
		return nil, err
	}
	v.Mountpoint = filepath.Join(m.path(name), "_data")
	return v, nil
}

// Get returns a volume.
func (m *Manager) Get(name string) (*Volume, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.load(name)
}

// List returns all volumes by name.
func (m *Manager) List() ([]*Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, err
	}
	var out []*Volume
	for _, e := range ents {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		if v, err := m.load(e.Name()); err == nil {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes a volume and its data unless inUse says a container
// mounts it (force does not override this: deleting data under a running
// program is never what anyone means).
func (m *Manager) Remove(name string, inUse func(string) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.load(name); err != nil {
		return err
	}
	if inUse != nil && inUse(name) {
		return fmt.Errorf("%w: %s: remove the containers that use it first (docker ps -a --filter volume=%s)", ErrInUse, name, name)
	}
	return durable.RemoveAll(m.path(name), filepath.Join(m.dir, ".trash"))
}

// Size is the bytes used by the files of a volume.
func Size(v *Volume) int64 { return DirSize(v.Mountpoint) }

// DirSize sums the sizes of regular files under dir.
func DirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
