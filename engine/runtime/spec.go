package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Mount is a bind, volume or tmpfs mount of a container.
type Mount struct {
	Type        string // "bind" or "tmpfs"
	Source      string // host path (bind)
	Destination string
	ReadOnly    bool
	Options     []string // extra mount options (tmpfs size=...)
}

// Device is a host device node given to a container.
type Device struct {
	PathOnHost        string
	PathInContainer   string
	CgroupPermissions string // "rwm" when empty
}

// Options are everything the spec is built from.
type Options struct {
	ID          string
	Rootfs      string // absolute path of the mounted root filesystem
	Args        []string
	Env         []string
	Cwd         string
	UID, GID    uint32
	ExtraGIDs   []uint32
	Hostname    string
	Terminal    bool
	ReadOnly    bool
	Privileged  bool
	CapAdd      []string
	CapDrop     []string
	Mounts      []Mount
	Devices     []Device
	Annotations map[string]string

	// NetworkMode "host" shares the device's network namespace; a
	// non-empty NetnsPath joins that namespace (bridge); otherwise a new,
	// empty namespace is made (none).
	NetworkMode string
	NetnsPath   string

	CgroupsPath string // relative: runc places it under its own cgroup's parent
	CgroupV2    bool   // a private cgroup namespace only makes sense there
	Memory      int64  // bytes, 0 = unlimited
	MemorySwap  int64  // bytes (memory + swap), 0 = default, -1 = unlimited
	NanoCPUs    int64  // 1e9 = one CPU
	CPUShares   int64
	PidsLimit   int64
}

// DefaultCaps are docker's default capabilities: enough for ordinary
// daemons (bind low ports, change users, chown files) and nothing that
// reaches the host.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// allCaps is every capability Linux 6.1 knows, in capability-number order,
// for privileged containers.
var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// Paths hidden from unprivileged containers (docker's lists): they leak
// host information or let a process reconfigure the host kernel.
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// NormalizeCap turns "net_admin" or "NET_ADMIN" into "CAP_NET_ADMIN".
func NormalizeCap(c string) string {
	c = strings.ToUpper(c)
	if c == "ALL" {
		return c
	}
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	return c
}

func capabilities(o *Options) ([]string, error) {
	set := map[string]bool{}
	base := DefaultCaps
	if o.Privileged {
		base = allCaps
	}
	known := map[string]bool{}
	for _, c := range allCaps {
		known[c] = true
	}
	for _, c := range base {
		set[c] = true
	}
	for _, c := range o.CapAdd {
		c = NormalizeCap(c)
		if c == "ALL" {
			for _, a := range allCaps {
				set[a] = true
			}
			continue
		}
		if !known[c] {
			return nil, fmt.Errorf("unknown capability %q in --cap-add (see capabilities(7))", c)
		}
		set[c] = true
	}
	for _, c := range o.CapDrop {
		c = NormalizeCap(c)
		if c == "ALL" {
			set = map[string]bool{}
			continue
		}
		if !known[c] {
			return nil, fmt.Errorf("unknown capability %q in --cap-drop (see capabilities(7))", c)
		}
		delete(set, c)
	}
	// --cap-drop ALL --cap-add X keeps X: adds win, as with docker.
	for _, c := range o.CapAdd {
		if c = NormalizeCap(c); c != "ALL" {
			set[c] = true
		}
	}
	// A container cannot hold a capability the engine's bounding set
	// lacks (runc fails with EPERM): privileged means "all the engine has",
	// as with docker.
	bnd := boundingSet()
	var out []string
	for i, c := range allCaps {
		if set[c] && bnd&(1<<uint(i)) != 0 {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out, nil
}

// boundingSet reads CapBnd of the engine process; allCaps is ordered by
// capability number, so bit i is allCaps[i].
func boundingSet() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ^uint64(0)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil {
				return n
			}
		}
	}
	return ^uint64(0)
}

// nofile is docker's open-file limit (1048576), capped at what the engine
// itself may raise to: a container cannot be given more than its parent
// holds, and runc fails the start otherwise.
func nofile() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Max < 1048576 {
		return rl.Max
	}
	return 1048576
}

func u32(v uint32) *uint32 { return &v }
func i64(v int64) *int64   { return &v }

// Spec builds the OCI runtime spec of a container.
func Spec(o Options) (*specs.Spec, error) {
	caps, err := capabilities(&o)
	if err != nil {
		return nil, err
	}
	cwd := o.Cwd
	if cwd == "" {
		cwd = "/"
	}
	s := &specs.Spec{
		Version:  "1.0.2",
		Hostname: o.Hostname,
		Root:     &specs.Root{Path: o.Rootfs, Readonly: o.ReadOnly},
		Process: &specs.Process{
			Terminal: o.Terminal,
			Args:     o.Args,
			Env:      o.Env,
			Cwd:      cwd,
			User:     specs.User{UID: o.UID, GID: o.GID, AdditionalGids: o.ExtraGIDs},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile(), Soft: nofile()}},
			// docker leaves no_new_privs off by default: setuid helpers
			// (ping, su) in images depend on it.
			NoNewPrivileges: false,
		},
		Annotations: o.Annotations,
	}
	sysOpts := []string{"nosuid", "noexec", "nodev", "ro"}
	if o.Privileged {
		sysOpts = []string{"nosuid", "noexec", "nodev", "rw"}
	}
	s.Mounts = []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: append([]string{"relatime"}, sysOpts...)},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
	}
	for _, m := range o.Mounts {
		switch m.Type {
		case "tmpfs":
			opts := append([]string{"nosuid", "nodev"}, m.Options...)
			if m.ReadOnly {
				opts = append(opts, "ro")
			}
			s.Mounts = append(s.Mounts, specs.Mount{Destination: m.Destination, Type: "tmpfs", Source: "tmpfs", Options: opts})
		default:
			opts := []string{"rbind", "rprivate"}
			if m.ReadOnly {
				opts = append(opts, "ro")
			}
			s.Mounts = append(s.Mounts, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: append(opts, m.Options...)})
		}
	}

	ns := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace}}
	switch {
	case o.NetworkMode == "host":
		if o.Hostname == "" {
			s.Hostname = ""
		}
	case o.NetnsPath != "":
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: o.NetnsPath})
	default:
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	if o.CgroupV2 {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	if o.NetworkMode == "host" {
		// Sharing the host's network but not its UTS namespace would
		// show the container ID as hostname while the addresses are the
		// device's; docker shares both.
		var keep []specs.LinuxNamespace
		for _, n := range ns {
			if n.Type != specs.UTSNamespace {
				keep = append(keep, n)
			}
		}
		ns = keep
		s.Hostname = ""
	}

	res := &specs.LinuxResources{}
	if o.Privileged {
		res.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		res.Devices = []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	}
	var devs []specs.LinuxDevice
	for _, d := range o.Devices {
		ld, rule, err := device(d)
		if err != nil {
			return nil, err
		}
		devs = append(devs, ld)
		res.Devices = append(res.Devices, rule)
	}
	if o.Memory > 0 || o.MemorySwap != 0 {
		res.Memory = &specs.LinuxMemory{}
		if o.Memory > 0 {
			res.Memory.Limit = i64(o.Memory)
		}
		if o.MemorySwap != 0 {
			res.Memory.Swap = i64(o.MemorySwap)
		}
	}
	if o.NanoCPUs > 0 || o.CPUShares > 0 {
		res.CPU = &specs.LinuxCPU{}
		if o.NanoCPUs > 0 {
			// The CFS quota over a 100 ms period: --cpus 1.5 is 150 ms.
			period := uint64(100000)
			res.CPU.Period = &period
			res.CPU.Quota = i64(o.NanoCPUs * int64(period) / 1e9)
		}
		if o.CPUShares > 0 {
			sh := uint64(o.CPUShares)
			res.CPU.Shares = &sh
		}
	}
	if o.PidsLimit > 0 {
		res.Pids = &specs.LinuxPids{Limit: i64(o.PidsLimit)}
	}
	s.Linux = &specs.Linux{
		CgroupsPath: o.CgroupsPath,
		Namespaces:  ns,
		Devices:     devs,
		Resources:   res,
	}
	if !o.Privileged {
		s.Linux.MaskedPaths = maskedPaths
		s.Linux.ReadonlyPaths = readonlyPaths
	}
	return s, nil
}

func device(d Device) (specs.LinuxDevice, specs.LinuxDeviceCgroup, error) {
	var st unix.Stat_t
	if err := unix.Stat(d.PathOnHost, &st); err != nil {
		return specs.LinuxDevice{}, specs.LinuxDeviceCgroup{}, fmt.Errorf("device %s: %w (is it plugged in?)", d.PathOnHost, err)
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, specs.LinuxDeviceCgroup{}, fmt.Errorf("device %s is not a character or block device", d.PathOnHost)
	}
	in := d.PathInContainer
	if in == "" {
		in = d.PathOnHost
	}
	perms := d.CgroupPermissions
	if perms == "" {
		perms = "rwm"
	}
	major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	mode := os.FileMode(st.Mode & 0o777)
	ld := specs.LinuxDevice{Path: filepath.Clean(in), Type: typ, Major: major, Minor: minor, FileMode: &mode, UID: u32(st.Uid), GID: u32(st.Gid)}
	return ld, specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: perms}, nil
}
