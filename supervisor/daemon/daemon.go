// Package daemon wires the supervisor together: it reads what the image
// and the bootloader say about this boot (release.json, trusted keys, the
// kernel command line), sets the clock floor, brings up the network from
// device.yaml, finds the boot disk and its boot state, serves the device API,
// resumes the update state machine and watches the update inbox on the data
// partition (package inbox). cmd/supervisor is a thin main over
// Run.
//
// Every path is an Option so that tests and the QEMU harness can run the
// daemon against loop devices and temporary directories.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/rootfs/blockdev"
	"github.com/bulkhead-os/bulkhead/rootfs/cmdline"
	"github.com/bulkhead-os/bulkhead/rootfs/service"
	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/bootstate"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/clock"
	"github.com/bulkhead-os/bulkhead/supervisor/devconf"
	"github.com/bulkhead-os/bulkhead/supervisor/health"
	"github.com/bulkhead-os/bulkhead/supervisor/inbox"
	"github.com/bulkhead-os/bulkhead/supervisor/keys"
	"github.com/bulkhead-os/bulkhead/supervisor/netconf"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
	"golang.org/x/sys/unix"
)

// Options locate everything the daemon reads and writes. Defaults are the
// paths of a running device.
type Options struct {
	Release      string         // /etc/bulkhead/release.json
	KeysDir      string         // /etc/bulkhead/keys
	DeviceConfig string         // /boot/firmware/bulkhead/device.yaml
	StateDir     string         // /data/supervisor
	HealthDir    string         // /data/supervisor/health.d
	OSHealthDir  string         // /etc/bulkhead/health.d
	InboxDir     string         // /data/supervisor/inbox
	Services     string         // /etc/bulkhead/services.json
	Socket       string         // /run/bulkhead/supervisor.sock
	Cmdline      string         // /proc/cmdline
	Sysfs        blockdev.Sysfs // /sys/block, /dev
	ResolvConf   string         // /run/bulkhead/resolv.conf
	// Network brings up lo, the hostname and the wired interface; off in
	// tests that run on a host.
	Network bool
	// SetClock moves the clock to the build time when it is earlier.
	SetClock bool
	// DiskTimeout bounds the wait for the boot disk; default 30 s.
	DiskTimeout time.Duration
	// InboxInterval is how often InboxDir is scanned; default 5 s.
	InboxInterval time.Duration
	// Reboot replaces the real reboot (signal PID 1) in tests.
	Reboot func() error
	// Updater tweaks the updater's config before it starts (tests).
	Updater func(*updater.Config)
	Log     *slog.Logger
}

func (o *Options) defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.Release, "/etc/bulkhead/release.json")
	def(&o.KeysDir, "/etc/bulkhead/keys")
	def(&o.DeviceConfig, devconf.DefaultPath)
	def(&o.StateDir, "/data/supervisor")
	def(&o.HealthDir, filepath.Join(o.StateDir, "health.d"))
	def(&o.OSHealthDir, health.DefaultOSDir)
	def(&o.InboxDir, filepath.Join(o.StateDir, "inbox"))
	def(&o.Services, service.DefaultSpecPath)
	def(&o.Socket, api.DefaultSocket)
	def(&o.Cmdline, "/proc/cmdline")
	def(&o.ResolvConf, netconf.DefaultResolvConf)
	if o.DiskTimeout <= 0 {
		o.DiskTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Reboot == nil {
		o.Reboot = RebootViaInit
	}
}

// Release is release.json as the supervisor reads it: build_time may be a
// number (what the builder writes) or a string.
type Release struct {
	Name      string          `json:"name"`
	Version   string          `json:"version"`
	Board     string          `json:"board"`
	Arch      string          `json:"arch"`
	Kernel    string          `json:"kernel"`
	BuildTime json.RawMessage `json:"build_time"`
}

// ReadRelease reads release.json.
func ReadRelease(path string) (Release, time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Release{}, time.Time{}, fmt.Errorf("release: %w", err)
	}
	var r Release
	if err := json.Unmarshal(b, &r); err != nil {
		return Release{}, time.Time{}, fmt.Errorf("release %s: %w", path, err)
	}
	if r.Board == "" || r.Arch == "" || r.Version == "" {
		return Release{}, time.Time{}, fmt.Errorf("release %s: board, arch and version are required", path)
	}
	bt, _ := clock.ParseBuildTime(string(r.BuildTime))
	return r, bt, nil
}

// RebootViaInit flushes filesystems and, a second later (so that the API
// answer that triggered it reaches the client), asks PID 1 to reboot with
// SIGTERM, which Bulkhead's init treats as a clean reboot.
func RebootViaInit() error {
	unix.Sync()
	go func() {
		time.Sleep(time.Second)
		unix.Kill(1, unix.SIGTERM)
	}()
	return nil
}

// Run runs the supervisor until ctx ends.
func Run(ctx context.Context, o Options) error {
	o.defaults()
	log := o.Log

	rel, buildTime, err := ReadRelease(o.Release)
	if err != nil {
		return err
	}
	if o.SetClock {
		if moved, err := clock.NotBefore(buildTime, time.Now(), clock.SetSystem); err != nil {
			log.Warn("clock", "err", err)
		} else if moved {
			log.Info("clock was before the build time; moved forward", "time", buildTime)
		}
	}

	cfg, err := devconf.Load(o.DeviceConfig)
	if err != nil {
		// A broken device.yaml must not cost the device its update path:
		// run with defaults (DHCP, no TCP API) and say why.
		log.Error("device config ignored, using defaults", "err", err)
		cfg = devconf.Config{}
	}
	if o.Network {
		startNetwork(ctx, cfg, rel, o, log)
	}

	params, err := cmdline.ReadFile(o.Cmdline)
	if err != nil {
		log.Warn("kernel command line", "err", err)
	}
	if params.Disk.IsZero() || params.BootState == "" || params.Slot == "" {
		return fmt.Errorf("kernel command line %s lacks bulkhead.slot, bulkhead.disk or bulkhead.bootstate: the bootloader script must pass them", o.Cmdline)
	}
	disk, err := slot.Locate(ctx, o.Sysfs, params.Disk.Kind, params.Disk.ID, o.DiskTimeout)
	if err != nil {
		return err
	}
	bs, err := bootstate.OpenDisk(disk.Path, params.BootState)
	if err != nil {
		return err
	}
	defer bs.Close()
	trusted, err := keys.LoadTrusted(o.KeysDir)
	if err != nil {
		log.Error("no trusted keys: every bundle will be refused", "err", err)
	}

	ucfg := updater.Config{
		Store:     updater.FileStore{Path: filepath.Join(o.StateDir, "state.json")},
		BootState: bs,
		Boot:      updater.Boot{Slot: bootloader.Slot(params.Slot), Trial: params.Trial, ID: updater.ReadBootID()},
		OpenSlot: func(s bootloader.Slot) (slot.Device, error) {
			p, ok := disk.Slots[s]
			if !ok {
				return nil, fmt.Errorf("no partition for slot %s", s)
			}
			return slot.Open(p)
		},
		Current:   bundle.Manifest{Name: rel.Name, Version: rel.Version, Board: rel.Board, Arch: rel.Arch},
		Board:     rel.Board,
		Trusted:   trusted,
		Sources:   source.Options{Board: rel.Board},
		Health:    healthChecks(o, cfg, rel, params.Slot),
		NetworkUp: func(ctx context.Context) bool { return health.NetworkUp(ctx, "", cfg.Update.HealthTarget) == nil },
		Reboot:    o.Reboot,
		Log:       log,
	}
	if d := time.Duration(cfg.Update.HealthDeadline); d > 0 {
		ucfg.HealthDeadline = d
	}
	if o.Updater != nil {
		o.Updater(&ucfg)
	}
	u, err := updater.New(ucfg)
	if err != nil {
		return err
	}

	host, _ := os.Hostname()
	au := &autoReboot{Updater: u, auto: cfg.AutoReboot()}
	srv := &api.Server{Updater: au, Ctx: ctx, Log: log, Info: func() api.Status {
		st := api.Status{
			Hostname: host,
			Release:  api.Release{Name: rel.Name, Version: rel.Version, Board: rel.Board, Arch: rel.Arch, Kernel: rel.Kernel, BuildTime: buildTime.Unix()},
			Boot:     api.Boot{Slot: bootloader.Slot(params.Slot), Trial: params.Trial},
		}
		if b, err := bs.Status(); err != nil {
			st.BootStateError = err.Error()
		} else {
			st.BootState = &b
		}
		var si unix.Sysinfo_t
		if unix.Sysinfo(&si) == nil {
			st.UptimeSeconds = int64(si.Uptime)
		}
		st.Supervisor = selfProcess()
		return st
	}}
	ul, err := api.ListenUnix(o.Socket)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ctx, ul, "") }()
	if cfg.API.Listen != "" {
		tl, err := api.ListenTCP(cfg.API.Listen, cfg.API.Token)
		if err != nil {
			log.Error("device API on TCP not started", "err", err)
		} else {
			go func() { errc <- srv.Serve(ctx, tl, cfg.API.Token) }()
			log.Info("device API", "listen", tl.Addr().String())
		}
	}
	log.Info("supervisor up", "version", rel.Version, "board", rel.Board, "slot", params.Slot, "trial", params.Trial)
	if err := u.Resume(ctx); err != nil {
		log.Error("resume update", "err", err)
	}
	// Bundles dropped onto the data partition (no network needed).
	inb := &inbox.Watcher{Dir: o.InboxDir, Updater: au, Interval: o.InboxInterval, Log: log}
	go func() {
		if err := inb.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("update inbox", "err", err)
		}
	}()
	select {
	case <-ctx.Done():
		u.Wait()
		return nil
	case err := <-errc:
		return fmt.Errorf("device API: %w", err)
	}
}

// autoReboot applies device.yaml's update.auto_reboot to updates started
// through the API.
type autoReboot struct {
	*updater.Updater
	auto bool
}

func (a *autoReboot) Start(ctx context.Context, r updater.Request) (string, error) {
	r.NoReboot = r.NoReboot || !a.auto
	return a.Updater.Start(ctx, r)
}

func (a *autoReboot) Install(ctx context.Context, r updater.Request, rd io.Reader, n int64) error {
	r.NoReboot = r.NoReboot || !a.auto
	return a.Updater.Install(ctx, r, rd, n)
}

// healthChecks builds the trial's checks; the OS image's and the user's
// executable checks are listed anew in every round so a script dropped in
// during the trial counts.
func healthChecks(o Options, cfg devconf.Config, rel Release, slot string) func(context.Context, bool) []health.Result {
	base := []health.Check{
		health.UnixSocket("supervisor-api", o.Socket),
		health.DataWritable(o.StateDir),
		health.Network("", cfg.Update.HealthTarget),
	}
	if sock := engineSocket(cfg, o.Services); sock != "" {
		base = append(base, health.UnixSocket("engine", sock))
	}
	return func(ctx context.Context, networkWasUp bool) []health.Result {
		checks := append([]health.Check(nil), base...)
		env := []string{"BULKHEAD_VERSION=" + rel.Version, "BULKHEAD_SLOT=" + slot}
		for _, d := range []struct{ dir, prefix string }{{o.OSHealthDir, "os:"}, {o.HealthDir, "user:"}} {
			cs, err := health.ExecDir(d.dir, d.prefix, env)
			if err != nil {
				checks = append(checks, health.Check{Name: strings.TrimSuffix(d.prefix, ":"), Run: func(context.Context) error { return err }})
			}
			checks = append(checks, cs...)
		}
		c := health.Checker{Checks: checks}
		return c.Run(ctx, networkWasUp)
	}
}

// startNetwork brings up lo, the hostname and the wired interface. Errors
// are logged, never fatal: a device without network still boots, checks
// its health and serves the API on its socket.
func startNetwork(ctx context.Context, cfg devconf.Config, rel Release, o Options, log *slog.Logger) {
	if err := netconf.Loopback(); err != nil {
		log.Warn("network", "err", err)
	}
	host := cfg.Hostname
	if host == "" {
		host = "bulkhead-" + strings.ReplaceAll(rel.Board, "_", "-")
	}
	if err := netconf.SetHostname(host); err != nil {
		log.Warn("hostname", "err", err)
	}
	n := cfg.Network
	if n.Mode == devconf.ModeOff {
		return
	}
	ifname := n.Interface
	if ifname == "" {
		var err error
		if ifname, err = netconf.FirstWired(""); err != nil {
			log.Warn("network", "err", err)
			return
		}
	}
	if n.Mode == devconf.ModeStatic {
		prefix, _ := netip.ParsePrefix(n.Address)
		gw, _ := netip.ParseAddr(n.Gateway)
		var dns []netip.Addr
		for _, d := range n.DNS {
			if a, err := netip.ParseAddr(d); err == nil {
				dns = append(dns, a)
			}
		}
		if err := netconf.Static(ifname, prefix, gw, dns, o.ResolvConf); err != nil {
			log.Warn("network", "err", err)
		}
		return
	}
	d := &netconf.DHCP{Interface: ifname, ResolvConf: o.ResolvConf, Log: log}
	go func() {
		if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("dhcp", "err", err)
		}
	}()
}

// selfProcess reports this process's resident memory, now and at its
// peak, from /proc/self/status (the budget: under 15 MB idle).
func selfProcess() *api.Process {
	p := &api.Process{PID: os.Getpid()}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return p
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 1 {
			continue
		}
		kib, _ := strconv.ParseInt(f[0], 10, 64)
		if k == "VmRSS" {
			p.RSSBytes = kib << 10
		} else {
			p.PeakRSSBytes = kib << 10
		}
	}
	return p
}

// engineSocket is the container engine's socket the trial checks:
// device.yaml's update.engine_socket, else the --socket argument of the
// "engine" service the image runs (services.json), so that a release whose
// engine does not come up is not committed. Empty: no engine check.
func engineSocket(cfg devconf.Config, servicesPath string) string {
	if cfg.Update.EngineSocket != "" {
		return cfg.Update.EngineSocket
	}
	specs, err := service.LoadSpecs(servicesPath)
	if err != nil {
		return ""
	}
	for _, sp := range specs {
		if sp.Name != "engine" {
			continue
		}
		for i, a := range sp.Args {
			if v, ok := strings.CutPrefix(a, "--socket="); ok {
				return v
			}
			if a == "--socket" && i+1 < len(sp.Args) {
				return sp.Args[i+1]
			}
		}
	}
	return ""
}
