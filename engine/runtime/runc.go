// Package runtime turns a container's settings into an OCI runtime spec
// and drives runc.
//
// It owns the spec (namespaces, mounts, capabilities, devices, cgroup
// resources, masked paths) and the runc command lines. It must not keep
// container state, pick addresses or mount root filesystems: the daemon
// and the shim do, and pass paths in.
package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Runc runs the runc binary with a fixed state directory.
type Runc struct {
	Binary string // path to runc
	Root   string // runc --root: container state, on tmpfs so a reboot clears it
}

// Command builds a runc invocation.
func (r *Runc) Command(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"--root", r.Root}, args...)
	return exec.CommandContext(ctx, r.Binary, all...)
}

func (r *Runc) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := r.Command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		return out, fmt.Errorf("runc %s: %w: %s", args[0], err, msg)
	}
	return out, nil
}

// Check verifies that runc can be executed and returns its version line.
func (r *Runc) Check() (string, error) {
	out, err := exec.Command(r.Binary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("runc at %s does not run: %w (install runc, or point --runc at it)", r.Binary, err)
	}
	return strings.SplitN(string(out), "\n", 2)[0], nil
}

// State is runc's view of a container.
type State struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"` // created, running, stopped, paused
}

// State asks runc about a container; a container runc does not know
// returns an error.
func (r *Runc) State(ctx context.Context, id string) (*State, error) {
	out, err := r.run(ctx, "state", id)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("runc state %s: %w", id, err)
	}
	return &s, nil
}

// Start runs the user process of a created container.
func (r *Runc) Start(ctx context.Context, id string) error {
	_, err := r.run(ctx, "start", id)
	return err
}

// Kill sends sig to the container's init process, or to every process
// of it when all is set.
func (r *Runc) Kill(ctx context.Context, id string, sig int, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	_, err := r.run(ctx, append(args, id, strconv.Itoa(sig))...)
	return err
}

// Delete removes runc's state of a container (force kills it first).
func (r *Runc) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	_, err := r.run(ctx, append(args, id)...)
	return err
}

// Exists reports whether runc has state for id.
func (r *Runc) Exists(id string) bool {
	_, err := os.Stat(r.Root + "/" + id)
	return err == nil
}
