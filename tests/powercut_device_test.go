package tests

// A device of the power-cut tests: QEMU with the device API forwarded to
// the host, the console watched for the workload's and the supervisor's
// lines, and optionally every disk write logged (blklogwrites).

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
	"github.com/bulkhead-os/bulkhead/tests/powercut"
	"github.com/bulkhead-os/bulkhead/tests/powercut/workload"
)

// pcServer serves bundles to the guests over user networking, which shows
// the host as 10.0.2.2. One server lives as long as its test: a state file
// recorded in one boot names its URL, and a later boot of a crash state
// fetches from it again.
type pcServer struct {
	srv  *http.Server
	port int
}

func pcServe(t *testing.T, files map[string]string) *pcServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for name, path := range files {
		mux.HandleFunc("/"+name, func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(path)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			defer f.Close()
			fi, _ := f.Stat()
			http.ServeContent(w, r, name, fi.ModTime(), f) // Range requests for resumption
		})
	}
	s := &pcServer{srv: &http.Server{Handler: mux}, port: ln.Addr().(*net.TCPAddr).Port}
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// URL is where a guest finds a file.
func (s *pcServer) URL(name string) string { return fmt.Sprintf("http://10.0.2.2:%d/%s", s.port, name) }

func pcFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var (
	pcUpdateRE   = regexp.MustCompile(`msg=update phase=(\S+)`)
	pcFinishedRE = regexp.MustCompile(`msg="update finished" result=(\S+)`)
	pcReadyRE    = regexp.MustCompile(`bulkhead: ready version=\S+ slot=([ab]) board=\S+ trial=([01])`)
	pcTrialRE    = regexp.MustCompile(`(?m)^bulkhead: ready version=\S+ slot=[ab] board=\S+ trial=1\r?$`)
)

// pcConsole watches the console: it remembers the workload's last synced
// record and, for a logged machine, ties lines to the log's size
// (powercut.Marker).
type pcConsole struct {
	mu      sync.Mutex
	logPath string
	partial []byte
	markers []powercut.Marker
	synced  uint64
	// recovered are the workload's start lines since the last start of
	// the machine, newest last.
	recovered []string
}

func (c *pcConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(c.partial[:i]), "\r")
		c.partial = c.partial[i+1:]
		c.line(line)
	}
	return len(p), nil
}

func (c *pcConsole) line(line string) {
	var m powercut.Marker
	if strings.HasPrefix(line, "workload: ") {
		if n, ok := workload.ParseSynced(line); ok {
			m.Synced = n
			c.synced = max(c.synced, n)
		}
		if strings.Contains(line, workload.RecoveredPrefix) {
			c.recovered = append(c.recovered, line)
		}
	}
	switch {
	case pcUpdateRE.MatchString(line):
		m.Phase = "update " + pcUpdateRE.FindStringSubmatch(line)[1]
	case pcFinishedRE.MatchString(line):
		m.Phase = "update " + pcFinishedRE.FindStringSubmatch(line)[1]
	case strings.Contains(line, "shutting down"):
		m.Phase = "reboot"
	case pcReadyRE.MatchString(line):
		s := pcReadyRE.FindStringSubmatch(line)
		m.Phase = "running slot " + s[1]
		if s[2] == "1" {
			m.Phase = "trial boot of slot " + s[1]
		}
	}
	if c.logPath == "" || (m.Synced == 0 && m.Phase == "" && !strings.Contains(line, "bulkhead: ready")) {
		return
	}
	fi, err := os.Stat(c.logPath)
	if err != nil {
		return
	}
	m.Offset, m.Line = fi.Size(), line
	c.markers = append(c.markers, m)
}

// restart forgets a line the cut interrupted.
func (c *pcConsole) restart(phase string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = nil
	c.recovered = nil
	if c.logPath != "" {
		var off int64
		if fi, err := os.Stat(c.logPath); err == nil {
			off = fi.Size()
		}
		c.markers = append(c.markers, powercut.Marker{Offset: off, Phase: phase, Line: "(" + phase + ")"})
	}
}

func (c *pcConsole) Synced() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

func (c *pcConsole) Markers() []powercut.Marker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]powercut.Marker(nil), c.markers...)
}

func (c *pcConsole) Recovered() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.recovered...)
}

// pcDevice is a machine of the power-cut tests.
type pcDevice struct {
	t       *testing.T
	name    string // the board
	m       *qemu.Machine
	api     *client.Client
	con     *pcConsole
	logPath string
	ctx     context.Context
	cancel  context.CancelFunc
	running bool
}

// Running reports whether the machine was started and not cut since.
func (d *pcDevice) Running() bool { return d.running }

// pcOptions say how to start a device.
type pcOptions struct {
	// Disk is booted in place when InPlace, else copied.
	Disk    string
	InPlace bool
	// Log, if set, logs every write there; Base then receives a copy of
	// the disk as it was before the first write.
	Log, Base string
}

func pcNewDevice(t *testing.T, img *pcImage, o pcOptions) *pcDevice {
	t.Helper()
	port := pcFreePort(t)
	con := &pcConsole{logPath: o.Log}
	m, err := qemu.Prepare(context.Background(), qemu.Config{
		Board:       img.board,
		Image:       o.Disk,
		InPlace:     o.InPlace,
		Cache:       userCache(t),
		LockFile:    filepath.Join(srcDir(t), "boards", img.board.Name+".lock"),
		WorkDir:     t.TempDir(),
		HostForward: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:7070", port)},
		Console:     con,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Log != "" {
		if err := pcCopy(m.Disk, o.Base); err != nil {
			t.Fatal(err)
		}
		if err := m.LogWrites(o.Log); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &pcDevice{t: t, name: img.board.Name, m: m, con: con, logPath: o.Log, ctx: ctx, cancel: cancel,
		api: client.TCP(fmt.Sprintf("127.0.0.1:%d", port), pcToken)}
	t.Cleanup(func() {
		d.m.PowerCut()
		cancel()
	})
	return d
}

// Start powers the machine on.
func (d *pcDevice) Start() {
	d.t.Helper()
	d.con.restart("boot")
	if err := d.m.Start(d.ctx); err != nil {
		d.t.Fatal(err)
	}
	d.running = true
}

// Cut kills QEMU: a power cut.
func (d *pcDevice) Cut() {
	d.m.PowerCut()
	d.running = false
}

// fatal stops the test with the console.
func (d *pcDevice) fatal(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("%s: %s\n--- serial console ---\n%s\n--- end ---", d.m.Disk, fmt.Sprintf(format, args...), pcTail(d.m.Log(), 200))
}

// WaitReady waits for the next ready line after console offset from and
// returns the slot, the trial flag and the version.
func (d *pcDevice) WaitReady(from int, timeout time.Duration) (slot string, trial bool, version string, end int) {
	d.t.Helper()
	line, end, err := d.m.Wait(d.ctx, readyRE, from, timeout)
	if err != nil {
		d.fatal("no ready line: %v", err)
	}
	m := readyRE.FindStringSubmatch(line)
	return m[2], m[4] == "1", m[1], end
}

// WaitSynced waits until the workload reported record n.
func (d *pcDevice) WaitSynced(n uint64, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for d.con.Synced() < n {
		if time.Now().After(deadline) {
			d.fatal("the workload did not reach record %d in %s (at %d)", n, timeout, d.con.Synced())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Status asks the device API, retrying while the device boots.
func (d *pcDevice) Status(timeout time.Duration) api.Status {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		st, err := d.api.Status(ctx)
		cancel()
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			d.fatal("device API: %v", err)
		}
		time.Sleep(time.Second)
	}
}

// StartUpdate starts an update from the bundle server.
func (d *pcDevice) StartUpdate(url string) string {
	d.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
		r, err := d.api.StartUpdate(ctx, api.UpdateRequest{Source: url, Force: true})
		cancel()
		if err == nil {
			return r.ID
		}
		if time.Now().After(deadline) {
			d.fatal("start update from %s: %v", url, err)
		}
		time.Sleep(time.Second)
	}
}

// Settle waits until the supervisor has no update in progress, and then
// until the device runs its committed slot: after a cut, the supervisor
// must finish or roll back on its own, and a rolled-back device must
// return to its committed slot. ok is false when the update settled but
// the device stayed on another slot for two minutes.
func (d *pcDevice) Settle(timeout time.Duration) (st api.Status, ok bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	var strayed time.Time
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		s, err := d.api.Status(ctx)
		cancel()
		if err != nil {
			lastErr = err
			strayed = time.Time{} // rebooting
			time.Sleep(2 * time.Second)
			continue
		}
		st, lastErr = s, nil
		if !st.Update.Phase.Busy() && st.BootState != nil {
			if st.Boot.Slot == st.BootState.Committed {
				return st, true
			}
			if strayed.IsZero() {
				strayed = time.Now()
			} else if time.Since(strayed) > 2*time.Minute {
				return st, false
			}
		}
		time.Sleep(2 * time.Second)
	}
	d.fatal("the update did not settle in %s: last status %+v, err %v", timeout, st, lastErr)
	return st, false
}

// WaitSettled is Settle for devices that must settle on their committed
// slot; otherwise the test fails.
func (d *pcDevice) WaitSettled(timeout time.Duration) api.Status {
	d.t.Helper()
	st, ok := d.Settle(timeout)
	if !ok {
		pcRun.fail(d.t, d.name, "the update settled (%s, last outcome %s) but the device keeps running slot %s while the boot state is %s",
			st.Update.Phase, pcLastOutcome(st.Update.History), st.Boot.Slot, pcBootStateString(st))
		// Power cycle it, as a user would, to go on.
		d.Cut()
		d.Start()
		d.WaitReady(0, 8*time.Minute)
		if st, ok = d.Settle(timeout); !ok {
			d.fatal("after a power cycle the device still runs slot %s, boot state %s", st.Boot.Slot, pcBootStateString(st))
		}
	}
	return st
}

// WaitOutcome waits for the outcome of update id.
func (d *pcDevice) WaitOutcome(id string, timeout time.Duration) updater.Outcome {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	defer cancel()
	o, err := d.api.WaitOutcome(ctx, id, 2*time.Second, nil)
	if err != nil {
		d.fatal("update %s: %v", id, err)
	}
	return o
}

func pcTail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("... %d lines before", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}
