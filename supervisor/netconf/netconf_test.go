package netconf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNetns runs f on a locked thread inside a new network namespace, so
// the test never touches the host's interfaces.
func inNetns(t *testing.T, f func()) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread stays in the namespace: let it die with the
		// goroutine instead of returning it to the pool.
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			t.Errorf("new netns: %v", err)
			return
		}
		defer ns.Close()
		f()
	}()
	<-done
}

func vethPair(t *testing.T) (client, server netlink.Link) {
	la := netlink.NewLinkAttrs()
	la.Name = "bhc0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "bhs0"}); err != nil {
		t.Fatalf("veth: %v", err)
	}
	c, _ := netlink.LinkByName("bhc0")
	s, _ := netlink.LinkByName("bhs0")
	return c, s
}

func TestDHCPLeaseIsApplied(t *testing.T) {
	inNetns(t, func() {
		if err := Loopback(); err != nil {
			t.Fatal(err)
		}
		_, srvLink := vethPair(t)
		_, srvNet, _ := net.ParseCIDR("10.99.0.1/24")
		srvNet.IP = net.ParseIP("10.99.0.1")
		netlink.AddrAdd(srvLink, &netlink.Addr{IPNet: srvNet})
		netlink.LinkSetUp(srvLink)

		serverIP := net.ParseIP("10.99.0.1").To4()
		handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
			var mt dhcpv4.MessageType
			switch m.MessageType() {
			case dhcpv4.MessageTypeDiscover:
				mt = dhcpv4.MessageTypeOffer
			case dhcpv4.MessageTypeRequest:
				mt = dhcpv4.MessageTypeAck
			default:
				return
			}
			reply, err := dhcpv4.NewReplyFromRequest(m,
				dhcpv4.WithMessageType(mt),
				dhcpv4.WithYourIP(net.ParseIP("10.99.0.42")),
				dhcpv4.WithServerIP(serverIP),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
				dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
				dhcpv4.WithOption(dhcpv4.OptRouter(serverIP)),
				dhcpv4.WithOption(dhcpv4.OptDNS(net.ParseIP("10.99.0.53"))),
				dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(10*time.Minute)),
			)
			if err != nil {
				return
			}
			conn.WriteTo(reply.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
		}
		srv, err := server4.NewServer("bhs0", &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
		if err != nil {
			t.Fatalf("dhcp server: %v", err)
		}
		defer srv.Close()
		go srv.Serve()

		resolv := filepath.Join(t.TempDir(), "resolv.conf")
		d := &DHCP{Interface: "bhc0", ResolvConf: resolv, Timeout: 2 * time.Second}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		l, err := d.Once(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Address != netip.MustParsePrefix("10.99.0.42/24") || l.Router != netip.MustParseAddr("10.99.0.1") {
			t.Fatalf("lease %+v", l)
		}
		link, _ := netlink.LinkByName("bhc0")
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.0.42/24" {
			t.Fatalf("addresses on bhc0: %v", addrs)
		}
		routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
		def := false
		for _, r := range routes {
			if r.Gw.Equal(serverIP) {
				def = true
			}
		}
		if !def {
			t.Fatalf("no default route via the server: %v", routes)
		}
		if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver 10.99.0.53") {
			t.Fatalf("resolv.conf: %q", b)
		}
	})
}

func TestStaticConfiguration(t *testing.T) {
	inNetns(t, func() {
		vethPair(t)
		resolv := filepath.Join(t.TempDir(), "resolv.conf")
		err := Static("bhc0", netip.MustParsePrefix("192.0.2.10/24"), netip.MustParseAddr("192.0.2.1"), []netip.Addr{netip.MustParseAddr("192.0.2.53")}, resolv)
		if err != nil {
			t.Fatal(err)
		}
		link, _ := netlink.LinkByName("bhc0")
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "192.0.2.10/24" {
			t.Fatalf("addresses: %v", addrs)
		}
		if b, _ := os.ReadFile(resolv); !strings.Contains(string(b), "nameserver 192.0.2.53") {
			t.Fatalf("resolv.conf %q", b)
		}
	})
}

func TestFirstWiredSkipsVirtualAndWireless(t *testing.T) {
	dir := t.TempDir()
	mk := func(name, typ string, device, wireless bool) {
		p := filepath.Join(dir, name)
		os.MkdirAll(p, 0o755)
		os.WriteFile(filepath.Join(p, "type"), []byte(typ+"\n"), 0o644)
		if device {
			os.MkdirAll(filepath.Join(p, "device"), 0o755)
		}
		if wireless {
			os.MkdirAll(filepath.Join(p, "wireless"), 0o755)
		}
	}
	mk("lo", "772", false, false)
	mk("br0", "1", false, false)
	mk("wlan0", "1", true, true)
	mk("eth1", "1", true, false)
	mk("eth0", "1", true, false)
	if got, err := FirstWired(dir); err != nil || got != "eth0" {
		t.Fatalf("FirstWired = %q, %v", got, err)
	}
	if _, err := FirstWired(t.TempDir()); err == nil {
		t.Fatal("found a wired interface in an empty directory")
	}
}

// DHCP must not start before the kernel's RNG is seeded (see
// waitForEntropy); on a seeded host the wait returns at once, and a
// cancelled context ends it.
func TestWaitForEntropy(t *testing.T) {
	if err := waitForEntropy(context.Background()); err != nil {
		t.Fatalf("waitForEntropy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitForEntropy(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("waitForEntropy with a cancelled context: %v", err)
	}
}
