package service

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/rootfs/logfile"
	"github.com/bulkhead-os/bulkhead/rootfs/reaper"
)

// Supervisor runs a set of services. Set the fields, then call Start once
// and Stop once.
type Supervisor struct {
	// Reaper starts the processes and reports their exits.
	Reaper *reaper.Reaper
	// Console receives every output line as "<name>: <line>".
	Console io.Writer
	// LogDir, if set, gets <name>.log per service, rotated at LogSize bytes
	// keeping LogFiles files (defaults 1 MiB and 3).
	LogDir   string
	LogSize  int64
	LogFiles int
	// Backoff is the restart policy; zero means DefaultBackoff.
	Backoff Backoff
	// Clock defaults to the real one.
	Clock Clock
	// Env is the services' environment; nil means this process's.
	Env []string
	// Log receives lifecycle lines (started, exited, restarting).
	Log *slog.Logger

	stopping chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	services []*svc
}

// Status is a snapshot of one service.
type Status struct {
	Name string
	// Pid is the running process, 0 while waiting to restart.
	Pid int
	// Starts counts successful starts.
	Starts int
	// Delays are the back-off waits so far, oldest first.
	Delays []time.Duration
	// LastExit describes the last exit, or the last failure to start.
	LastExit string
}

type svc struct {
	spec  Spec
	child *reaper.Child
	log   *logfile.Writer
	st    Status
}

// Start starts every service and returns; each then lives in its own
// restart loop until Stop.
func (s *Supervisor) Start(specs []Spec) {
	if s.Backoff == (Backoff{}) {
		s.Backoff = DefaultBackoff
	}
	if s.Clock == nil {
		s.Clock = realClock{}
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.Console == nil {
		s.Console = io.Discard
	}
	if s.LogSize <= 0 {
		s.LogSize = 1 << 20
	}
	if s.LogFiles <= 0 {
		s.LogFiles = 3
	}
	s.stopping = make(chan struct{})
	for _, spec := range specs {
		v := &svc{spec: spec, st: Status{Name: spec.Name}}
		s.mu.Lock()
		s.services = append(s.services, v)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.loop(v)
	}
}

// Statuses returns a snapshot of every service.
func (s *Supervisor) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, len(s.services))
	for i, v := range s.services {
		out[i] = v.st
		out[i].Delays = append([]time.Duration(nil), v.st.Delays...)
	}
	return out
}

func (s *Supervisor) loop(v *svc) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		started := s.Clock.Now()
		exit, err := s.run(v)
		uptime := s.Clock.Now().Sub(started)
		s.mu.Lock()
		v.child, v.st.Pid = nil, 0
		if err != nil {
			v.st.LastExit = err.Error()
		} else {
			v.st.LastExit = exit.String()
		}
		s.mu.Unlock()
		select {
		case <-s.stopping:
			return
		default:
		}
		delay = s.Backoff.Next(delay, uptime)
		s.mu.Lock()
		v.st.Delays = append(v.st.Delays, delay)
		s.mu.Unlock()
		if err != nil {
			s.Log.Warn("service failed to start", "service", v.spec.Name, "err", err, "retry", delay)
		} else {
			s.Log.Warn("service exited", "service", v.spec.Name, "status", exit.String(),
				"uptime", uptime, "restart", delay)
		}
		select {
		case <-s.stopping:
			return
		case <-s.Clock.After(delay):
		}
	}
}

// run starts the service once and waits for it to end.
func (s *Supervisor) run(v *svc) (reaper.Exit, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return reaper.Exit{}, err
	}
	cmd := exec.Command(v.spec.Path, v.spec.Args...)
	cmd.Dir = "/"
	cmd.Env = s.Env
	cmd.Stdout, cmd.Stderr = w, w

	s.mu.Lock()
	select {
	case <-s.stopping:
		s.mu.Unlock()
		r.Close()
		w.Close()
		return reaper.Exit{}, errors.New("stopping")
	default:
	}
	child, err := s.Reaper.Start(cmd)
	if err == nil {
		v.child, v.st.Pid = child, child.Pid
		v.st.Starts++
	}
	s.mu.Unlock()
	// The child has its own copy of the write end; ours must go, or the
	// reader would never see EOF.
	w.Close()
	if err != nil {
		r.Close()
		return reaper.Exit{}, err
	}
	s.Log.Debug("service started", "service", v.spec.Name, "pid", child.Pid)
	pumped := make(chan struct{})
	go func() {
		s.pump(v, r)
		close(pumped)
	}()
	exit := <-child.Done()
	// Wait for the output until the pipe closes, but not for grandchildren
	// that keep it open after the service itself has gone.
	select {
	case <-pumped:
	case <-time.After(time.Second):
	}
	return exit, nil
}

// pump copies the service's output line by line until the pipe closes.
func (s *Supervisor) pump(v *svc, r *os.File) {
	defer r.Close()
	file := s.logFile(v)
	prefix := []byte(v.spec.Name + ": ")
	br := bufio.NewReaderSize(r, 4096)
	for {
		// ReadSlice returns at most the buffer size; a longer line is cut
		// into several rather than stalling the service on a full pipe.
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				line = append(line, '\n')
			}
			s.Console.Write(append(append([]byte(nil), prefix...), line...))
			if file != nil {
				var b bytes.Buffer
				b.WriteString(s.Clock.Now().UTC().Format("2006-01-02T15:04:05.000Z "))
				b.Write(line)
				file.Write(b.Bytes())
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// logFile opens the service's log file on first use; when the data
// partition is unusable the service still runs, logging to the console only.
func (s *Supervisor) logFile(v *svc) *logfile.Writer {
	if s.LogDir == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.log == nil {
		w, err := logfile.Open(filepath.Join(s.LogDir, v.spec.Name+".log"), s.LogSize, s.LogFiles)
		if err != nil {
			s.Log.Warn("service log file unavailable, console only", "service", v.spec.Name, "err", err)
			return nil
		}
		v.log = w
	}
	return v.log
}

// Stop ends supervision: no more restarts, SIGTERM to every service's
// process group, SIGKILL to what is left after grace, and it returns once
// all are reaped (or a few seconds after SIGKILL, for processes stuck in the
// kernel).
func (s *Supervisor) Stop(grace time.Duration) {
	s.mu.Lock()
	close(s.stopping)
	s.signalAll(unix.SIGTERM)
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.mu.Lock()
		s.Log.Warn("services still running after SIGTERM, killing them", "grace", grace)
		s.signalAll(unix.SIGKILL)
		s.mu.Unlock()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.Log.Error("services did not die after SIGKILL")
		}
	}
	s.mu.Lock()
	for _, v := range s.services {
		if v.log != nil {
			v.log.Close()
		}
	}
	s.mu.Unlock()
}

func (s *Supervisor) signalAll(sig unix.Signal) {
	for _, v := range s.services {
		if v.child != nil {
			if err := v.child.Signal(sig); err != nil {
				s.Log.Warn("signal service", "service", v.spec.Name, "err", err)
			}
		}
	}
}
