// Package netconf brings up the network a device needs to be updated:
// the loopback interface, the hostname, and the first wired interface with
// DHCP (insomniacslk/dhcp's nclient4, addresses and routes through
// vishvananda/netlink) or the static configuration of device.yaml. It
// writes DNS servers to a resolv.conf under /run, because the root
// filesystem is read-only: the image links /etc/resolv.conf there.
//
// It does not do Wi-Fi, IPv6 autoconfiguration beyond what the kernel does
// by itself, or firewalling.
package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/atomicfile"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultResolvConf is where DNS servers are written; the image's
// /etc/resolv.conf is a symbolic link to it.
const DefaultResolvConf = "/run/bulkhead/resolv.conf"

// Loopback brings lo up (the kernel creates it down; 127.0.0.1 is added by
// the kernel when it comes up).
func Loopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// SetHostname sets the kernel's host name.
func SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("set hostname %q: %w", name, err)
	}
	return nil
}

// FirstWired returns the name of the first wired Ethernet interface in
// sysClassNet (normally /sys/class/net): a physical device (it has a
// "device" link), of ARP type 1 (Ethernet), not wireless. Names sort the
// usual way (eth0 before eth1, end0 before enp1s0).
func FirstWired(sysClassNet string) (string, error) {
	if sysClassNet == "" {
		sysClassNet = "/sys/class/net"
	}
	ents, err := os.ReadDir(sysClassNet)
	if err != nil {
		return "", fmt.Errorf("list network interfaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		dir := filepath.Join(sysClassNet, e.Name())
		typ, _ := os.ReadFile(filepath.Join(dir, "type"))
		if strings.TrimSpace(string(typ)) != "1" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue // virtual: bridge, veth, dummy
		}
		if _, err := os.Stat(filepath.Join(dir, "wireless")); err == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "phy80211")); err == nil {
			continue
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return "", errors.New("no wired network interface: is the Ethernet driver in the image? (set network.interface in device.yaml to choose one)")
	}
	sort.Strings(names)
	return names[0], nil
}

// Static configures ifname with prefix, a default route via gw (if
// valid) and dns servers.
func Static(ifname string, prefix netip.Prefix, gw netip.Addr, dns []netip.Addr, resolvConf string) error {
	link, err := up(ifname)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: prefixNet(prefix)}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("%s: address %s: %w", ifname, prefix, err)
	}
	if gw.IsValid() {
		if err := defaultRoute(link, net.IP(gw.AsSlice())); err != nil {
			return fmt.Errorf("%s: %w", ifname, err)
		}
	}
	return WriteResolvConf(resolvConf, dns)
}

func up(ifname string) (netlink.Link, error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("interface %s up: %w", ifname, err)
	}
	return link, nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func defaultRoute(link netlink.Link, gw net.IP) error {
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: all, Gw: gw}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

// WriteResolvConf replaces path with nameserver lines; no servers leaves
// the file alone.
func WriteResolvConf(path string, dns []netip.Addr) error {
	if len(dns) == 0 {
		return nil
	}
	if path == "" {
		path = DefaultResolvConf
	}
	var b strings.Builder
	b.WriteString("# written by the Bulkhead supervisor\n")
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return atomicfile.WriteFile(path, []byte(b.String()), 0o644)
}

// Lease is what DHCP configured.
type Lease struct {
	Address netip.Prefix
	Router  netip.Addr
	DNS     []netip.Addr
	// Duration of the lease; renewal is due at half of it.
	Duration time.Duration
	raw      *nclient4.Lease
}

// DHCP keeps a DHCPv4 lease on one interface.
type DHCP struct {
	Interface  string
	ResolvConf string
	// Timeout bounds one exchange; default 10 s.
	Timeout time.Duration
	Log     *slog.Logger

	client *nclient4.Client
}

// Once brings the interface up, obtains a lease and applies it.
func (d *DHCP) Once(ctx context.Context) (*Lease, error) {
	if _, err := up(d.Interface); err != nil {
		return nil, err
	}
	if d.client == nil {
		if err := waitForEntropy(ctx); err != nil {
			return nil, err
		}
		t := d.Timeout
		if t <= 0 {
			t = 10 * time.Second
		}
		c, err := nclient4.New(d.Interface, nclient4.WithTimeout(t), nclient4.WithRetry(3))
		if err != nil {
			return nil, fmt.Errorf("dhcp on %s: %w", d.Interface, err)
		}
		d.client = c
	}
	raw, err := d.client.Request(ctx)
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: no lease: %w", d.Interface, err)
	}
	return d.apply(raw)
}

// Close releases the client's socket (the lease stays until it expires).
func (d *DHCP) Close() error {
	if d.client == nil {
		return nil
	}
	return d.client.Close()
}

func (d *DHCP) apply(raw *nclient4.Lease) (*Lease, error) {
	ack := raw.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok {
		return nil, fmt.Errorf("dhcp on %s: the server offered no IPv4 address", d.Interface)
	}
	mask := ack.SubnetMask()
	ones := 24
	if mask != nil {
		ones, _ = mask.Size()
	}
	l := &Lease{Address: netip.PrefixFrom(ip, ones), Duration: ack.IPAddressLeaseTime(time.Hour), raw: raw}
	if rs := ack.Router(); len(rs) > 0 {
		l.Router, _ = netip.AddrFromSlice(rs[0].To4())
	}
	for _, s := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(s.To4()); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	link, err := netlink.LinkByName(d.Interface)
	if err != nil {
		return nil, err
	}
	// The address expires with the lease, so a supervisor that dies
	// cannot leave a stale address behind forever.
	secs := int(l.Duration / time.Second)
	addr := &netlink.Addr{IPNet: prefixNet(l.Address), ValidLft: secs, PreferedLft: secs}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, fmt.Errorf("dhcp on %s: address %s: %w", d.Interface, l.Address, err)
	}
	if l.Router.IsValid() {
		if err := defaultRoute(link, net.IP(l.Router.AsSlice())); err != nil {
			return nil, fmt.Errorf("dhcp on %s: %w", d.Interface, err)
		}
	}
	if err := WriteResolvConf(d.ResolvConf, l.DNS); err != nil {
		return nil, err
	}
	return l, nil
}

// Run keeps a lease until ctx ends: it retries with back-off while no
// server answers (a cable plugged in later still gets an address) and
// renews at half the lease time.
func (d *DHCP) Run(ctx context.Context) error {
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	defer d.Close()
	wait := 2 * time.Second
	var lease *Lease
	failing := false
	for {
		var err error
		if lease == nil {
			lease, err = d.Once(ctx)
		} else {
			var raw *nclient4.Lease
			if raw, err = d.client.Renew(ctx, lease.raw); err == nil {
				lease, err = d.apply(raw)
			} else {
				lease = nil // start over with a discover
			}
		}
		next := wait
		if err != nil {
			// The first failure after start or after a lease says why
			// at warning level (a device without an address is the
			// first thing a user asks about); the retries are detail.
			lvl := slog.LevelDebug
			if !failing {
				lvl = slog.LevelWarn
			}
			log.Log(ctx, lvl, "dhcp: no lease yet, retrying", "interface", d.Interface, "err", err, "retry_in", next)
			failing = true
			wait = min(wait*2, time.Minute)
		} else {
			failing = false
			log.Info("dhcp lease", "interface", d.Interface, "address", lease.Address.String(), "router", lease.Router.String(), "lease", lease.Duration)
			wait = 2 * time.Second
			next = max(lease.Duration/2, 10*time.Second)
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waitForEntropy returns once the kernel's random number generator is
// seeded. nclient4 draws its transaction IDs from u-root's rand, which
// polls getrandom(2) with GRND_NONBLOCK in a busy loop until the CRNG is
// ready; a non-blocking call never makes the kernel seed it, so on a board
// without a hardware RNG or early entropy (QEMU's q35 with the default CPU
// is one) DHCP would spin on one core and never send a packet. A blocking
// getrandom makes the kernel generate jitter entropy (Linux 5.4 and later,
// drivers/char/random.c try_to_generate_entropy) and returns within about a
// second. It runs in a goroutine so that ctx still cancels the wait.
func waitForEntropy(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		var b [1]byte
		for {
			_, err := unix.Getrandom(b[:], 0)
			if err != unix.EINTR {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil && err != unix.ENOSYS {
			return fmt.Errorf("seed the random number generator: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
