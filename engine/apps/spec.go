package apps

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/daemon"
	"github.com/bulkhead-os/bulkhead/engine/store"
)

// Labels the engine puts on app containers.
const (
	// LabelApp names the service a container runs; containers without it
	// are never touched by reconciliation.
	LabelApp = "org.bulkhead.app"
	// LabelHash is a digest of the service's settings: a container whose
	// hash differs from the file's is re-created.
	LabelHash = "org.bulkhead.app.config-hash"
)

// Spec is what the engine creates for a service.
type Spec struct {
	Config     daemon.Config
	HostConfig daemon.HostConfig
	// Hash identifies the settings (image reference included); it is also
	// in Config.Labels[LabelHash].
	Hash string
}

// Spec translates the service into the Docker API's container settings and
// validates what the engine would otherwise only refuse at create time.
func (s *Service) Spec() (*Spec, error) {
	if s.Image == "" {
		return nil, errors.New("image: required (e.g. registry.example.com/app:1.0)")
	}
	if _, err := store.ParseRef(s.Image); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cfg := daemon.Config{
		Image: s.Image, Cmd: daemon.StrSlice(s.Command), Entrypoint: daemon.StrSlice(s.Entrypoint),
		Env: append([]string(nil), s.Environment...), User: s.User, WorkingDir: s.WorkingDir, Hostname: s.Hostname,
		Labels: map[string]string{}, ExposedPorts: map[string]struct{}{}, Volumes: map[string]struct{}{},
	}
	hc := daemon.HostConfig{
		Privileged: s.Privileged, ReadonlyRootfs: s.ReadOnly,
		CapAdd: s.CapAdd, CapDrop: s.CapDrop, NetworkMode: s.NetworkMode,
		PortBindings: map[string][]daemon.PortBinding{}, Tmpfs: map[string]string{},
	}
	for _, kv := range s.Labels {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, LabelApp) {
			return nil, fmt.Errorf("labels: %s is set by the engine", k)
		}
		cfg.Labels[k] = v
	}
	if cfg.WorkingDir != "" && !path.IsAbs(cfg.WorkingDir) {
		return nil, fmt.Errorf("working_dir %q: want an absolute path", cfg.WorkingDir)
	}

	switch s.NetworkMode {
	case "", "bridge":
		hc.NetworkMode = "bridge"
	case "host", "none":
		if len(s.Ports) > 0 {
			return nil, fmt.Errorf("ports need network_mode: bridge (with %s the container has no ports of its own to publish)", s.NetworkMode)
		}
	default:
		return nil, fmt.Errorf("network_mode %q: use bridge (default), host or none", s.NetworkMode)
	}

	var err error
	if hc.RestartPolicy, err = parseRestart(s.Restart); err != nil {
		return nil, err
	}
	for _, p := range s.Ports {
		if err := addPorts(p, cfg.ExposedPorts, hc.PortBindings); err != nil {
			return nil, err
		}
	}
	for _, p := range s.Expose {
		port, proto, _ := strings.Cut(p, "/")
		if proto == "" {
			proto = "tcp"
		}
		if _, err := parsePortNum(port); err != nil || (proto != "tcp" && proto != "udp") {
			return nil, fmt.Errorf("expose %q: want a port such as 80 or 53/udp", p)
		}
		cfg.ExposedPorts[port+"/"+proto] = struct{}{}
	}
	for _, v := range s.Volumes {
		if err := addVolume(v, &cfg, &hc); err != nil {
			return nil, err
		}
	}
	for _, t := range s.Tmpfs {
		dst, opts, _ := strings.Cut(t, ":")
		if !path.IsAbs(dst) {
			return nil, fmt.Errorf("tmpfs %q: want an absolute path, optionally followed by :size=64m,mode=1777", t)
		}
		hc.Tmpfs[dst] = opts
	}
	for _, d := range s.Devices {
		parts := strings.Split(d, ":")
		if len(parts) > 3 || !path.IsAbs(parts[0]) {
			return nil, fmt.Errorf("devices %q: want /dev/host[:/dev/container[:rwm]]", d)
		}
		m := daemon.DeviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
		if len(parts) > 1 {
			if !path.IsAbs(parts[1]) {
				return nil, fmt.Errorf("devices %q: the container path must be absolute", d)
			}
			m.PathInContainer = parts[1]
		}
		if len(parts) > 2 {
			if strings.Trim(parts[2], "rwm") != "" || parts[2] == "" {
				return nil, fmt.Errorf("devices %q: permissions are a combination of r, w and m", d)
			}
			m.CgroupPermissions = parts[2]
		}
		hc.Devices = append(hc.Devices, m)
	}
	if s.MemLimit != "" {
		if hc.Memory, err = parseBytes(s.MemLimit); err != nil {
			return nil, fmt.Errorf("mem_limit: %w", err)
		}
		if hc.Memory < 6<<20 {
			return nil, fmt.Errorf("mem_limit %q: at least 6m", s.MemLimit)
		}
	}
	if s.MemswapLimit != "" {
		if s.MemswapLimit == "-1" {
			hc.MemorySwap = -1
		} else if hc.MemorySwap, err = parseBytes(s.MemswapLimit); err != nil {
			return nil, fmt.Errorf("memswap_limit: %w", err)
		}
		if s.MemLimit == "" {
			return nil, errors.New("memswap_limit needs mem_limit")
		}
	}
	if s.CPUs != "" {
		f, err := strconv.ParseFloat(s.CPUs, 64)
		if err != nil || f <= 0 || f > 1024 || math.IsNaN(f) {
			return nil, fmt.Errorf("cpus %q: want a positive number such as 0.5 or 2", s.CPUs)
		}
		hc.NanoCpus = int64(math.Round(f * 1e9))
	}
	if s.CPUShares != "" {
		if hc.CPUShares, err = strconv.ParseInt(s.CPUShares, 10, 64); err != nil || hc.CPUShares < 2 || hc.CPUShares > 262144 {
			return nil, fmt.Errorf("cpu_shares %q: want a number from 2 to 262144", s.CPUShares)
		}
	}
	if s.PidsLimit != "" {
		n, err := strconv.ParseInt(s.PidsLimit, 10, 64)
		if err != nil || n == 0 || n < -1 {
			return nil, fmt.Errorf("pids_limit %q: want a positive number (or -1 for none)", s.PidsLimit)
		}
		hc.PidsLimit = &n
	}
	for _, d := range s.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return nil, fmt.Errorf("dns %q: want an IP address", d)
		}
		hc.DNS = append(hc.DNS, d)
	}
	for _, h := range s.ExtraHosts {
		name, ip, ok := strings.Cut(h, "=")
		if !ok {
			name, ip, ok = strings.Cut(h, ":")
		}
		if _, err := netip.ParseAddr(ip); !ok || name == "" || err != nil {
			return nil, fmt.Errorf("extra_hosts %q: want name:address or name=address", h)
		}
		hc.ExtraHosts = append(hc.ExtraHosts, name+":"+ip)
	}
	if s.StopSignal != "" {
		if _, err := daemon.ParseSignal(s.StopSignal); err != nil {
			return nil, fmt.Errorf("stop_signal %q: want a signal such as SIGTERM or SIGINT", s.StopSignal)
		}
		cfg.StopSignal = s.StopSignal
	}
	if s.StopGracePeriod != "" {
		d, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil || d < 0 || d > 24*time.Hour {
			return nil, fmt.Errorf("stop_grace_period %q: want a duration such as 10s or 1m30s", s.StopGracePeriod)
		}
		secs := int(d.Round(time.Second) / time.Second)
		cfg.StopTimeout = &secs
	}

	h := sha256.New()
	enc := json.NewEncoder(h)
	// encoding/json sorts map keys: equal settings give equal hashes.
	if err := enc.Encode(struct {
		Config     daemon.Config
		HostConfig daemon.HostConfig
	}{cfg, hc}); err != nil {
		return nil, err
	}
	hash := hex.EncodeToString(h.Sum(nil))[:32]
	cfg.Labels[LabelApp] = s.Name
	cfg.Labels[LabelHash] = hash
	return &Spec{Config: cfg, HostConfig: hc, Hash: hash}, nil
}

func parseRestart(r string) (daemon.RestartPolicy, error) {
	switch r {
	case "":
		// balenaOS's default: an app runs until told otherwise.
		return daemon.RestartPolicy{Name: "always"}, nil
	case "no", "always", "unless-stopped", "on-failure":
		return daemon.RestartPolicy{Name: r}, nil
	}
	if n, ok := strings.CutPrefix(r, "on-failure:"); ok {
		if max, err := strconv.Atoi(n); err == nil && max > 0 {
			return daemon.RestartPolicy{Name: "on-failure", MaximumRetryCount: max}, nil
		}
	}
	return daemon.RestartPolicy{}, fmt.Errorf("restart %q: use always (default), unless-stopped, on-failure[:N] or no", r)
}

func parsePortNum(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	return n, nil
}

// parsePortRange parses "80" or "8000-8010".
func parsePortRange(s string) (first, last int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if first, err = parsePortNum(a); err != nil {
		return 0, 0, err
	}
	last = first
	if isRange {
		if last, err = parsePortNum(b); err != nil {
			return 0, 0, err
		}
		if last < first {
			return 0, 0, fmt.Errorf("range %q ends before it starts", s)
		}
	}
	return first, last, nil
}

// addPorts parses Compose's short port syntax:
// [[HOST_IP:]HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTOCOL].
func addPorts(spec string, exposed map[string]struct{}, bindings map[string][]daemon.PortBinding) error {
	bad := func(why string) error {
		return fmt.Errorf("ports %q: %s (want [[host_ip:]host_port:]container_port[/udp], e.g. \"8080:80\")", spec, why)
	}
	rest, proto, _ := strings.Cut(spec, "/")
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return bad("the protocol is tcp or udp")
	}
	if strings.Contains(rest, "[") {
		return bad("IPv6 addresses are not supported")
	}
	parts := strings.Split(rest, ":")
	var hostIP, hostPorts, ctrPorts string
	switch len(parts) {
	case 1:
		ctrPorts = parts[0]
	case 2:
		hostPorts, ctrPorts = parts[0], parts[1]
	case 3:
		hostIP, hostPorts, ctrPorts = parts[0], parts[1], parts[2]
		if a, err := netip.ParseAddr(hostIP); err != nil || !a.Is4() {
			return bad("the host address must be an IPv4 address")
		}
	default:
		return bad("too many ':'")
	}
	cFirst, cLast, err := parsePortRange(ctrPorts)
	if err != nil {
		return bad(err.Error())
	}
	hFirst, hLast := 0, 0
	if hostPorts != "" {
		if hFirst, hLast, err = parsePortRange(hostPorts); err != nil {
			return bad(err.Error())
		}
		if hLast-hFirst != cLast-cFirst {
			return bad("the host and container ranges differ in length")
		}
	}
	for i := 0; i <= cLast-cFirst; i++ {
		key := strconv.Itoa(cFirst+i) + "/" + proto
		b := daemon.PortBinding{HostIP: hostIP}
		if hFirst != 0 {
			b.HostPort = strconv.Itoa(hFirst + i)
		}
		exposed[key] = struct{}{}
		bindings[key] = append(bindings[key], b)
	}
	return nil
}

// addVolume parses Compose's short volume syntax: TARGET (an anonymous
// volume), NAME:TARGET[:ro] (a named volume) or /HOST/PATH:TARGET[:ro].
func addVolume(spec string, cfg *daemon.Config, hc *daemon.HostConfig) error {
	parts := strings.Split(spec, ":")
	bad := func(why string) error {
		return fmt.Errorf("volumes %q: %s (want name:/path, /host/path:/path or /path, optionally with :ro)", spec, why)
	}
	if len(parts) == 1 {
		if !path.IsAbs(parts[0]) {
			return bad("the container path must be absolute")
		}
		cfg.Volumes[path.Clean(parts[0])] = struct{}{}
		return nil
	}
	if len(parts) > 3 {
		return bad("too many ':'")
	}
	src, dst := parts[0], parts[1]
	if !path.IsAbs(dst) {
		return bad("the container path must be absolute")
	}
	mode := "rw"
	if len(parts) == 3 {
		mode = parts[2]
		if mode != "ro" && mode != "rw" {
			return bad("the mode is ro or rw")
		}
	}
	switch {
	case path.IsAbs(src):
	case strings.HasPrefix(src, ".") || strings.HasPrefix(src, "~"):
		return bad("relative host paths mean nothing on the device: give an absolute path or a volume name")
	case !volumeNameRE.MatchString(src):
		return bad("a volume name uses letters, digits, '_', '.', '-'")
	}
	hc.Binds = append(hc.Binds, src+":"+dst+":"+mode)
	return nil
}

var volumeNameRE = serviceNameRE

// parseBytes reads Compose's byte values: 1073741824, "512k", "256m",
// "1g", "1gb" (powers of 1024, case-insensitive).
func parseBytes(s string) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	v = strings.TrimSuffix(v, "b")
	mult := int64(1)
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'k':
			mult, v = 1<<10, v[:n-1]
		case 'm':
			mult, v = 1<<20, v[:n-1]
		case 'g':
			mult, v = 1<<30, v[:n-1]
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: want a size such as 256m or 1g", s)
	}
	return n * mult, nil
}
