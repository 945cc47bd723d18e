// Package daemon is the engine's core: it keeps the container records and
// drives their lifecycle (create, start, stop, restart policies, exec,
// removal) over the store, puller, network, volume, runtime and shim
// packages, and re-attaches to running containers after a restart.
//
// It owns the containers/ directory of the data root and the rules that
// tie the parts together (an image in use cannot be removed, a volume in
// use cannot be deleted). It must not speak HTTP or docker's wire format
// beyond the Config/HostConfig types it shares with the API package.
package daemon

import (
	"context"
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

	"github.com/bulkhead-os/bulkhead/engine/cgroup"
	"github.com/bulkhead-os/bulkhead/engine/durable"
	"github.com/bulkhead-os/bulkhead/engine/network"
	"github.com/bulkhead-os/bulkhead/engine/pull"
	"github.com/bulkhead-os/bulkhead/engine/runtime"
	"github.com/bulkhead-os/bulkhead/engine/shim"
	"github.com/bulkhead-os/bulkhead/engine/store"
	"github.com/bulkhead-os/bulkhead/engine/volume"
)

// Errors the API maps to HTTP status codes.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrNotModified = errors.New("not modified")
	ErrInvalid     = errors.New("invalid request")
)

// Options configure a Daemon.
type Options struct {
	Root           string // data root (/data/engine)
	ExecRoot       string // run-time state on tmpfs (/run/bulkhead)
	Runc           string
	Platform       v1.Platform
	BridgeName     string
	BridgeCIDR     string
	DNS            []string // fallback name servers
	ResolvConf     string   // the host's resolver file
	RegistryConfig string   // docker config.json with registry credentials
	Insecure       []string // registries reached over HTTP
	LogMaxSize     int64
	LogMaxFiles    int
	Exe            string // this binary, re-executed as the shim
	Version        string
}

// Daemon manages containers.
type Daemon struct {
	opts    Options
	Store   *store.Store
	Puller  *pull.Puller
	Volumes *volume.Manager
	Net     *network.Manager
	runc    *runtime.Runc
	cg      cgroup.Info
	started time.Time
	lock    *os.File

	mu         sync.Mutex
	containers map[string]*container
	names      map[string]string // name -> ID
	execs      map[string]*execInstance
	closing    bool
}

type container struct {
	mu sync.Mutex
	Container
	dir      string
	exited   chan struct{} // closed when the current run ends
	restart  *time.Timer   // pending restart under a policy
	removing bool
	// lastRun is how long the last run lasted, for restart back-off.
	backoff time.Duration
}

func (d *Daemon) containersDir() string { return filepath.Join(d.opts.Root, "containers") }

// New opens the data root, recovers from interrupted work, and re-attaches
// to containers that kept running while the engine was down.
func New(ctx context.Context, o Options) (*Daemon, error) {
	if o.LogMaxSize == 0 {
		o.LogMaxSize = 10 << 20
	}
	if o.LogMaxFiles == 0 {
		o.LogMaxFiles = 3
	}
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	if len(o.DNS) == 0 {
		o.DNS = network.DefaultDNS
	}
	if err := durable.MkdirAll(o.Root, 0o711); err != nil {
		return nil, fmt.Errorf("data root %s: %w (is the data partition mounted?)", o.Root, err)
	}
	lock, err := lockRoot(o.Root)
	if err != nil {
		return nil, err
	}
	d := &Daemon{opts: o, lock: lock, started: time.Now(), containers: map[string]*container{}, names: map[string]string{}, execs: map[string]*execInstance{}}
	fail := func(err error) (*Daemon, error) { lock.Close(); return nil, err }
	if d.Store, err = store.Open(filepath.Join(o.Root, "image")); err != nil {
		return fail(err)
	}
	if d.Volumes, err = volume.Open(filepath.Join(o.Root, "volumes")); err != nil {
		return fail(err)
	}
	insecure := map[string]bool{}
	for _, r := range o.Insecure {
		insecure[r] = true
	}
	d.Puller = pull.New(d.Store, pull.Options{Platform: o.Platform, Keychain: pull.FileKeychain{Path: o.RegistryConfig}, Insecure: insecure})
	d.runc = &runtime.Runc{Binary: o.Runc, Root: filepath.Join(o.ExecRoot, "runc")}
	if _, err := d.runc.Check(); err != nil {
		return fail(err)
	}
	if err := cgroup.EnsureMounted(); err != nil {
		slog.Warn("engine: cgroups unavailable: resource limits will be refused", "err", err)
	}
	d.cg = cgroup.Detect()
	if d.Net, err = network.New(network.Config{Bridge: o.BridgeName, CIDR: o.BridgeCIDR, RunDir: filepath.Join(o.ExecRoot, "netns")}); err != nil {
		return fail(err)
	}
	if err := durable.MkdirAll(d.containersDir(), 0o700); err != nil {
		return fail(err)
	}
	os.RemoveAll(filepath.Join(d.containersDir(), ".trash"))
	if err := d.load(); err != nil {
		return fail(err)
	}
	// Addresses and ports of containers still running are known before
	// the table is rebuilt, so Init installs their ports in the same batch.
	for _, c := range d.containers {
		if c.State.Running && c.Endpoint != nil {
			d.Net.Adopt(c.ID, c.Endpoint.IP)
		}
	}
	if err := d.Net.Init(); err != nil {
		slog.Warn("engine: bridge networking unavailable; host and none networks still work", "err", err)
	}
	d.restore(ctx)
	return d, nil
}

// lockRoot takes an exclusive lock on the data root: two engines on one
// store would corrupt it.
func lockRoot(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, "engine.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data root: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("data root %s is in use by another engine (%v): stop it first", root, err)
	}
	return f, nil
}

func (d *Daemon) load() error {
	ents, err := os.ReadDir(d.containersDir())
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(d.containersDir(), e.Name())
		var rec Container
		if err := durable.ReadJSON(filepath.Join(dir, "container.json"), &rec); err != nil {
			slog.Warn("engine: skipping unreadable container record", "dir", dir, "err", err)
			continue
		}
		c := &container{Container: rec, dir: dir, exited: make(chan struct{})}
		if !c.State.Running {
			close(c.exited)
		}
		d.containers[c.ID] = c
		d.names[c.Name] = c.ID
	}
	return nil
}

// restore re-attaches running containers and applies restart policies to
// the others, as after a boot.
func (d *Daemon) restore(ctx context.Context) {
	for _, c := range d.sorted() {
		c.mu.Lock()
		if c.State.Running || c.State.Restarting {
			conn, err := shim.Dial(d.shimSocket(c.ID))
			if err == nil {
				c.State.Pid = conn.Pid
				c.State.Restarting = false
				if len(c.Ports) > 0 {
					if _, err := d.Net.Publish(c.ID, c.Ports); err != nil {
						slog.Warn("engine: republish ports", "container", c.Name, "err", err)
					}
				}
				slog.Info("engine: re-attached to running container", "container", c.Name, "pid", conn.Pid)
				go d.monitor(c, conn)
				c.mu.Unlock()
				continue
			}
			// The shim is gone: the container ended while nobody watched,
			// or the device rebooted.
			exit, err := shim.ReadExit(filepath.Join(c.dir, "exit.json"))
			if err != nil {
				exit = &shim.Exit{Code: 255, FinishedAt: time.Now().UTC(), Error: "the engine's host restarted or the shim died while the container ran"}
				d.runc.Delete(ctx, c.ID, true)
				unmount(d.rootfs(c.ID))
			}
			d.exitedLocked(c, exit)
		}
		want := false
		switch c.HostConfig.RestartPolicy.Name {
		case "always":
			want = true
		case "unless-stopped":
			want = !c.ManuallyStopped
		case "on-failure":
			max := c.HostConfig.RestartPolicy.MaximumRetryCount
			want = !c.ManuallyStopped && c.State.ExitCode != 0 && (max == 0 || c.RestartCount < max)
		}
		if want {
			// Counted like any restart by policy, so `docker inspect`
			// shows the container came back on its own.
			c.RestartCount++
			if err := d.startLocked(ctx, c); err != nil {
				slog.Error("engine: restart at boot", "container", c.Name, "err", err)
			} else {
				slog.Info("engine: started by its restart policy", "container", c.Name, "id", c.ID[:12], "policy", c.HostConfig.RestartPolicy.Name)
			}
		}
		c.mu.Unlock()
	}
}

func (d *Daemon) sorted() []*container {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*container
	for _, c := range d.containers {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// Close stops watching containers; they keep running under their shims.
func (d *Daemon) Close() error {
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	for _, c := range d.sorted() {
		c.mu.Lock()
		if c.restart != nil {
			c.restart.Stop()
		}
		c.mu.Unlock()
	}
	return d.lock.Close()
}

func (d *Daemon) shimSocket(id string) string {
	return filepath.Join(d.opts.ExecRoot, "shim", id[:24]+".sock")
}

func (d *Daemon) rootfs(id string) string {
	return filepath.Join(d.containersDir(), id, "rootfs")
}

// save writes the container record; c.mu must be held.
func (d *Daemon) save(c *container) error {
	if c.removing {
		return nil
	}
	if err := durable.WriteJSON(filepath.Join(c.dir, "container.json"), &c.Container, 0o600); err != nil {
		return fmt.Errorf("record container %s: %w", c.Name, err)
	}
	return nil
}

// get finds a container by full or short ID or by name.
func (d *Daemon) get(ref string) (*container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ref = strings.TrimPrefix(ref, "/")
	if c, ok := d.containers[ref]; ok {
		return c, nil
	}
	if id, ok := d.names[ref]; ok {
		return d.containers[id], nil
	}
	var found *container
	if len(ref) >= 3 {
		for id, c := range d.containers {
			if strings.HasPrefix(id, ref) {
				if found != nil {
					return nil, fmt.Errorf("%w: container ID prefix %q is ambiguous", ErrInvalid, ref)
				}
				found = c
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: no such container: %s", ErrNotFound, ref)
	}
	return found, nil
}

// Containers returns copies of all records, newest first.
func (d *Daemon) Containers() []Container {
	var out []Container
	for _, c := range d.sorted() {
		c.mu.Lock()
		out = append(out, c.Container)
		c.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// Inspect returns a copy of a container's record.
func (d *Daemon) Inspect(ref string) (Container, error) {
	c, err := d.get(ref)
	if err != nil {
		return Container{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Container, nil
}

// Dir is the container's directory (logs, upper layer).
func (d *Daemon) Dir(id string) string { return filepath.Join(d.containersDir(), id) }

// imageInUse reports whether any container uses the image.
func (d *Daemon) imageInUse(id string) bool {
	for _, c := range d.Containers() {
		if c.ImageID == id {
			return true
		}
	}
	return false
}

// volumeInUse reports whether any container mounts the volume.
func (d *Daemon) volumeInUse(name string) bool {
	for _, c := range d.Containers() {
		for _, m := range c.MountPoints {
			if m.Type == "volume" && m.Name == name {
				return true
			}
		}
	}
	return false
}

// RemoveImage removes an image unless a container uses it.
func (d *Daemon) RemoveImage(ref string, force bool) (store.Removal, error) {
	return d.Store.Remove(ref, force, d.imageInUse)
}

// RemoveVolume deletes a volume unless a container mounts it.
func (d *Daemon) RemoveVolume(name string) error {
	return d.Volumes.Remove(name, d.volumeInUse)
}

// Options returns the daemon's configuration.
func (d *Daemon) Options() Options { return d.opts }

// Cgroups returns what the kernel offers containers.
func (d *Daemon) Cgroups() cgroup.Info { return d.cg }

// Started is when the daemon started.
func (d *Daemon) Started() time.Time { return d.started }
