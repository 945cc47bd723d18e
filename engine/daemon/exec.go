package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bulkhead-os/bulkhead/engine/durable"
)

// ExecConfig is docker's exec create body.
type ExecConfig struct {
	User         string
	Privileged   bool
	Tty          bool
	AttachStdin  bool
	AttachStdout bool
	AttachStderr bool
	Env          []string
	Cmd          []string
	WorkingDir   string
}

type execInstance struct {
	ID          string
	ContainerID string
	Config      ExecConfig

	mu       sync.Mutex
	Running  bool
	ExitCode *int
	Pid      int
	started  bool
}

// ExecState is what exec inspect reports.
type ExecState struct {
	ID          string
	ContainerID string
	Running     bool
	ExitCode    *int
	Pid         int
	Config      ExecConfig
}

// ExecCreate prepares a process to run in a running container.
func (d *Daemon) ExecCreate(ref string, cfg ExecConfig) (string, error) {
	c, err := d.get(ref)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	running, id := c.State.Running, c.ID
	c.mu.Unlock()
	if !running {
		return "", fmt.Errorf("%w: container %s is not running", ErrConflict, ref)
	}
	if len(cfg.Cmd) == 0 {
		return "", fmt.Errorf("%w: exec needs a command", ErrInvalid)
	}
	e := &execInstance{ID: durable.RandomID(32), ContainerID: id, Config: cfg}
	d.mu.Lock()
	d.execs[e.ID] = e
	d.mu.Unlock()
	return e.ID, nil
}

// ExecInspect reports an exec's state.
func (d *Daemon) ExecInspect(id string) (ExecState, error) {
	d.mu.Lock()
	e, ok := d.execs[id]
	d.mu.Unlock()
	if !ok {
		return ExecState{}, fmt.Errorf("%w: no such exec instance: %s", ErrNotFound, id)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return ExecState{ID: e.ID, ContainerID: e.ContainerID, Running: e.Running, ExitCode: e.ExitCode, Pid: e.Pid, Config: e.Config}, nil
}

// ExecStart runs the exec's process through `runc exec` and streams its
// output; it returns when the process exits. stdin may be nil.
func (d *Daemon) ExecStart(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer) error {
	d.mu.Lock()
	e, ok := d.execs[id]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: no such exec instance: %s", ErrNotFound, id)
	}
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return fmt.Errorf("%w: exec %s has already run", ErrConflict, id[:12])
	}
	e.started = true
	e.mu.Unlock()
	c, err := d.get(e.ContainerID)
	if err != nil {
		return err
	}
	var spec specs.Spec
	if err := durable.ReadJSON(filepath.Join(c.dir, "bundle", "config.json"), &spec); err != nil {
		return fmt.Errorf("exec: read container spec: %w", err)
	}
	proc := *spec.Process
	proc.Args = e.Config.Cmd
	proc.Terminal = false // no pty support: the output is a plain stream
	proc.Env = mergeEnv(spec.Process.Env, e.Config.Env)
	if e.Config.WorkingDir != "" {
		proc.Cwd = e.Config.WorkingDir
	}
	if e.Config.User != "" {
		im, err := d.Store.Resolve(c.ImageID)
		if err != nil {
			return err
		}
		var layerDirs []string
		for i := len(im.Layers) - 1; i >= 0; i-- {
			layerDirs = append(layerDirs, d.Store.LayerDir(im.Layers[i].DiffID))
		}
		uid, gid, extra, _, err := d.lookupUser(layerDirs, e.Config.User)
		if err != nil {
			return err
		}
		proc.User = specs.User{UID: uid, GID: gid, AdditionalGids: extra}
	}
	procFile := filepath.Join(c.dir, "bundle", "exec-"+id[:12]+".json")
	if err := durable.WriteJSON(procFile, &proc, 0o600); err != nil {
		return err
	}
	defer os.Remove(procFile)
	cmd := d.runc.Command(ctx, "exec", "--process", procFile, e.ContainerID)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if stdout == nil {
		cmd.Stdout = io.Discard
	}
	if stderr == nil {
		cmd.Stderr = io.Discard
	}
	e.mu.Lock()
	e.Running = true
	e.mu.Unlock()
	err = cmd.Start()
	if err == nil {
		e.mu.Lock()
		e.Pid = cmd.Process.Pid
		e.mu.Unlock()
		err = cmd.Wait()
	}
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			err = nil
		} else {
			code = 126
		}
	}
	e.mu.Lock()
	e.Running = false
	e.ExitCode = &code
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("exec in %s: %w", c.Name, err)
	}
	return nil
}

// execCleanup forgets the execs of a removed container.
func (d *Daemon) execCleanup(containerID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, e := range d.execs {
		if strings.HasPrefix(e.ContainerID, containerID) {
			delete(d.execs, id)
		}
	}
}
