// Package network gives containers their network: the host's stack, an
// isolated namespace with loopback only, or the default bridge (a Linux
// bridge, a veth pair per container, an address from the bridge subnet, a
// default route, NAT for outbound traffic and published ports through
// nftables).
//
// It owns the bridge device, the engine's nftables table, the per-container
// namespaces under its run directory and address allocation. It must not
// start processes or know about images; the daemon tells it which
// containers exist. When the kernel lacks bridge or nftables support, host
// and none modes keep working and bridge mode fails with an error naming
// what is missing.
package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Modes a container can use.
const (
	ModeBridge = "bridge"
	ModeHost   = "host"
	ModeNone   = "none"
)

// ErrUnavailable is wrapped when bridge networking cannot work on this
// kernel or host.
var ErrUnavailable = errors.New("bridge networking unavailable")

// Config describes the default bridge.
type Config struct {
	Bridge string // device name, e.g. "bulkhead0"
	CIDR   string // gateway address and prefix, e.g. "172.17.0.1/16"
	RunDir string // where network namespaces are bound (tmpfs: /run/bulkhead/netns)
}

// PortMapping publishes a container port on the host.
type PortMapping struct {
	Proto         string `json:"proto"` // "tcp" or "udp"
	HostIP        net.IP `json:"host_ip,omitempty"`
	HostPort      uint16 `json:"host_port"`
	ContainerIP   net.IP `json:"container_ip"`
	ContainerPort uint16 `json:"container_port"`
}

// Endpoint is a container's attachment to the bridge.
type Endpoint struct {
	Netns     string           `json:"netns"`
	IP        net.IP           `json:"ip"`
	PrefixLen int              `json:"prefix_len"`
	Gateway   net.IP           `json:"gateway"`
	MAC       net.HardwareAddr `json:"mac"`
	HostVeth  string           `json:"host_veth"`
}

// Manager owns the bridge network.
type Manager struct {
	cfg    Config
	gw     net.IP
	subnet *net.IPNet
	rules  nftRules

	mu      sync.Mutex
	initErr error                    // why bridge mode is unavailable, nil if it works
	used    map[string]string        // IP -> container ID
	ports   map[string][]PortMapping // container ID -> published ports
}

// New validates cfg. Nothing is created until Init.
func New(cfg Config) (*Manager, error) {
	gw, subnet, err := net.ParseCIDR(cfg.CIDR)
	if err != nil || gw.To4() == nil {
		return nil, fmt.Errorf("bridge CIDR %q: want an IPv4 gateway address with a prefix, e.g. 172.17.0.1/16", cfg.CIDR)
	}
	if ones, _ := subnet.Mask.Size(); ones > 30 {
		return nil, fmt.Errorf("bridge CIDR %q: prefix /%d leaves no room for containers: use /30 or shorter", cfg.CIDR, ones)
	}
	if gw.Equal(subnet.IP) {
		return nil, fmt.Errorf("bridge CIDR %q: give the gateway address (e.g. %s), not the network address", cfg.CIDR, nextIP(subnet.IP))
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "bulkhead0"
	}
	return &Manager{cfg: cfg, gw: gw.To4(), subnet: subnet, rules: nftRules{bridge: cfg.Bridge, subnet: subnet},
		used: map[string]string{}, ports: map[string][]PortMapping{}}, nil
}

// Subnet is the bridge's subnet.
func (m *Manager) Subnet() *net.IPNet { return m.subnet }

// Gateway is the bridge's address.
func (m *Manager) Gateway() net.IP { return m.gw }

// BridgeName is the bridge device's name.
func (m *Manager) BridgeName() string { return m.cfg.Bridge }

// Init creates (or adopts) the bridge, enables forwarding and installs the
// nftables table. A failure is remembered and returned by Available, so the
// engine still runs host and none containers.
func (m *Manager) Init() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initErr = m.init()
	return m.initErr
}

func (m *Manager) init() error {
	if err := m.ensureBridge(); err != nil {
		return fmt.Errorf("%w: %v (the kernel needs the bridge and veth drivers: modprobe bridge veth)", ErrUnavailable, err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("%w: enable IPv4 forwarding: %v", ErrUnavailable, err)
	}
	// Lets connections to 127.0.0.1:<published port> be routed to the
	// bridge after DNAT (the kernel drops loopback sources elsewhere).
	os.WriteFile(filepath.Join("/proc/sys/net/ipv4/conf", m.cfg.Bridge, "route_localnet"), []byte("1"), 0o644)
	if err := m.rules.install(m.allPorts()); err != nil {
		return fmt.Errorf("%w: %v (the kernel needs nf_tables with nft_nat, nft_masq, nft_fib_ipv4, nft_ct, nf_nat; use --network host meanwhile)", ErrUnavailable, err)
	}
	return nil
}

func (m *Manager) ensureBridge() error {
	l, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: m.cfg.Bridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", m.cfg.Bridge, err)
		}
		if l, err = netlink.LinkByName(m.cfg.Bridge); err != nil {
			return err
		}
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return fmt.Errorf("%s exists and is a %s, not a bridge: choose another name", m.cfg.Bridge, l.Type())
	}
	ones, _ := m.subnet.Mask.Size()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: m.gw, Mask: net.CIDRMask(ones, 32)}}
	addrs, err := netlink.AddrList(l, unix.AF_INET)
	if err != nil {
		return err
	}
	have := false
	for _, a := range addrs {
		if a.IPNet.String() == addr.IPNet.String() {
			have = true
		}
	}
	if !have {
		if err := netlink.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr.IPNet, m.cfg.Bridge, err)
		}
	}
	return netlink.LinkSetUp(l)
}

// Available returns nil when bridge mode works, else why not.
func (m *Manager) Available() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.initErr
}

// NetnsPath is where the namespace of container id is bound.
func (m *Manager) NetnsPath(id string) string { return filepath.Join(m.cfg.RunDir, id) }

func vethName(id string) string { return "veth" + id[:min(len(id), 10)] }

// Attach creates the container's namespace and plugs it into the bridge.
// ip may name the address to use again (a restarted container keeps its
// address while nobody else took it); nil allocates one.
func (m *Manager) Attach(id string, want net.IP) (*Endpoint, error) {
	if err := m.Available(); err != nil {
		return nil, err
	}
	ip, err := m.allocate(id, want)
	if err != nil {
		return nil, err
	}
	ep, err := m.attach(id, ip)
	if err != nil {
		m.Detach(id)
		return nil, fmt.Errorf("connect container %s to %s: %w", id[:12], m.cfg.Bridge, err)
	}
	return ep, nil
}

func (m *Manager) attach(id string, ip net.IP) (*Endpoint, error) {
	path := m.NetnsPath(id)
	removeNetns(path) // a stale one from a crash
	if err := newNetns(path); err != nil {
		return nil, err
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		return nil, err
	}
	host := vethName(id)
	if old, err := netlink.LinkByName(host); err == nil {
		netlink.LinkDel(old)
	}
	peerTmp := "c" + id[:min(len(id), 12)]
	mac := net.HardwareAddr{0x02, 0x42, ip[0], ip[1], ip[2], ip[3]}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index},
		PeerName:         peerTmp,
		PeerNamespace:    netlink.NsFd(int(ns)),
		PeerHardwareAddr: mac,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth pair: %w", err)
	}
	hl, err := netlink.LinkByName(host)
	if err != nil {
		return nil, err
	}
	// Hairpin lets a container reach its own published port through the
	// device's address.
	netlink.LinkSetHairpin(hl, true)
	if err := netlink.LinkSetUp(hl); err != nil {
		return nil, err
	}
	// Route sockets only: by default the handle also opens NETLINK_XFRM,
	// which needs the xfrm_user module that a device's kernel may not have
	// loaded (EPROTONOSUPPORT, seen on Debian's arm64 kernel under QEMU).
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in container namespace: %w", err)
	}
	defer h.Close()
	cl, err := h.LinkByName(peerTmp)
	if err != nil {
		return nil, err
	}
	if err := h.LinkSetName(cl, "eth0"); err != nil {
		return nil, err
	}
	ones, _ := m.subnet.Mask.Size()
	if err := h.AddrAdd(cl, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(ones, 32)}}); err != nil {
		return nil, fmt.Errorf("address %s: %w", ip, err)
	}
	if err := h.LinkSetUp(cl); err != nil {
		return nil, err
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: cl.Attrs().Index, Gw: m.gw, Dst: nil}); err != nil {
		return nil, fmt.Errorf("default route via %s: %w", m.gw, err)
	}
	return &Endpoint{Netns: path, IP: ip, PrefixLen: ones, Gateway: m.gw, MAC: mac, HostVeth: host}, nil
}

// Detach removes the container's namespace, veth, address and ports.
func (m *Manager) Detach(id string) {
	if l, err := netlink.LinkByName(vethName(id)); err == nil {
		netlink.LinkDel(l)
	}
	if err := removeNetns(m.NetnsPath(id)); err != nil {
		slog.Warn("network: remove namespace", "container", id, "err", err)
	}
	m.mu.Lock()
	for ip, owner := range m.used {
		if owner == id {
			delete(m.used, ip)
		}
	}
	_, hadPorts := m.ports[id]
	delete(m.ports, id)
	m.mu.Unlock()
	if hadPorts {
		if err := m.reinstall(); err != nil {
			slog.Warn("network: update published ports", "err", err)
		}
	}
}

// Adopt records the address of a container that is still running from a
// previous engine process, so it is not handed out again.
func (m *Manager) Adopt(id string, ip net.IP) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ip4 := ip.To4(); ip4 != nil {
		m.used[ip4.String()] = id
	}
}

func (m *Manager) allocate(id string, want net.IP) (net.IP, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w := want.To4(); w != nil && m.subnet.Contains(w) && !w.Equal(m.gw) {
		if owner, ok := m.used[w.String()]; !ok || owner == id {
			m.used[w.String()] = id
			return w, nil
		}
	}
	ones, bits := m.subnet.Mask.Size()
	size := uint32(1) << uint(bits-ones)
	base := binary.BigEndian.Uint32(m.subnet.IP.To4())
	for i := uint32(1); i < size-1; i++ {
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, base+i)
		if ip.Equal(m.gw) {
			continue
		}
		if _, ok := m.used[ip.String()]; !ok {
			m.used[ip.String()] = id
			return ip, nil
		}
	}
	return nil, fmt.Errorf("bridge subnet %s is full (%d containers): use a larger --bridge-cidr", m.subnet, len(m.used))
}

func (m *Manager) allPorts() []PortMapping {
	var ids []string
	for id := range m.ports {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var all []PortMapping
	for _, id := range ids {
		all = append(all, m.ports[id]...)
	}
	return all
}

func (m *Manager) reinstall() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initErr != nil {
		return m.initErr
	}
	return m.rules.install(m.allPorts())
}

// Publish sets the published ports of a container. A host port of 0 is
// replaced by a free one; the completed mappings are returned.
func (m *Manager) Publish(id string, ports []PortMapping) ([]PortMapping, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	m.mu.Lock()
	if m.initErr != nil {
		m.mu.Unlock()
		return nil, m.initErr
	}
	taken := map[string]string{}
	for owner, ps := range m.ports {
		for _, p := range ps {
			taken[p.Proto+"/"+strconv.Itoa(int(p.HostPort))] = owner
		}
	}
	out := make([]PortMapping, len(ports))
	for i, p := range ports {
		if p.HostPort == 0 {
			p.HostPort = freePort(p.Proto, taken)
		}
		key := p.Proto + "/" + strconv.Itoa(int(p.HostPort))
		if owner, ok := taken[key]; ok && owner != id {
			m.mu.Unlock()
			return nil, fmt.Errorf("host port %s is already published by container %s: choose another host port", key, owner[:12])
		}
		taken[key] = id
		out[i] = p
	}
	m.ports[id] = out
	err := m.rules.install(m.allPorts())
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("publish ports: %w", err)
	}
	return out, nil
}

// freePort picks an ephemeral port that neither the engine nor a host
// program uses (docker's range, 49153 up).
func freePort(proto string, taken map[string]string) uint16 {
	for p := 49153; p < 65535; p++ {
		if _, ok := taken[proto+"/"+strconv.Itoa(p)]; ok {
			continue
		}
		if proto == "udp" {
			c, err := net.ListenPacket("udp4", ":"+strconv.Itoa(p))
			if err != nil {
				continue
			}
			c.Close()
		} else {
			l, err := net.Listen("tcp4", ":"+strconv.Itoa(p))
			if err != nil {
				continue
			}
			l.Close()
		}
		return uint16(p)
	}
	return 0
}

// Teardown removes the bridge and the nftables table (tests; on a device
// the engine leaves them for the next start).
func (m *Manager) Teardown() {
	m.rules.remove()
	if l, err := netlink.LinkByName(m.cfg.Bridge); err == nil {
		netlink.LinkDel(l)
	}
}

func nextIP(ip net.IP) net.IP {
	v := binary.BigEndian.Uint32(ip.To4()) + 1
	out := make(net.IP, 4)
	binary.BigEndian.PutUint32(out, v)
	return out
}
