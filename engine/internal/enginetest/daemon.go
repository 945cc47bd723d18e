package enginetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Engine is an engine daemon running as a separate process, as PID 1
// starts it on a device, so tests can SIGKILL it.
type Engine struct {
	Bin, Root, ExecRoot, Socket string
	Args                        []string // extra flags
	DockerConfig                string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// NewEngine prepares (without starting) an engine with fresh directories.
// root may be given to run on a special filesystem; "" makes a temp dir.
func NewEngine(t testing.TB, root string, args ...string) *Engine {
	t.Helper()
	RequireRoot(t)
	base := t.TempDir()
	if root == "" {
		root = filepath.Join(base, "root")
	}
	// Unix socket paths are limited to 107 bytes and test names are long:
	// the run directory gets a short name of its own.
	short, err := os.MkdirTemp("", "bh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	e := &Engine{
		Bin:          Build(t, "engine/cmd/engine", runtime.GOARCH, ""),
		Root:         root,
		ExecRoot:     filepath.Join(short, "run"),
		Socket:       filepath.Join(short, "engine.sock"),
		DockerConfig: filepath.Join(base, "docker-config"),
		Args:         args,
	}
	os.MkdirAll(e.DockerConfig, 0o700)
	t.Cleanup(func() { e.cleanup(t) })
	return e
}

// Start runs the daemon and waits for its socket to answer.
func (e *Engine) Start(t testing.TB) {
	t.Helper()
	// No apps file unless the test gives one: a test engine must not run
	// what the host's own boot partition might list.
	args := append([]string{"--root", e.Root, "--exec-root", e.ExecRoot, "--socket", e.Socket,
		"--resolv-conf", filepath.Join(e.ExecRoot, "no-resolv.conf"), "--apps", "", "-v"}, e.Args...)
	cmd := exec.Command(e.Bin, args...)
	e.stderr = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start engine: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	e.mu.Lock()
	e.cmd, e.done = cmd, done
	e.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("engine exited at start:\n%s", e.stderr.String())
		default:
		}
		if c, err := net.Dial("unix", e.Socket); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine did not answer on %s within 20 s:\n%s", e.Socket, e.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is the daemon's process ID.
func (e *Engine) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil || e.cmd.Process == nil {
		return 0
	}
	return e.cmd.Process.Pid
}

// Kill SIGKILLs the daemon (a crash, or PID 1 losing patience) and waits
// for it to be gone.
func (e *Engine) Kill(t testing.TB) {
	t.Helper()
	e.signal(t, syscall.SIGKILL)
}

// Stop asks the daemon to exit (SIGTERM) and waits.
func (e *Engine) Stop(t testing.TB) {
	t.Helper()
	e.signal(t, syscall.SIGTERM)
}

func (e *Engine) signal(t testing.TB, sig syscall.Signal) {
	e.mu.Lock()
	cmd, done := e.cmd, e.done
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("engine ignored %v for 20 s", sig)
	}
}

// Log is what the daemon printed.
func (e *Engine) Log() string {
	if e.stderr == nil {
		return ""
	}
	return e.stderr.String()
}

// Docker runs the real docker CLI against the engine.
func (e *Engine) Docker(args ...string) (string, string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(filteredEnv(), "DOCKER_HOST=unix://"+e.Socket, "DOCKER_CONFIG="+e.DockerConfig, "DOCKER_CLI_HINTS=false")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// MustDocker runs docker and fails the test on a non-zero exit.
func (e *Engine) MustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := e.Docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\nstdout: %s\nstderr: %s\nengine log tail:\n%s", strings.Join(args, " "), err, out, errOut, tail(e.Log(), 40))
	}
	return out
}

func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup removes every container (their shims outlive the engine by
// design), stops the daemon and unmounts what is left so the temp dirs can
// be deleted.
func (e *Engine) cleanup(t testing.TB) {
	if e.Pid() == 0 {
		if _, err := os.Stat(e.Bin); err == nil {
			e.Start(t)
		}
	}
	if out, _, err := e.Docker("ps", "-aq", "--no-trunc"); err == nil {
		for _, id := range strings.Fields(out) {
			e.Docker("rm", "-f", id)
		}
	}
	e.Stop(t)
	if t.Failed() {
		fmt.Fprintf(os.Stderr, "--- engine log (%s) ---\n%s\n", e.Root, tail(e.Log(), 80))
	}
	UnmountUnder(e.Root)
	UnmountUnder(e.ExecRoot)
}

// UnmountUnder detaches every mount below dir (deepest first).
func UnmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		unix.Unmount(mounts[i], unix.MNT_DETACH)
	}
}
