package enginetest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const netnsEnv = "BULKHEAD_ENGINETEST_NETNS"

// RunInPrivateNetns runs the test binary again in a new network namespace
// and exits with its status, so bridges, veths, nftables rules and
// ip_forward changes made by the tests never touch the host's network and
// vanish with the process. Call it first in TestMain; it returns in the
// child, after bringing loopback up.
func RunInPrivateNetns() {
	if os.Getenv(netnsEnv) == "1" {
		if lo, err := netlink.LinkByName("lo"); err == nil {
			netlink.LinkSetUp(lo)
		}
		return
	}
	if os.Getuid() != 0 {
		return // the root-only tests fail with a clear message instead
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "run tests in a private network namespace:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// InNetns runs f on a thread that has joined the namespace at path (e.g. a
// container's), then restores the thread.
func InNetns(t testing.TB, path string, f func()) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open netns %s: %v", path, err)
	}
	defer ns.Close()
	InNetnsHandle(t, ns, f)
}

// InNetnsHandle is InNetns for an open namespace handle.
func InNetnsHandle(t testing.TB, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread is discarded when the goroutine ends,
		// so no other goroutine inherits the foreign namespace.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			t.Errorf("enter netns: %v", err)
			return
		}
		f()
	}()
	<-done
}

// NewOutsideNetns creates a namespace standing for a machine on the
// device's LAN, joined to the current namespace by a veth pair: the current
// side gets hostCIDR, the outside gets outsideCIDR.
func NewOutsideNetns(t testing.TB, hostCIDR, outsideCIDR string) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	outside, err := netns.New() // switches this thread into it
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink0"}, PeerName: "lan0", PeerNamespace: netlink.NsFd(int(outside))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("create uplink veth: %v", err)
	}
	up, _ := netlink.LinkByName("uplink0")
	addr, _ := netlink.ParseAddr(hostCIDR)
	netlink.AddrAdd(up, addr)
	netlink.LinkSetUp(up)
	h, err := netlink.NewHandleAt(outside)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lan, _ := h.LinkByName("lan0")
	oaddr, _ := netlink.ParseAddr(outsideCIDR)
	h.AddrAdd(lan, oaddr)
	h.LinkSetUp(lan)
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName("uplink0"); err == nil {
			netlink.LinkDel(l)
		}
		outside.Close()
	})
	return outside
}
