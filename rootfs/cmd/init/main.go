// Command init is PID 1 of a Bulkhead root slot (/sbin/init). It mounts the
// API filesystems, sets the hostname, reaps orphans, keeps the hardware
// watchdog fed while the system is healthy, supervises the services listed
// in /etc/bulkhead/services.json, announces the booted system with one
// machine-readable line, and shuts down cleanly on a signal:
//
//	SIGTERM  reboot     (kill -TERM 1 is how to reboot a Bulkhead device)
//	SIGINT   reboot     (ctrl-alt-del; the kernel sends it because init turns CAD off)
//	SIGUSR2  power off
//	SIGUSR1  halt
//
// There is no separate reboot command: `kill -TERM 1` is the interface, as
// with busybox init and runit.
//
// The watchdog health rule for now is "PID 1 is alive and no one vetoed":
// creating /run/bulkhead/watchdog-stop makes PID 1 stop feeding the
// watchdog, so the board resets one timeout later. The supervisor uses it
// to turn a failure it cannot recover from into a failed (counted) boot;
// later rules, such as a supervisor heartbeat, plug into the same hook.
//
// PID 1 must never exit (the kernel panics), so errors are logged and the
// system carries on as well as it can.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/rootfs/cmdline"
	"github.com/bulkhead-os/bulkhead/rootfs/console"
	"github.com/bulkhead-os/bulkhead/rootfs/kmod"
	"github.com/bulkhead-os/bulkhead/rootfs/mounts"
	"github.com/bulkhead-os/bulkhead/rootfs/reaper"
	"github.com/bulkhead-os/bulkhead/rootfs/release"
	"github.com/bulkhead-os/bulkhead/rootfs/service"
	"github.com/bulkhead-os/bulkhead/rootfs/watchdog"
)

const (
	prefix = "bulkhead: init: "

	// watchdogStop is the health hook's veto file (see the package comment).
	watchdogStop = "/run/bulkhead/watchdog-stop"

	dataDir = "/data"
	logDir  = "/data/log"

	// stopGrace is how long services get between SIGTERM and SIGKILL.
	stopGrace = 10 * time.Second
)

// apiFilesystems are mounted unless already there (the initramfs moves
// /dev, /proc and /sys in). Mount points on the read-only root are created
// by the builder.
var apiFilesystems = []mounts.Mount{
	{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
	{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "mode=0620,ptmxmode=0666"},
	{Source: "tmpfs", Target: "/dev/shm", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
	{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	{Source: "cgroup2", Target: "/sys/fs/cgroup", FSType: "cgroup2", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, prefix+"must run as PID 1; to reboot a Bulkhead device run: kill -TERM 1")
		os.Exit(2)
	}
	p := &pid1{out: console.NewLockedWriter(os.Stdout)}
	defer func() {
		if r := recover(); r != nil {
			// A panic would otherwise kill PID 1 and panic the kernel with
			// the data partition still mounted read-write.
			fmt.Fprintf(p.out, "%spanic: %v\n", prefix, r)
			p.shutdown(unix.LINUX_REBOOT_CMD_RESTART, "reboot")
		}
	}()
	p.run()
}

type pid1 struct {
	out    *console.LockedWriter
	log    *slog.Logger
	params cmdline.Params
	wd     *watchdog.Device
	stopWD context.CancelFunc
	sup    *service.Supervisor
}

func (p *pid1) run() {
	p.log = slog.New(console.NewHandler(p.out, prefix, slog.LevelInfo))
	mountErrs := p.mountAPI()
	console.Ensure(console.DefaultPath)

	params, perr := cmdline.ReadFile("/proc/cmdline")
	p.params = params
	if params.Debug {
		p.log = slog.New(console.NewHandler(p.out, prefix, slog.LevelDebug))
	}
	for _, err := range mountErrs {
		p.log.Error("mount", "err", err)
	}
	if perr != nil {
		p.log.Warn("kernel command line", "err", perr)
	}

	// First the watchdog: the initramfs's last ping is already ticking.
	p.startWatchdog()

	// Ask the kernel to send SIGINT on ctrl-alt-del instead of rebooting
	// on the spot with the data partition mounted.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		p.log.Warn("ctrl-alt-del", "err", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2)
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)

	r := reaper.New()
	go r.Run(context.Background())

	rel, err := release.Read(release.DefaultPath)
	if err != nil {
		p.log.Warn("release", "err", err)
		rel = &release.Release{}
	}
	p.setHostname(rel.Board)
	p.loadModules(modulesFile)

	specs, err := service.LoadSpecs(service.DefaultSpecPath)
	if err != nil {
		p.log.Error("services not started", "err", err)
	}
	p.sup = &service.Supervisor{
		Reaper: r, Console: p.out, LogDir: logDir, Env: serviceEnv(), Log: p.log,
		LogSize: 1 << 20, LogFiles: 3,
	}
	p.sup.Start(specs)
	p.log.Debug("services started", "count", len(specs))

	fmt.Fprintln(p.out, release.ReadyLine(rel.Version, params.Slot, rel.Board, params.Trial))

	switch sig := <-sigs; sig {
	case unix.SIGUSR2:
		p.shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF, "power off")
	case unix.SIGUSR1:
		p.shutdown(unix.LINUX_REBOOT_CMD_HALT, "halt")
	default: // SIGTERM, SIGINT
		p.shutdown(unix.LINUX_REBOOT_CMD_RESTART, "reboot")
	}
}

// mountAPI mounts what is missing, one by one so that one failure does not
// cost the rest. The errors are returned for logging once the log level is
// known.
func (p *pid1) mountAPI() []error {
	var errs []error
	for _, m := range apiFilesystems {
		if _, err := mounts.Ensure([]mounts.Mount{m}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(watchdogStop), 0o755); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// startWatchdog takes over the watchdog the initramfs armed and feeds it
// every third of its timeout while healthy.
func (p *pid1) startWatchdog() {
	if !p.params.Watchdog {
		os.Unsetenv(watchdog.EnvDevice)
		os.Unsetenv(watchdog.EnvFD)
		p.log.Debug("watchdog: left unarmed (bulkhead.watchdog=0)")
		return
	}
	dev, err := watchdog.FromEnv()
	if err != nil {
		p.log.Error("watchdog: cannot take it over; the board will reset", "err", err)
		return
	}
	if dev == nil {
		p.log.Debug("watchdog: none armed by the initramfs")
		return
	}
	timeout, err := dev.Timeout()
	if err != nil || timeout < 3 {
		p.log.Warn("watchdog: unknown timeout, feeding every second", "err", err)
		timeout = 3
	}
	p.wd = dev
	ctx, cancel := context.WithCancel(context.Background())
	p.stopWD = cancel
	f := &watchdog.Feeder{Dev: dev, Interval: time.Duration(timeout) * time.Second / 3, Healthy: healthy, Log: p.log}
	go f.Run(ctx)
	p.log.Debug("watchdog: feeding", "device", dev.Path(), "timeout", time.Duration(timeout)*time.Second)
}

// healthy is the watchdog health rule (see the package comment).
func healthy() error {
	if _, err := os.Stat(watchdogStop); err == nil {
		return fmt.Errorf("%s exists", watchdogStop)
	}
	return nil
}

// setHostname sets the name from /etc/hostname, or bulkhead-<board>.
func (p *pid1) setHostname(board string) {
	name := ""
	if b, err := os.ReadFile("/etc/hostname"); err == nil {
		name = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	if !validHostname(name) {
		name = "bulkhead"
		if validHostname("bulkhead-" + board) {
			name += "-" + board
		}
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		p.log.Warn("hostname", "err", err)
	}
}

func validHostname(n string) bool {
	if n == "" || len(n) > 64 || n[0] == '-' {
		return false
	}
	for _, c := range n {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// serviceEnv is the environment services start with: PID 1's, which the
// kernel and initramfs set up, with a PATH.
func serviceEnv() []string {
	env := os.Environ()
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return env
		}
	}
	return append(env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
}

// shutdown stops everything, makes /data safe and asks the kernel to
// reboot, power off or halt. It never returns.
func (p *pid1) shutdown(cmd uint32, what string) {
	p.log.Info("shutting down", "action", what)
	if p.sup != nil {
		p.sup.Stop(stopGrace)
	}
	// Processes that were not services (daemons a service left behind,
	// containers) also hold files open on /data.
	killAll(unix.SIGTERM, 3*time.Second)
	killAll(unix.SIGKILL, 2*time.Second)
	unix.Sync()
	if err := remountReadOnly(dataDir); err != nil {
		p.log.Error("data partition", "err", err)
	}
	unix.Sync()
	if p.wd != nil && cmd != unix.LINUX_REBOOT_CMD_RESTART {
		// A watchdog left running would reset a halted or powered-off
		// board back to life. For a reboot it stays armed, in case the
		// reboot itself hangs.
		p.stopWD()
		if err := p.wd.Disarm(); err != nil {
			p.log.Warn("watchdog", "err", err)
		}
	}
	p.log.Info(what)
	// The commands are 32-bit patterns (HALT is 0xcdef0123) that overflow a
	// 32-bit int; the kernel reads only the low 32 bits of the argument.
	err := unix.Reboot(int(int32(cmd)))
	p.log.Error(what+" failed; waiting for the watchdog or a power cycle", "err", err)
	select {}
}

// killAll signals every process but PID 1 and waits up to wait for the
// user-space ones to be gone (kernel threads ignore signals).
func killAll(sig unix.Signal, wait time.Duration) {
	if userProcesses() == 0 {
		return
	}
	unix.Kill(-1, sig)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && userProcesses() > 0 {
		time.Sleep(50 * time.Millisecond)
	}
}

// userProcesses counts processes other than PID 1 that have a command line;
// kernel threads and zombies have none.
func userProcesses() int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && len(b) > 0 {
			n++
		}
	}
	return n
}

// remountReadOnly makes the filesystem at dir read-only so the next boot
// finds it clean, retrying while a dying process still holds a file open
// for writing, and detaching it lazily as a last resort.
func remountReadOnly(dir string) error {
	var err error
	for i := 0; i < 10; i++ {
		err = unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not a mount point: nothing to protect
		}
		time.Sleep(200 * time.Millisecond)
	}
	if uerr := unix.Unmount(dir, unix.MNT_DETACH); uerr != nil {
		return fmt.Errorf("remount %s read-only: %w; lazy unmount: %w", dir, err, uerr)
	}
	return fmt.Errorf("remount %s read-only: %w; detached it lazily instead", dir, err)
}

// modulesFile lists the root filesystem's modules (networking, containers),
// dependencies first, as the builder computed them: there is no udev to load
// them on demand.
const modulesFile = "/etc/bulkhead/modules.json"

type moduleList struct {
	Kernel  string   `json:"kernel"`
	Modules []string `json:"modules"`
}

// loadModules loads every listed module. A failure is logged, never fatal:
// a missing network or container driver must not stop the device from
// reaching its supervisor.
func (p *pid1) loadModules(path string) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var l moduleList
	if err == nil {
		err = json.Unmarshal(data, &l)
	}
	if err != nil {
		p.log.Warn("modules", "err", err)
		return
	}
	for _, m := range l.Modules {
		if err := kmod.Load(filepath.Join("/lib/modules", l.Kernel, m), ""); err != nil {
			p.log.Warn("module", "module", m, "err", err)
		}
	}
}
