// Package health runs the checks that decide whether a freshly installed
// root slot may be committed: the supervisor itself is up (its API answers),
// the data partition is writable, the container engine's socket answers
// (once an engine is configured), the network is reachable if it was
// before the update, and the executable checks the OS image ships
// (DefaultOSDir) and the user keeps on the data partition (DefaultUserDir)
// exit 0.
//
// A check is a function that says ok or why not; the updater runs the set
// repeatedly until all pass or its deadline passes. Nothing here commits,
// abandons or reboots.
package health

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Result is the outcome of one check.
type Result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Check is one health check. It returns nil when healthy.
type Check struct {
	Name string
	// Run must return within its context's deadline.
	Run func(ctx context.Context) error
	// OnlyIfNetworkWasUp skips the check (reports it ok) when the network
	// was not reachable before the update: an update must not be rolled
	// back for a cable that was never plugged in.
	OnlyIfNetworkWasUp bool
}

// Checker is a set of checks.
type Checker struct {
	Checks []Check
	// Timeout bounds each check; default 30 s.
	Timeout time.Duration
}

// Run runs every check once, in order, and reports each.
func (c *Checker) Run(ctx context.Context, networkWasUp bool) []Result {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	out := make([]Result, 0, len(c.Checks))
	for _, ch := range c.Checks {
		if ch.OnlyIfNetworkWasUp && !networkWasUp {
			out = append(out, Result{Name: ch.Name, OK: true, Detail: "skipped: the network was not reachable before the update"})
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := ch.Run(cctx)
		cancel()
		r := Result{Name: ch.Name, OK: err == nil}
		if err != nil {
			r.Detail = err.Error()
		}
		out = append(out, r)
	}
	return out
}

// Healthy reports whether every result is ok.
func Healthy(rs []Result) bool {
	for _, r := range rs {
		if !r.OK {
			return false
		}
	}
	return true
}

// Failing summarises the failing results for an outcome's reason.
func Failing(rs []Result) string {
	var s []string
	for _, r := range rs {
		if !r.OK {
			s = append(s, r.Name+": "+r.Detail)
		}
	}
	return strings.Join(s, "; ")
}

// UnixSocket checks that something accepts connections on path. The
// supervisor's own API socket and the engine's socket are checked this way.
func UnixSocket(name, path string) Check {
	return Check{Name: name, Run: func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return fmt.Errorf("no answer on %s: %w", path, err)
		}
		return c.Close()
	}}
}

// DataWritable checks that a file can be created, written, flushed, read
// back and removed in dir: a data partition that came back read-only
// (ext4 errors=remount-ro) or full would fail it.
func DataWritable(dir string) Check {
	return Check{Name: "data-writable", Run: func(ctx context.Context) error {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		p := filepath.Join(dir, fmt.Sprintf(".health-%d", os.Getpid()))
		want := []byte(time.Now().String())
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer os.Remove(p)
		if _, err := f.Write(want); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s reads back different bytes", p)
		}
		return os.Remove(p)
	}}
}

// Network checks reachability with NetworkUp.
func Network(procRoute, target string) Check {
	return Check{Name: "network", OnlyIfNetworkWasUp: true, Run: func(ctx context.Context) error {
		return NetworkUp(ctx, procRoute, target)
	}}
}

// NetworkUp returns nil when the device has an IPv4 default route (read
// from procRoute, normally /proc/net/route) and, if target (host:port) is
// set, a TCP connection to target succeeds. It is also what the updater
// records before an install as "the network was reachable".
func NetworkUp(ctx context.Context, procRoute, target string) error {
	if procRoute == "" {
		procRoute = "/proc/net/route"
	}
	f, err := os.Open(procRoute)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// Iface Destination Gateway Flags ...; Flags 0x1 = RTF_UP.
		if len(fs) >= 4 && fs[1] == "00000000" && fs[3] != "Flags" {
			var flags uint64
			fmt.Sscanf(fs[3], "%x", &flags)
			if flags&1 != 0 {
				found = true
			}
		}
	}
	if !found {
		return errors.New("no default route")
	}
	if target == "" {
		return nil
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w", target, err)
	}
	return c.Close()
}

// DefaultUserDir holds the user's health checks: every executable file in
// it runs once per round (in name order, environment inherited plus
// BULKHEAD_VERSION and BULKHEAD_SLOT); exit status 0 is healthy, anything
// else, or running past the check timeout, is not, and the last line of its
// output becomes the reason. They live on the data partition, so they
// survive updates and judge every later one.
const DefaultUserDir = "/data/supervisor/health.d"

// DefaultOSDir holds the checks the OS image ships (on the read-only root
// slot), with the same rules as DefaultUserDir. They belong to a release:
// a new version brings its own checks and is judged by them in its trial.
const DefaultOSDir = "/etc/bulkhead/health.d"

// UserDir returns one check per executable in dir, named "user:<file>",
// read when called. A missing directory means no user checks.
func UserDir(dir string, env []string) ([]Check, error) {
	return ExecDir(dir, "user:", env)
}

// ExecDir returns one check per executable in dir, named prefix+<file>,
// read when called. A missing directory means no checks.
func ExecDir(dir, prefix string, env []string) ([]Check, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("health checks in %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var checks []Check
	for _, n := range names {
		path := filepath.Join(dir, n)
		checks = append(checks, Check{Name: prefix + n, Run: func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, path)
			cmd.Env = append(os.Environ(), env...)
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if err == nil {
				return nil
			}
			last := strings.TrimSpace(string(out))
			if i := strings.LastIndexByte(last, '\n'); i >= 0 {
				last = last[i+1:]
			}
			if len(last) > 200 {
				last = last[:200]
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s did not finish in time", path)
			}
			if last != "" {
				return fmt.Errorf("%v: %s", err, last)
			}
			return err
		}})
	}
	return checks, nil
}
