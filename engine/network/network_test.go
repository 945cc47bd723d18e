package network

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
)

func TestMain(m *testing.M) {
	enginetest.RunInPrivateNetns()
	os.Exit(m.Run())
}

// serveOnce listens in the current thread's namespace and answers one line
// per connection with the peer's address.
func serveOnce(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("peer " + c.RemoteAddr().(*net.TCPAddr).IP.String() + "\n"))
			c.Close()
		}
	}()
	return l
}

func dial(addr string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestBridgeGivesContainersAddressesNATAndPublishedPorts(t *testing.T) {
	enginetest.RequireRoot(t)
	m, err := New(Config{Bridge: "bhtest0", CIDR: "172.31.0.1/24", RunDir: filepath.Join(t.TempDir(), "netns")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(); err != nil {
		t.Fatalf("bridge networking should work as root on this kernel: %v", err)
	}
	t.Cleanup(m.Teardown)
	outside := enginetest.NewOutsideNetns(t, "10.250.0.1/24", "10.250.0.2/24")

	a, err := m.Attach("aaaaaaaaaaaaaaaa", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Attach("bbbbbbbbbbbbbbbb", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.IP.String() != "172.31.0.2" || b.IP.String() != "172.31.0.3" {
		t.Fatalf("addresses %s, %s; want .2 and .3", a.IP, b.IP)
	}

	// A server in container a, published as host port 18080.
	var ln net.Listener
	enginetest.InNetns(t, a.Netns, func() { ln = serveOnce(t, ":80") })
	defer ln.Close()
	if _, err := m.Publish("aaaaaaaaaaaaaaaa", []PortMapping{{Proto: "tcp", HostPort: 18080, ContainerIP: a.IP, ContainerPort: 80}}); err != nil {
		t.Fatal(err)
	}

	t.Run("the device reaches a published port on loopback and on its LAN address", func(t *testing.T) {
		for _, addr := range []string{"127.0.0.1:18080", "10.250.0.1:18080"} {
			if got, err := dial(addr); err != nil || !strings.HasPrefix(got, "peer ") {
				t.Errorf("dial %s: %q %v", addr, got, err)
			}
		}
	})
	t.Run("a LAN machine reaches the published port and keeps its address", func(t *testing.T) {
		enginetest.InNetnsHandle(t, outside, func() {
			got, err := dial("10.250.0.1:18080")
			if err != nil || got != "peer 10.250.0.2" {
				t.Errorf("from the LAN: %q %v, want the LAN address preserved", got, err)
			}
		})
	})
	t.Run("outbound traffic of a container is masqueraded", func(t *testing.T) {
		var lan net.Listener
		enginetest.InNetnsHandle(t, outside, func() { lan = serveOnce(t, "10.250.0.2:9000") })
		defer lan.Close()
		enginetest.InNetns(t, b.Netns, func() {
			got, err := dial("10.250.0.2:9000")
			if err != nil || got != "peer 10.250.0.1" {
				t.Errorf("container to LAN: %q %v, want the device's address as source", got, err)
			}
		})
	})
	t.Run("containers reach each other on the bridge", func(t *testing.T) {
		enginetest.InNetns(t, b.Netns, func() {
			if got, err := dial(a.IP.String() + ":80"); err != nil || got != "peer "+b.IP.String() {
				t.Errorf("b to a: %q %v", got, err)
			}
		})
	})
	t.Run("an unpublished container port is closed to the LAN", func(t *testing.T) {
		enginetest.InNetnsHandle(t, outside, func() {
			// Give the LAN machine a route to the bridge subnet through the
			// device, so only the forward chain stands in the way.
			_, subnet, _ := net.ParseCIDR("172.31.0.0/24")
			if err := netlink.RouteAdd(&netlink.Route{Dst: subnet, Gw: net.ParseIP("10.250.0.1")}); err != nil {
				t.Fatal(err)
			}
			if _, err := dial(a.IP.String() + ":80"); err == nil {
				t.Error("reached a container port that was not published")
			}
		})
	})
	t.Run("a host port published twice is refused", func(t *testing.T) {
		_, err := m.Publish("bbbbbbbbbbbbbbbb", []PortMapping{{Proto: "tcp", HostPort: 18080, ContainerIP: b.IP, ContainerPort: 80}})
		if err == nil || !strings.Contains(err.Error(), "already published") {
			t.Errorf("err = %v", err)
		}
	})

	m.Detach("aaaaaaaaaaaaaaaa")
	if _, err := os.Stat(a.Netns); !os.IsNotExist(err) {
		t.Errorf("namespace file still there after detach: %v", err)
	}
	if _, err := dial("127.0.0.1:18080"); err == nil {
		t.Error("published port still answers after detach")
	}
	c, err := m.Attach("cccccccccccccccc", nil)
	if err != nil || c.IP.String() != "172.31.0.2" {
		t.Errorf("released address not reused: %v %v", c, err)
	}
	m.Detach("bbbbbbbbbbbbbbbb")
	m.Detach("cccccccccccccccc")
}

func TestResolvConfFallsBackWhenTheHostHasNoUsableServer(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, host string
		hostNet    bool
		want       string
	}{
		{"missing file", "", false, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"},
		{"only a local cache", "nameserver 127.0.0.53\nsearch lan\n", false, "search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"},
		{"local cache with host networking", "nameserver 127.0.0.53\n", true, "nameserver 127.0.0.53\n"},
		{"a real server", "nameserver 192.168.1.1\noptions ndots:2\n", false, "nameserver 192.168.1.1\noptions ndots:2\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if tc.host != "" {
				os.WriteFile(p, []byte(tc.host), 0o644)
			}
			if got := string(ResolvConf(p, DefaultDNS, tc.hostNet)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewRejectsUnusableCIDRs(t *testing.T) {
	for _, c := range []string{"172.17.0.0/16", "nonsense", "10.0.0.1/31", "fd00::1/64"} {
		if _, err := New(Config{CIDR: c}); err == nil {
			t.Errorf("CIDR %q accepted", c)
		}
	}
}
