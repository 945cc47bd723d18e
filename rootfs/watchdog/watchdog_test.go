package watchdog

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The numbers are written out by hand in watchdog.go; x/sys/unix generates
// them from the kernel headers, so the two must agree.
func TestIoctlNumbersMatchKernelHeaders(t *testing.T) {
	checks := []struct {
		name      string
		ours, hdr uint64
	}{
		{"WDIOC_GETSUPPORT", ioctlGetSupport, unix.WDIOC_GETSUPPORT},
		{"WDIOC_KEEPALIVE", ioctlKeepAlive, unix.WDIOC_KEEPALIVE},
		{"WDIOC_SETTIMEOUT", ioctlSetTimeout, unix.WDIOC_SETTIMEOUT},
		{"WDIOC_GETTIMEOUT", ioctlGetTimeout, unix.WDIOC_GETTIMEOUT},
		{"WDIOF_MAGICCLOSE", optMagicClose, unix.WDIOF_MAGICCLOSE},
	}
	for _, c := range checks {
		if c.ours != c.hdr {
			t.Errorf("%s = %#x, kernel header says %#x", c.name, c.ours, c.hdr)
		}
	}
	if got := unsafe.Sizeof(info{}); got != 40 {
		t.Errorf("struct watchdog_info is %d bytes, want 40", got)
	}
}

type countingPinger struct{ n atomic.Int64 }

func (p *countingPinger) Ping() error { p.n.Add(1); return nil }

func TestFeederPingsWhileHealthyAndStarvesWhenNot(t *testing.T) {
	p := &countingPinger{}
	var mu sync.Mutex
	var sick error
	f := &Feeder{Dev: p, Interval: time.Millisecond, Healthy: func() error {
		mu.Lock()
		defer mu.Unlock()
		return sick
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()

	waitFor(t, func() bool { return p.n.Load() >= 3 }, "the feeder to ping while healthy")

	mu.Lock()
	sick = errors.New("supervisor asked for a reset")
	mu.Unlock()
	// Let any ping that was already past the health check land.
	time.Sleep(20 * time.Millisecond)
	before := p.n.Load()
	time.Sleep(50 * time.Millisecond)
	if after := p.n.Load(); after != before {
		t.Fatalf("feeder pinged %d times while unhealthy", after-before)
	}

	mu.Lock()
	sick = nil
	mu.Unlock()
	waitFor(t, func() bool { return p.n.Load() > before }, "the feeder to resume")

	cancel()
	<-done
}

func TestFromEnvWithoutAWatchdogIsNil(t *testing.T) {
	t.Setenv(EnvDevice, "")
	t.Setenv(EnvFD, "")
	d, err := FromEnv()
	if d != nil || err != nil {
		t.Fatalf("FromEnv = %v, %v; want nil, nil", d, err)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
