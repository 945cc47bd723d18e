package reaper

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReaperDeliversExitsAndReapsOrphans(t *testing.T) {
	// Become a subreaper so the grandchild below is reparented to this test
	// process, as orphans are to PID 1 on the device.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	r := New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	c, err := r.Start(exec.Command("/bin/sh", "-c", "sleep 0.2 </dev/null >/dev/null 2>&1 & exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-c.Done():
		if !e.Status.Exited() || e.Status.ExitStatus() != 3 || e.Pid != c.Pid {
			t.Fatalf("exit = %v (pid %d), want exit status 3 of pid %d", e, e.Pid, c.Pid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit delivered")
	}

	deadline := time.Now().Add(10 * time.Second)
	for r.Orphans() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the orphaned sleep was never reaped")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSignalReachesTheProcessGroup(t *testing.T) {
	r := New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	c, err := r.Start(exec.Command("/bin/sh", "-c", "sleep 30; exit 0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-c.Done():
		if !e.Status.Signaled() || e.Status.Signal() != unix.SIGTERM {
			t.Fatalf("exit = %v, want killed by SIGTERM", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("child survived SIGTERM")
	}
	// Signalling a reaped group is quietly a no-op.
	if err := c.Signal(unix.SIGTERM); err != nil {
		t.Errorf("signal after exit: %v", err)
	}
}
