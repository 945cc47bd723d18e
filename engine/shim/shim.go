// Package shim is the small process that stays with each running
// container: it mounts the container's root filesystem, runs `runc create`
// and `runc start`, becomes the parent of the container's init (as child
// subreaper), copies its output into the log, and records the exit status.
//
// It exists so that containers keep running, logging and being reaped when
// the engine restarts or crashes: the engine re-attaches through the
// shim's unix socket. The shim owns nothing but its one container's
// process and mount; it must not touch images, networks or other
// containers, and it keeps no state beyond the exit file.
package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/engine/durable"
	"github.com/bulkhead-os/bulkhead/engine/logs"
	"github.com/bulkhead-os/bulkhead/engine/runtime"
)

// Config is what the engine hands a shim, as JSON in a file.
type Config struct {
	ID          string   `json:"id"`
	Bundle      string   `json:"bundle"`      // holds config.json
	Rootfs      string   `json:"rootfs"`      // overlay mount point
	LayersRoot  string   `json:"layers_root"` // lower dirs are relative to it
	Lowers      []string `json:"lowers"`      // top layer first
	Upper       string   `json:"upper"`
	Work        string   `json:"work"`
	Runc        string   `json:"runc"`
	RuncRoot    string   `json:"runc_root"`
	LogDir      string   `json:"log_dir"`
	LogMaxSize  int64    `json:"log_max_size"`
	LogMaxFiles int      `json:"log_max_files"`
	Socket      string   `json:"socket"`    // control socket
	ExitFile    string   `json:"exit_file"` // written when the container ends
	ShimLog     string   `json:"shim_log"`
}

// Exit is how a container ended.
type Exit struct {
	Code       int       `json:"code"`
	Signal     int       `json:"signal,omitempty"`
	FinishedAt time.Time `json:"finished_at"`
	OOMKilled  bool      `json:"oom_killed,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// hello is the first line a client reads from the control socket.
type hello struct {
	Pid int `json:"pid"`
}

type message struct {
	Hello *hello `json:"hello,omitempty"`
	Exit  *Exit  `json:"exit,omitempty"`
}

// Overlay mount data is limited to one page; relative lower paths from
// LayersRoot keep ~60 layers within it.
const maxMountData = 4000

// MountRootfs mounts the overlay. It must run with LayersRoot as the
// working directory (the shim is started there).
func MountRootfs(c *Config) error {
	if len(c.Lowers) == 0 {
		return errors.New("image has no layers: nothing to mount")
	}
	if err := os.MkdirAll(c.Rootfs, 0o755); err != nil {
		return err
	}
	unix.Unmount(c.Rootfs, unix.MNT_DETACH) // a stale mount from a crash
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(c.Lowers, ":"), c.Upper, c.Work)
	if len(data) > maxMountData {
		return fmt.Errorf("image has %d layers, more than overlayfs mount options can hold: squash the image (fewer RUN steps)", len(c.Lowers))
	}
	if err := unix.Mount("overlay", c.Rootfs, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount overlay root filesystem: %w (the kernel needs the overlay module, and the data partition must be ext4 or another upper-capable filesystem)", err)
	}
	return nil
}

// Run is the shim's main. ready is written one line, "ok <pid>" or
// "error <message>", then closed; the engine waits for it.
func Run(c *Config, ready *os.File) error {
	if c.ShimLog != "" {
		if f, err := os.OpenFile(c.ShimLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			slog.SetDefault(slog.New(slog.NewTextHandler(f, nil)))
		}
	}
	// The shim outlives the engine and any terminal: only the container's
	// end ends it.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	fail := func(err error) error {
		fmt.Fprintf(ready, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		ready.Close()
		return err
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("become child subreaper: %w", err))
	}
	if err := MountRootfs(c); err != nil {
		return fail(err)
	}
	os.Remove(c.ExitFile)
	lw, err := logs.NewWriter(c.LogDir, c.LogMaxSize, c.LogMaxFiles)
	if err != nil {
		unix.Unmount(c.Rootfs, unix.MNT_DETACH)
		return fail(err)
	}
	rc := &runtime.Runc{Binary: c.Runc, Root: c.RuncRoot}
	pid, copiers, err := create(c, rc, lw)
	if err != nil {
		unix.Unmount(c.Rootfs, unix.MNT_DETACH)
		return fail(err)
	}
	srv, err := listen(c.Socket, pid)
	if err != nil {
		rc.Delete(context.Background(), c.ID, true)
		unix.Unmount(c.Rootfs, unix.MNT_DETACH)
		return fail(err)
	}
	if err := rc.Start(context.Background(), c.ID); err != nil {
		srv.close()
		rc.Delete(context.Background(), c.ID, true)
		unix.Unmount(c.Rootfs, unix.MNT_DETACH)
		return fail(err)
	}
	fmt.Fprintf(ready, "ok %d\n", pid)
	ready.Close()

	exit := reap(pid)
	// Output drains once every holder of the pipes is gone; with a pid
	// namespace the kernel kills the rest of the container when its init
	// dies, so this is quick. The bound covers a process that escaped.
	waitTimeout(copiers, 5*time.Second)
	lw.Close()
	if err := rc.Delete(context.Background(), c.ID, true); err != nil {
		slog.Warn("shim: runc delete", "container", c.ID, "err", err)
	}
	if err := unix.Unmount(c.Rootfs, unix.MNT_DETACH); err != nil {
		slog.Warn("shim: unmount rootfs", "container", c.ID, "err", err)
	}
	if err := durable.WriteJSON(c.ExitFile, exit, 0o600); err != nil {
		slog.Error("shim: record exit", "container", c.ID, "err", err)
	}
	srv.finish(exit)
	return nil
}

// create runs `runc create` with the container's stdio on pipes and
// returns the container's init pid.
func create(c *Config, rc *runtime.Runc, lw *logs.Writer) (int, *sync.WaitGroup, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer devnull.Close()
	pidFile := filepath.Join(c.Bundle, "init.pid")
	runcLog := filepath.Join(c.Bundle, "runc.log")
	os.Remove(pidFile)
	os.Remove(runcLog)
	// runc's own errors go to runc.log: its stderr is the container's.
	cmd := rc.Command(context.Background(), "--log", runcLog, "--log-format", "json", "create", "--bundle", c.Bundle, "--pid-file", pidFile, c.ID)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, outW, errW
	runErr := cmd.Run()
	outW.Close()
	errW.Close()
	wg := &sync.WaitGroup{}
	wg.Add(2)
	go func() { defer wg.Done(); lw.Copy("stdout", outR); outR.Close() }()
	go func() { defer wg.Done(); lw.Copy("stderr", errR); errR.Close() }()
	if runErr != nil {
		return 0, wg, fmt.Errorf("runc create: %v: %s", runErr, runcError(runcLog))
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, wg, fmt.Errorf("runc create left no pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, wg, fmt.Errorf("runc pid file: %w", err)
	}
	return pid, wg, nil
}

// runcError returns the last error runc logged.
func runcError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no runc log)"
	}
	defer f.Close()
	last := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			last = e.Msg
		}
	}
	return last
}

// reap waits for the container's init. As child subreaper the shim also
// inherits orphans from inside the container and reaps them here.
func reap(pid int) *Exit {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &Exit{Code: 255, FinishedAt: time.Now().UTC(), Error: "lost the container process: " + err.Error()}
		}
		if got != pid {
			continue
		}
		e := &Exit{FinishedAt: time.Now().UTC()}
		switch {
		case ws.Exited():
			e.Code = ws.ExitStatus()
		case ws.Signaled():
			e.Signal = int(ws.Signal())
			e.Code = 128 + e.Signal
		}
		return e
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

type server struct {
	l       net.Listener
	pid     int
	mu      sync.Mutex
	clients []net.Conn
	exit    *Exit
}

func listen(path string, pid int) (*server, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("shim control socket path %s is %d bytes, over the 107 a unix socket allows: use a shorter --exec-root", path, len(path))
	}
	os.Remove(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("shim control socket: %w", err)
	}
	s := &server{l: l, pid: pid}
	go s.serve()
	return s, nil
}

func (s *server) serve() {
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		json.NewEncoder(c).Encode(message{Hello: &hello{Pid: s.pid}})
		if s.exit != nil {
			json.NewEncoder(c).Encode(message{Exit: s.exit})
			c.Close()
		} else {
			s.clients = append(s.clients, c)
		}
		s.mu.Unlock()
	}
}

func (s *server) finish(e *Exit) {
	s.mu.Lock()
	s.exit = e
	for _, c := range s.clients {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		json.NewEncoder(c).Encode(message{Exit: e})
		c.Close()
	}
	s.clients = nil
	s.mu.Unlock()
	s.close()
}

func (s *server) close() {
	s.l.Close()
	os.Remove(s.l.Addr().String())
}

// ErrGone means no shim answers on the socket: the container is not
// running under a shim (it ended while nobody watched, or the device
// rebooted).
var ErrGone = errors.New("shim is gone")

// Conn is the engine's connection to a shim.
type Conn struct {
	c   net.Conn
	br  *bufio.Reader
	Pid int // the container's init pid
}

// Dial connects to a shim's control socket.
func Dial(socket string) (*Conn, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrGone, err)
	}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m message
	line, err := br.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &m) != nil || m.Hello == nil {
		c.Close()
		return nil, fmt.Errorf("%w: no greeting on %s", ErrGone, socket)
	}
	c.SetReadDeadline(time.Time{})
	return &Conn{c: c, br: br, Pid: m.Hello.Pid}, nil
}

// Wait blocks until the container exits. It returns ErrGone when the shim
// dies without saying how the container ended.
func (s *Conn) Wait() (*Exit, error) {
	defer s.c.Close()
	for {
		line, err := s.br.ReadBytes('\n')
		if err != nil {
			return nil, ErrGone
		}
		var m message
		if json.Unmarshal(line, &m) == nil && m.Exit != nil {
			return m.Exit, nil
		}
	}
}

// Close drops the connection without affecting the shim.
func (s *Conn) Close() error { return s.c.Close() }

// ReadExit reads the exit file a shim left.
func ReadExit(path string) (*Exit, error) {
	var e Exit
	if err := durable.ReadJSON(path, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// Spawn starts `exe shim <config>` as a new session in LayersRoot and
// waits for the shim to report the container started. It returns the
// container's init pid.
func Spawn(exe string, configPath string, c *Config) (int, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	cmd := exec.Command(exe, "shim", configPath)
	cmd.Dir = c.LayersRoot
	cmd.ExtraFiles = []*os.File{pw}
	// Its own session: a signal to the engine's process group (Ctrl-C,
	// PID 1 stopping the engine) must not reach the shims.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return 0, fmt.Errorf("start shim: %w", err)
	}
	pw.Close()
	// The engine reaps its own shims when they exit while it lives; after
	// an engine restart the shims are reparented to PID 1.
	go cmd.Wait()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("shim for %s died before reporting (see %s)", c.ID, c.ShimLog)
	}
	line = strings.TrimSpace(line)
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return 0, errors.New(msg)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "ok "))
	if err != nil {
		return 0, fmt.Errorf("shim said %q", line)
	}
	return pid, nil
}
