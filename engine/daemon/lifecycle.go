package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/durable"
	"github.com/bulkhead-os/bulkhead/engine/network"
	"github.com/bulkhead-os/bulkhead/engine/runtime"
	"github.com/bulkhead-os/bulkhead/engine/shim"
)

// Start runs a created or stopped container.
func (d *Daemon) Start(ctx context.Context, ref string) error {
	c, err := d.get(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.State.Running {
		return fmt.Errorf("%w: container %s is already running", ErrNotModified, c.Name)
	}
	if c.removing {
		return fmt.Errorf("%w: container %s is being removed", ErrConflict, c.Name)
	}
	if c.restart != nil {
		c.restart.Stop()
		c.restart = nil
	}
	c.ManuallyStopped = false
	return d.startLocked(ctx, c)
}

func (d *Daemon) startLocked(ctx context.Context, c *container) error {
	if err := d.startRun(ctx, c); err != nil {
		c.State.Error = err.Error()
		c.State.Restarting = false
		if c.State.Status == "restarting" {
			c.State.Status = "exited"
		}
		d.save(c)
		return err
	}
	return nil
}

func (d *Daemon) startRun(ctx context.Context, c *container) error {
	im, err := d.Store.Resolve(c.ImageID)
	if err != nil {
		return fmt.Errorf("%w: the image of container %s (%s) is gone: pull it again", ErrConflict, c.Name, c.Image)
	}
	var lowers, layerDirs []string
	for i := len(im.Layers) - 1; i >= 0; i-- {
		rel := strings.TrimPrefix(im.Layers[i].DiffID, "sha256:") + "/fs"
		lowers = append(lowers, rel)
		layerDirs = append(layerDirs, filepath.Join(d.Store.LayersRoot(), rel))
	}
	uid, gid, extra, home, err := d.lookupUser(layerDirs, c.Config.User)
	if err != nil {
		return err
	}

	// Network first: the namespace must exist before runc joins it.
	var netnsPath string
	var prev net.IP
	if c.Endpoint != nil {
		prev = c.Endpoint.IP // keep the address across restarts when free
	}
	c.Endpoint, c.Ports = nil, nil
	switch c.HostConfig.NetworkMode {
	case network.ModeBridge:
		ep, err := d.Net.Attach(c.ID, prev)
		if err != nil {
			return err
		}
		c.Endpoint, netnsPath = ep, ep.Netns
		ports, err := d.portMappings(c, ep.IP)
		if err == nil {
			c.Ports, err = d.Net.Publish(c.ID, ports)
		}
		if err != nil {
			d.Net.Detach(c.ID)
			c.Endpoint = nil
			return err
		}
	}
	fail := func(err error) error {
		if c.Endpoint != nil {
			d.Net.Detach(c.ID)
		}
		return err
	}

	// Files docker bind-mounts into every container.
	hostNet := c.HostConfig.NetworkMode == network.ModeHost
	dns := d.opts.DNS
	if len(c.HostConfig.DNS) > 0 {
		dns = c.HostConfig.DNS
	}
	resolv := network.ResolvConf(d.opts.ResolvConf, dns, hostNet)
	if len(c.HostConfig.DNS) > 0 {
		resolv = network.ResolvConf("/nonexistent", dns, hostNet)
	}
	hostname := c.Config.Hostname
	if hostNet {
		hostname, _ = os.Hostname()
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if c.Endpoint != nil {
		hosts += c.Endpoint.IP.String() + "\t" + hostname + "\n"
	}
	for _, h := range c.HostConfig.ExtraHosts {
		if name, ip, ok := strings.Cut(h, ":"); ok {
			hosts += ip + "\t" + name + "\n"
		}
	}
	files := map[string][]byte{"resolv.conf": resolv, "hostname": []byte(hostname + "\n"), "hosts": []byte(hosts)}
	var mounts []runtime.Mount
	for name, data := range files {
		p := filepath.Join(c.dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fail(fmt.Errorf("write %s: %w", name, err))
		}
		mounts = append(mounts, runtime.Mount{Type: "bind", Source: p, Destination: "/etc/" + name})
	}
	for _, m := range c.MountPoints {
		rm := runtime.Mount{Type: m.Type, Source: m.Source, Destination: m.Destination, ReadOnly: !m.RW}
		if m.Type == "volume" {
			rm.Type = "bind"
		}
		if m.Type == "tmpfs" && m.Options != "" {
			for _, o := range strings.Split(m.Options, ",") {
				if o != "ro" && o != "rw" && o != "" {
					rm.Options = append(rm.Options, o)
				}
			}
		}
		mounts = append(mounts, rm)
	}
	env := c.Config.Env
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	env = mergeEnv([]string{"HOSTNAME=" + hostname, "HOME=" + home}, env)
	var devices []runtime.Device
	for _, dv := range c.HostConfig.Devices {
		devices = append(devices, runtime.Device{PathOnHost: dv.PathOnHost, PathInContainer: dv.PathInContainer, CgroupPermissions: dv.CgroupPermissions})
	}
	var pids int64
	if c.HostConfig.PidsLimit != nil {
		pids = *c.HostConfig.PidsLimit
	}
	spec, err := runtime.Spec(runtime.Options{
		ID: c.ID, Rootfs: d.rootfs(c.ID), Args: append([]string{c.Path}, c.Args...), Env: env,
		Cwd: c.Config.WorkingDir, UID: uid, GID: gid, ExtraGIDs: extra, Hostname: hostname,
		ReadOnly: c.HostConfig.ReadonlyRootfs, Privileged: c.HostConfig.Privileged,
		CapAdd: c.HostConfig.CapAdd, CapDrop: c.HostConfig.CapDrop, Mounts: mounts, Devices: devices,
		NetworkMode: c.HostConfig.NetworkMode, NetnsPath: netnsPath,
		CgroupsPath: "bulkhead/" + c.ID, CgroupV2: d.cg.Version == 2,
		Memory: c.HostConfig.Memory, MemorySwap: c.HostConfig.MemorySwap, NanoCPUs: c.HostConfig.NanoCpus,
		CPUShares: c.HostConfig.CPUShares, PidsLimit: pids,
		Annotations: map[string]string{"org.bulkhead.container.name": c.Name},
	})
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	bundle := filepath.Join(c.dir, "bundle")
	if err := durable.WriteJSON(filepath.Join(bundle, "config.json"), spec, 0o600); err != nil {
		return fail(err)
	}
	sc := &shim.Config{
		ID: c.ID, Bundle: bundle, Rootfs: d.rootfs(c.ID), LayersRoot: d.Store.LayersRoot(), Lowers: lowers,
		Upper: filepath.Join(c.dir, "upper"), Work: filepath.Join(c.dir, "work"),
		Runc: d.opts.Runc, RuncRoot: filepath.Join(d.opts.ExecRoot, "runc"),
		LogDir: filepath.Join(c.dir, "logs"), LogMaxSize: d.opts.LogMaxSize, LogMaxFiles: d.opts.LogMaxFiles,
		Socket: d.shimSocket(c.ID), ExitFile: filepath.Join(c.dir, "exit.json"), ShimLog: filepath.Join(c.dir, "shim.log"),
	}
	scPath := filepath.Join(c.dir, "shim.json")
	if err := durable.WriteJSON(scPath, sc, 0o600); err != nil {
		return fail(err)
	}
	// A leftover runc state (engine killed between create and start)
	// would make runc refuse the ID.
	if d.runc.Exists(c.ID) {
		d.runc.Delete(ctx, c.ID, true)
	}
	pid, err := shim.Spawn(d.opts.Exe, scPath, sc)
	if err != nil {
		return fail(fmt.Errorf("start container %s: %w", c.Name, err))
	}
	conn, err := shim.Dial(sc.Socket)
	if err != nil {
		return fail(fmt.Errorf("start container %s: %w", c.Name, err))
	}
	c.State = State{Status: "running", Running: true, Pid: pid, StartedAt: time.Now().UTC()}
	c.exited = make(chan struct{})
	if err := d.save(c); err != nil {
		slog.Error("engine: record start", "container", c.Name, "err", err)
	}
	go d.monitor(c, conn)
	return nil
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// portMappings turns PortBindings (and -P) into mappings to ip.
func (d *Daemon) portMappings(c *container, ip net.IP) ([]network.PortMapping, error) {
	var out []network.PortMapping
	bindings := c.HostConfig.PortBindings
	if c.HostConfig.PublishAllPorts {
		bindings = map[string][]PortBinding{}
		for p, b := range c.HostConfig.PortBindings {
			bindings[p] = b
		}
		for p := range c.Config.ExposedPorts {
			if _, ok := bindings[p]; !ok {
				bindings[p] = []PortBinding{{}}
			}
		}
	}
	for port, bs := range bindings {
		cport, proto, err := parsePort(port)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			var hp uint64
			if b.HostPort != "" {
				first, _, _ := strings.Cut(b.HostPort, "-")
				if hp, err = strconv.ParseUint(first, 10, 16); err != nil {
					return nil, fmt.Errorf("%w: host port %q", ErrInvalid, b.HostPort)
				}
			}
			var hip net.IP
			if b.HostIP != "" {
				if hip = net.ParseIP(b.HostIP); hip == nil {
					return nil, fmt.Errorf("%w: host IP %q", ErrInvalid, b.HostIP)
				}
				if hip.To4() == nil {
					continue // IPv6 publishing is not supported; docker's CLI adds [::] entries
				}
			}
			out = append(out, network.PortMapping{Proto: proto, HostIP: hip, HostPort: uint16(hp), ContainerIP: ip, ContainerPort: cport})
		}
	}
	return out, nil
}

// monitor waits for the run watched by conn to end.
func (d *Daemon) monitor(c *container, conn *shim.Conn) {
	exit, err := conn.Wait()
	c.mu.Lock()
	if err != nil {
		e, rerr := shim.ReadExit(filepath.Join(c.dir, "exit.json"))
		if rerr != nil {
			d.mu.Lock()
			closing := d.closing
			d.mu.Unlock()
			if closing {
				c.mu.Unlock()
				return
			}
			e = &shim.Exit{Code: 255, FinishedAt: time.Now().UTC(), Error: "the container's shim died: " + err.Error()}
			d.runc.Kill(context.Background(), c.ID, int(syscall.SIGKILL), true)
			d.runc.Delete(context.Background(), c.ID, true)
			unmount(d.rootfs(c.ID))
		}
		exit = e
	}
	d.mu.Lock()
	closing := d.closing
	d.mu.Unlock()
	if closing {
		c.mu.Unlock()
		return
	}
	d.exitedLocked(c, exit)
	restart := d.shouldRestart(c)
	autoRemove := c.HostConfig.AutoRemove && !c.removing
	if restart {
		d.scheduleRestart(c)
	}
	c.mu.Unlock()
	if autoRemove {
		if err := d.Remove(context.Background(), c.ID, false, true); err != nil {
			slog.Warn("engine: auto-remove", "container", c.Name, "err", err)
		}
	}
}

// exitedLocked records the end of a run and frees its network.
func (d *Daemon) exitedLocked(c *container, e *shim.Exit) {
	if c.Endpoint != nil || c.HostConfig.NetworkMode == network.ModeBridge {
		d.Net.Detach(c.ID)
	}
	// A stopped container publishes nothing; docker ps shows no ports.
	c.Ports = nil
	ran := e.FinishedAt.Sub(c.State.StartedAt)
	c.State.Running = false
	c.State.Restarting = false
	c.State.Status = "exited"
	c.State.Pid = 0
	c.State.ExitCode = e.Code
	c.State.FinishedAt = e.FinishedAt
	c.State.OOMKilled = e.OOMKilled
	c.State.Error = e.Error
	// docker's back-off: 100 ms doubling to a minute, reset by a run of 10 s.
	if ran >= 10*time.Second || c.backoff == 0 {
		c.backoff = 100 * time.Millisecond
	} else if c.backoff *= 2; c.backoff > time.Minute {
		c.backoff = time.Minute
	}
	select {
	case <-c.exited:
	default:
		close(c.exited)
	}
	d.save(c)
}

func (d *Daemon) shouldRestart(c *container) bool {
	if c.ManuallyStopped || c.removing {
		return false
	}
	switch c.HostConfig.RestartPolicy.Name {
	case "always", "unless-stopped":
		return true
	case "on-failure":
		max := c.HostConfig.RestartPolicy.MaximumRetryCount
		return c.State.ExitCode != 0 && (max == 0 || c.RestartCount < max)
	}
	return false
}

// scheduleRestart starts c again after its back-off; c.mu must be held.
func (d *Daemon) scheduleRestart(c *container) {
	c.State.Restarting = true
	c.State.Status = "restarting"
	d.save(c)
	delay := c.backoff
	c.restart = time.AfterFunc(delay, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.restart == nil || c.ManuallyStopped || c.removing || c.State.Running {
			return
		}
		c.restart = nil
		c.RestartCount++
		if err := d.startLocked(context.Background(), c); err != nil {
			slog.Error("engine: restart", "container", c.Name, "err", err)
			c.State.Status = "exited"
			d.save(c)
		}
	})
}

// Signal names docker's CLI and API use.
var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM, "STOP": syscall.SIGSTOP,
	"CONT": syscall.SIGCONT, "WINCH": syscall.SIGWINCH,
}

// ParseSignal accepts "KILL", "SIGKILL" or "9".
func ParseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGKILL, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	if sig, ok := signals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("%w: unknown signal %q", ErrInvalid, s)
}

// Stop sends the stop signal, waits up to timeout, then kills.
func (d *Daemon) Stop(ctx context.Context, ref string, timeout *int) error {
	c, err := d.get(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.ManuallyStopped = true
	if c.restart != nil {
		c.restart.Stop()
		c.restart = nil
		c.State.Restarting = false
		c.State.Status = "exited"
		d.save(c)
		c.mu.Unlock()
		return nil
	}
	if !c.State.Running {
		d.save(c)
		c.mu.Unlock()
		return fmt.Errorf("%w: container %s is not running", ErrNotModified, c.Name)
	}
	d.save(c)
	return d.stopLocked(ctx, c, timeout)
}

// stopLocked is called with c.mu held and releases it.
func (d *Daemon) stopLocked(ctx context.Context, c *container, timeout *int) error {
	sig, err := ParseSignal(c.Config.StopSignal)
	if err != nil || c.Config.StopSignal == "" {
		sig = syscall.SIGTERM
	}
	wait := 10
	if c.Config.StopTimeout != nil {
		wait = *c.Config.StopTimeout
	}
	if timeout != nil {
		wait = *timeout
	}
	exited := c.exited
	id := c.ID
	c.mu.Unlock()
	if wait != 0 {
		if err := d.runc.Kill(ctx, id, int(sig), false); err != nil {
			slog.Debug("engine: stop signal", "container", id, "err", err)
		}
	}
	if wait < 0 {
		<-exited
		return nil
	}
	select {
	case <-exited:
		return nil
	case <-time.After(time.Duration(wait) * time.Second):
	}
	d.runc.Kill(ctx, id, int(syscall.SIGKILL), true)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("container %s did not exit 30 s after SIGKILL (a process stuck in the kernel, e.g. on a dead NFS or USB device)", id[:12])
	}
}

// Kill sends a signal to a running container. SIGKILL, SIGTERM, SIGINT and
// SIGQUIT count as a manual stop (no restart policy brings it back), like
// docker kill.
func (d *Daemon) Kill(ctx context.Context, ref, signal string) error {
	sig, err := ParseSignal(signal)
	if err != nil {
		return err
	}
	c, err := d.get(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if !c.State.Running {
		c.mu.Unlock()
		return fmt.Errorf("%w: container %s is not running", ErrConflict, c.Name)
	}
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
		c.ManuallyStopped = true
		d.save(c)
	}
	id := c.ID
	c.mu.Unlock()
	if err := d.runc.Kill(ctx, id, int(sig), sig == syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", ref, err)
	}
	return nil
}

// Restart stops (if running) and starts a container.
func (d *Daemon) Restart(ctx context.Context, ref string, timeout *int) error {
	if err := d.Stop(ctx, ref, timeout); err != nil && !errors.Is(err, ErrNotModified) {
		return err
	}
	c, err := d.get(ref)
	if err != nil {
		return err
	}
	<-c.exited
	return d.Start(ctx, ref)
}

// Wait blocks until the container is not running and returns its exit
// code. With nextExit it first waits for the current run to begin ending.
func (d *Daemon) Wait(ctx context.Context, ref string) (int, error) {
	c, err := d.get(ref)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	ch := c.exited
	c.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.State.ExitCode, nil
}

// Exited returns a channel closed when the current run ends.
func (d *Daemon) Exited(ref string) (<-chan struct{}, error) {
	c, err := d.get(ref)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exited, nil
}

// Remove deletes a stopped container (force kills a running one first).
func (d *Daemon) Remove(ctx context.Context, ref string, force, removeVolumes bool) error {
	c, err := d.get(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.removing {
		c.mu.Unlock()
		return fmt.Errorf("%w: removal of container %s is already in progress", ErrConflict, c.Name)
	}
	if c.State.Running && !force {
		c.mu.Unlock()
		return fmt.Errorf("%w: cannot remove container %s: it is running: stop it first, or use --force", ErrConflict, c.Name)
	}
	c.removing = true
	c.ManuallyStopped = true
	if c.restart != nil {
		c.restart.Stop()
		c.restart = nil
	}
	if c.State.Running {
		zero := 0
		if err := d.stopLocked(ctx, c, &zero); err != nil {
			c.mu.Lock()
			c.removing = false
			c.mu.Unlock()
			return err
		}
		c.mu.Lock()
	}
	c.State.Status = "removing"
	anon := c.AnonVolumes
	c.mu.Unlock()

	unmount(d.rootfs(c.ID))
	if err := durable.RemoveAll(c.dir, filepath.Join(d.containersDir(), ".trash")); err != nil {
		return fmt.Errorf("remove container %s: %w", c.Name, err)
	}
	os.Remove(d.shimSocket(c.ID))
	d.mu.Lock()
	delete(d.containers, c.ID)
	delete(d.names, c.Name)
	d.mu.Unlock()
	d.execCleanup(c.ID)
	if removeVolumes {
		for _, v := range anon {
			if err := d.RemoveVolume(v); err != nil {
				slog.Warn("engine: remove anonymous volume", "volume", v, "err", err)
			}
		}
	}
	return nil
}
