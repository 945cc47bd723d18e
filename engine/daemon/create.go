package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/durable"
	"github.com/bulkhead-os/bulkhead/engine/network"
	"github.com/bulkhead-os/bulkhead/engine/store"
)

var validName = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// ErrNoSuchImage is wrapped when create names an image that is not pulled;
// the docker CLI pulls and retries on it.
var ErrNoSuchImage = errors.New("no such image")

// Create records a new container from cfg and hc.
func (d *Daemon) Create(name string, cfg Config, hc HostConfig) (*Container, []string, error) {
	var warnings []string
	im, err := d.Store.Resolve(cfg.Image)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, fmt.Errorf("%w: %s", ErrNoSuchImage, cfg.Image)
		}
		return nil, nil, err
	}
	icf, err := im.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	if err := d.validate(&hc); err != nil {
		return nil, nil, err
	}

	id := durable.RandomID(32)
	d.mu.Lock()
	if name == "" {
		for name == "" || d.names[name] != "" {
			name = randomName()
		}
	}
	name = strings.TrimPrefix(name, "/")
	if !validName.MatchString(name) {
		d.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: container name %q: use letters, digits, '_', '.', '-'", ErrInvalid, name)
	}
	if other, ok := d.names[name]; ok {
		d.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: the container name %q is already in use by container %s: remove it or choose another name", ErrConflict, "/"+name, other)
	}
	d.names[name] = id // reserved while the directory is prepared
	d.mu.Unlock()
	release := func() { d.mu.Lock(); delete(d.names, name); d.mu.Unlock() }

	// Merge the image's defaults under the request, as docker does.
	ic := icf.Config
	if len(cfg.Entrypoint) == 0 {
		cfg.Entrypoint = ic.Entrypoint
		if len(cfg.Cmd) == 0 {
			cfg.Cmd = ic.Cmd
		}
	}
	cfg.Env = mergeEnv(ic.Env, cfg.Env)
	if cfg.WorkingDir == "" {
		cfg.WorkingDir = ic.WorkingDir
	}
	if cfg.User == "" {
		cfg.User = ic.User
	}
	if cfg.StopSignal == "" {
		cfg.StopSignal = ic.StopSignal
	}
	if cfg.Hostname == "" {
		cfg.Hostname = id[:12]
	}
	labels := map[string]string{}
	for k, v := range ic.Labels {
		labels[k] = v
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	cfg.Labels = labels
	if cfg.ExposedPorts == nil {
		cfg.ExposedPorts = map[string]struct{}{}
	}
	for p := range ic.ExposedPorts {
		cfg.ExposedPorts[p] = struct{}{}
	}
	argv := append(append([]string{}, cfg.Entrypoint...), cfg.Cmd...)
	if len(argv) == 0 {
		release()
		return nil, nil, fmt.Errorf("%w: no command: the image has no entrypoint or command, give one after the image name", ErrInvalid)
	}
	if hc.NetworkMode == "" || hc.NetworkMode == "default" {
		hc.NetworkMode = network.ModeBridge
	}

	dir := filepath.Join(d.containersDir(), id)
	c := &container{dir: dir, exited: make(chan struct{})}
	close(c.exited)
	c.Container = Container{
		ID: id, Name: name, Created: time.Now().UTC(), Image: cfg.Image, ImageID: im.ID,
		Path: argv[0], Args: argv[1:], Config: cfg, HostConfig: hc,
		State:   State{Status: "created"},
		LogPath: filepath.Join(dir, "logs", "container.log"),
	}
	imageVolumes := map[string]struct{}{}
	for v := range ic.Volumes {
		imageVolumes[v] = struct{}{}
	}
	for v := range cfg.Volumes {
		imageVolumes[v] = struct{}{}
	}
	if err := d.resolveMounts(c, imageVolumes); err != nil {
		release()
		return nil, nil, err
	}
	// Build the directory under a dot name and rename it: a power cut
	// leaves no half-created container.
	staging := filepath.Join(d.containersDir(), "."+id)
	for _, sub := range []string{"upper", "work", "rootfs", "logs", "bundle"} {
		if err := os.MkdirAll(filepath.Join(staging, sub), 0o700); err != nil {
			os.RemoveAll(staging)
			release()
			return nil, nil, fmt.Errorf("create container directory: %w", err)
		}
	}
	os.Chmod(filepath.Join(staging, "upper"), 0o755)
	c.dir = staging
	if err := d.save(c); err != nil {
		os.RemoveAll(staging)
		release()
		return nil, nil, err
	}
	if err := os.Rename(staging, dir); err != nil {
		os.RemoveAll(staging)
		release()
		return nil, nil, fmt.Errorf("create container directory: %w", err)
	}
	durable.SyncDir(d.containersDir())
	c.dir = dir
	d.mu.Lock()
	d.containers[id] = c
	d.mu.Unlock()
	out := c.Container
	return &out, warnings, nil
}

// validate refuses options this kernel or host cannot honour, at create
// time, so `docker run` fails with the reason instead of a runc error.
func (d *Daemon) validate(hc *HostConfig) error {
	switch hc.NetworkMode {
	case "", "default", network.ModeBridge:
		if err := d.Net.Available(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	case network.ModeHost, network.ModeNone:
		if len(hc.PortBindings) > 0 && hc.NetworkMode == network.ModeHost {
			hc.PortBindings = nil // docker ignores them too: the ports are the host's
		}
	default:
		return fmt.Errorf("%w: network %q: this engine has the networks bridge, host and none", ErrInvalid, hc.NetworkMode)
	}
	switch hc.RestartPolicy.Name {
	case "", "no", "always", "unless-stopped", "on-failure":
	default:
		return fmt.Errorf("%w: restart policy %q: use no, always, unless-stopped or on-failure[:N]", ErrInvalid, hc.RestartPolicy.Name)
	}
	if hc.RestartPolicy.Name != "on-failure" && hc.RestartPolicy.MaximumRetryCount != 0 {
		return fmt.Errorf("%w: a maximum retry count only goes with on-failure", ErrInvalid)
	}
	if hc.RestartPolicy.Name != "" && hc.RestartPolicy.Name != "no" && hc.AutoRemove {
		return fmt.Errorf("%w: --rm and a restart policy exclude each other", ErrInvalid)
	}
	if hc.Memory > 0 || hc.MemorySwap > 0 {
		if hc.Memory > 0 && hc.Memory < 6<<20 {
			return fmt.Errorf("%w: memory limit %d bytes is below the 6 MiB minimum", ErrInvalid, hc.Memory)
		}
		if err := d.cg.Require("memory", "a memory limit (--memory)"); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if hc.NanoCpus > 0 || hc.CPUShares > 0 {
		if err := d.cg.Require("cpu", "a CPU limit (--cpus, --cpu-shares)"); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if hc.PidsLimit != nil && *hc.PidsLimit > 0 {
		if err := d.cg.Require("pids", "a process limit (--pids-limit)"); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	for _, dev := range hc.Devices {
		if _, err := os.Stat(dev.PathOnHost); err != nil {
			return fmt.Errorf("%w: device %s: %v (is it plugged in?)", ErrInvalid, dev.PathOnHost, err)
		}
	}
	for port := range hc.PortBindings {
		if _, _, err := parsePort(port); err != nil {
			return err
		}
	}
	return nil
}

// parsePort splits "80/tcp".
func parsePort(p string) (uint16, string, error) {
	num, proto, _ := strings.Cut(p, "/")
	if proto == "" {
		proto = "tcp"
	}
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 || (proto != "tcp" && proto != "udp") {
		return 0, "", fmt.Errorf("%w: port %q: want e.g. 80/tcp or 53/udp", ErrInvalid, p)
	}
	return uint16(n), proto, nil
}

// resolveMounts turns Binds, Mounts, Tmpfs and image volumes into mount
// points, creating named and anonymous volumes.
func (d *Daemon) resolveMounts(c *container, imageVolumes map[string]struct{}) error {
	hc := &c.HostConfig
	seen := map[string]bool{}
	add := func(m MountPoint) error {
		if !path.IsAbs(m.Destination) {
			return fmt.Errorf("%w: mount destination %q must be an absolute path", ErrInvalid, m.Destination)
		}
		m.Destination = path.Clean(m.Destination)
		if seen[m.Destination] {
			return fmt.Errorf("%w: duplicate mount point %s", ErrInvalid, m.Destination)
		}
		seen[m.Destination] = true
		c.MountPoints = append(c.MountPoints, m)
		return nil
	}
	volumeMount := func(name, dst string, ro bool) error {
		anon := name == ""
		v, err := d.Volumes.Create(name, nil)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if anon {
			c.AnonVolumes = append(c.AnonVolumes, v.Name)
		}
		return add(MountPoint{Type: "volume", Name: v.Name, Source: v.Mountpoint, Destination: dst, RW: !ro, Anonymous: anon})
	}
	for _, b := range hc.Binds {
		parts := strings.Split(b, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("%w: volume spec %q: want source:destination[:ro]", ErrInvalid, b)
		}
		ro := len(parts) == 3 && strings.Contains(parts[2], "ro")
		if strings.HasPrefix(parts[0], "/") {
			if _, err := os.Stat(parts[0]); err != nil {
				// docker creates a missing bind source; so do we.
				if err := os.MkdirAll(parts[0], 0o755); err != nil {
					return fmt.Errorf("%w: bind source %s: %v", ErrInvalid, parts[0], err)
				}
			}
			if err := add(MountPoint{Type: "bind", Source: parts[0], Destination: parts[1], RW: !ro}); err != nil {
				return err
			}
			continue
		}
		if err := volumeMount(parts[0], parts[1], ro); err != nil {
			return err
		}
	}
	for _, m := range hc.Mounts {
		switch m.Type {
		case "bind":
			if _, err := os.Stat(m.Source); err != nil {
				return fmt.Errorf("%w: bind source path does not exist: %s", ErrInvalid, m.Source)
			}
			if err := add(MountPoint{Type: "bind", Source: m.Source, Destination: m.Target, RW: !m.ReadOnly}); err != nil {
				return err
			}
		case "volume", "":
			if err := volumeMount(m.Source, m.Target, m.ReadOnly); err != nil {
				return err
			}
		case "tmpfs":
			opts := ""
			if m.TmpfsOptions != nil && m.TmpfsOptions.SizeBytes > 0 {
				opts = "size=" + strconv.FormatInt(m.TmpfsOptions.SizeBytes, 10)
			}
			if err := add(MountPoint{Type: "tmpfs", Destination: m.Target, RW: !m.ReadOnly, Options: opts}); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: mount type %q: use bind, volume or tmpfs", ErrInvalid, m.Type)
		}
	}
	for dst, opts := range hc.Tmpfs {
		if err := add(MountPoint{Type: "tmpfs", Destination: dst, RW: !strings.Contains(","+opts+",", ",ro,"), Options: opts}); err != nil {
			return err
		}
	}
	for dst := range imageVolumes {
		if seen[path.Clean(dst)] {
			continue
		}
		if err := volumeMount("", dst, false); err != nil {
			return err
		}
	}
	return nil
}

// mergeEnv overlays KEY=value lists: later entries win by key.
func mergeEnv(base, over []string) []string {
	idx := map[string]int{}
	var out []string
	for _, list := range [][]string{base, over} {
		for _, kv := range list {
			k, _, _ := strings.Cut(kv, "=")
			if i, ok := idx[k]; ok {
				out[i] = kv
				continue
			}
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// Two short word lists give docker-style names ("brave_lovelace").
var (
	adjectives = []string{"brave", "calm", "eager", "fond", "happy", "jolly", "keen", "lucid", "merry", "nifty", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zen", "bold", "clever", "gentle"}
	surnames   = []string{"lovelace", "turing", "hopper", "curie", "noether", "shannon", "ritchie", "thompson", "torvalds", "hamilton", "knuth", "liskov", "dijkstra", "babbage", "kernighan", "pike", "meitner", "franklin", "tesla", "euler"}
)

func randomName() string {
	return adjectives[rand.IntN(len(adjectives))] + "_" + surnames[rand.IntN(len(surnames))]
}

// lookupUser resolves "name[:group]" or "uid[:gid]" against the image's
// /etc/passwd and /etc/group (taken from the topmost layer holding them).
func (d *Daemon) lookupUser(layerDirs []string, spec string) (uid, gid uint32, extra []uint32, home string, err error) {
	home = "/"
	if spec == "" || spec == "root" || spec == "0" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	passwd := findFile(layerDirs, "etc/passwd")
	group := findFile(layerDirs, "etc/group")
	userName := ""
	if n, perr := strconv.ParseUint(userPart, 10, 32); perr == nil {
		uid, gid = uint32(n), uint32(n)
		if uid == 0 {
			gid, home = 0, "/root"
		}
		for _, f := range readColon(passwd) {
			if len(f) >= 6 && f[2] == userPart {
				userName = f[0]
				if g, err := strconv.ParseUint(f[3], 10, 32); err == nil {
					gid = uint32(g)
				}
				home = f[5]
			}
		}
	} else {
		found := false
		for _, f := range readColon(passwd) {
			if len(f) >= 6 && f[0] == userPart {
				u, _ := strconv.ParseUint(f[2], 10, 32)
				g, _ := strconv.ParseUint(f[3], 10, 32)
				uid, gid, home, userName, found = uint32(u), uint32(g), f[5], f[0], true
			}
		}
		if !found {
			return 0, 0, nil, "", fmt.Errorf("%w: user %q is not in the image's /etc/passwd: use a numeric uid", ErrInvalid, userPart)
		}
	}
	if hasGroup {
		if n, perr := strconv.ParseUint(groupPart, 10, 32); perr == nil {
			gid = uint32(n)
		} else {
			found := false
			for _, f := range readColon(group) {
				if len(f) >= 3 && f[0] == groupPart {
					g, _ := strconv.ParseUint(f[2], 10, 32)
					gid, found = uint32(g), true
				}
			}
			if !found {
				return 0, 0, nil, "", fmt.Errorf("%w: group %q is not in the image's /etc/group: use a numeric gid", ErrInvalid, groupPart)
			}
		}
	}
	if userName != "" {
		for _, f := range readColon(group) {
			if len(f) >= 4 {
				for _, m := range strings.Split(f[3], ",") {
					if m == userName {
						if g, err := strconv.ParseUint(f[2], 10, 32); err == nil && uint32(g) != gid {
							extra = append(extra, uint32(g))
						}
					}
				}
			}
		}
	}
	return uid, gid, extra, home, nil
}

func findFile(layerDirs []string, rel string) string {
	for _, dir := range layerDirs { // top first
		p := filepath.Join(dir, rel)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

func readColon(path string) [][]string {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}
