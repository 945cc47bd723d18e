// Package reaper is the one place in PID 1 that collects exit statuses.
//
// PID 1 inherits every orphaned process and must wait for them, or they stay
// zombies forever. Reaping with wait4(-1) takes the status of any child,
// including the services PID 1 started itself, so os/exec's Cmd.Wait cannot
// be used next to it (it would fail with ECHILD). Instead services are
// started through Reaper.Start, and the reaper hands each one's status to
// whoever started it; the statuses of orphans are dropped.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is how a child ended.
type Exit struct {
	Pid    int
	Status unix.WaitStatus
}

// String describes the exit like a shell would.
func (e Exit) String() string {
	switch {
	case e.Status.Exited():
		return fmt.Sprintf("exit status %d", e.Status.ExitStatus())
	case e.Status.Signaled():
		return fmt.Sprintf("killed by %v", e.Status.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(e.Status))
}

// Success reports whether the child exited with status 0.
func (e Exit) Success() bool { return e.Status.Exited() && e.Status.ExitStatus() == 0 }

// Child is a process started through a Reaper.
type Child struct {
	// Pid is its process ID, also its process group ID (children start in a
	// session of their own).
	Pid  int
	proc *os.Process
	done chan Exit
}

// Done delivers the child's exit once; it is buffered, so nobody has to listen.
func (c *Child) Done() <-chan Exit { return c.done }

// Signal sends sig to the child's whole process group, so that helpers it
// forked stop with it. The kernel does not reuse a PID while it still names a
// live process group, so this cannot hit a stranger.
func (c *Child) Signal(sig unix.Signal) error {
	if err := unix.Kill(-c.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, c.Pid, err)
	}
	return nil
}

// Reaper reaps all children of this process.
type Reaper struct {
	// mu is held across fork+registration in Start and across each
	// wait4+dispatch in reap, so an exit can never be collected before its
	// child is registered.
	mu       sync.Mutex
	children map[int]*Child
	// Orphans counts reaped processes nobody registered (reparented to us).
	orphans int
}

// New returns a Reaper; call Run to make it reap.
func New() *Reaper {
	return &Reaper{children: map[int]*Child{}}
}

// Start starts cmd in a new session and registers it. cmd's standard streams
// must be nil or *os.File: other writers make os/exec start copying
// goroutines that only Cmd.Wait would stop, and Wait is never called.
func (r *Reaper) Start(cmd *exec.Cmd) (*Child, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &unix.SysProcAttr{}
	}
	// A session of its own: no controlling terminal, and its own process
	// group for Child.Signal.
	cmd.SysProcAttr.Setsid = true
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Child{Pid: cmd.Process.Pid, proc: cmd.Process, done: make(chan Exit, 1)}
	r.children[c.Pid] = c
	return c, nil
}

// Run reaps children whenever SIGCHLD arrives, and every few seconds in case
// a signal was coalesced away, until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		r.Reap()
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-tick.C:
		}
	}
}

// Reap collects every child that has exited, without blocking.
func (r *Reaper) Reap() {
	for {
		r.mu.Lock()
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			r.mu.Unlock()
			continue
		}
		if pid <= 0 || err != nil {
			r.mu.Unlock()
			return
		}
		if c, ok := r.children[pid]; ok {
			delete(r.children, pid)
			c.done <- Exit{Pid: pid, Status: ws}
			// Frees the pidfd os/exec keeps for the process.
			c.proc.Release()
		} else {
			r.orphans++
		}
		r.mu.Unlock()
	}
}

// Orphans returns how many unregistered processes have been reaped.
func (r *Reaper) Orphans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}
