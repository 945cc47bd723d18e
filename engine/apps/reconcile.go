package apps

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/daemon"
)

// Engine is what reconciliation needs from the daemon; tests pass a fake.
type Engine interface {
	Containers() []daemon.Container
	// ImageID resolves a reference among the pulled images.
	ImageID(ref string) (id string, ok bool)
	Pull(ctx context.Context, ref string) (id string, err error)
	Create(name string, cfg daemon.Config, hc daemon.HostConfig) (id string, err error)
	Start(ctx context.Context, id string) error
	// Remove stops (with the container's stop timeout) and deletes the
	// container and its anonymous volumes; named volumes stay.
	Remove(ctx context.Context, id string) error
}

// Daemon adapts a daemon to Engine.
func Daemon(d *daemon.Daemon) Engine { return daemonEngine{d} }

type daemonEngine struct{ d *daemon.Daemon }

func (e daemonEngine) Containers() []daemon.Container { return e.d.Containers() }

func (e daemonEngine) ImageID(ref string) (string, bool) {
	im, err := e.d.Store.Resolve(ref)
	if err != nil {
		return "", false
	}
	return im.ID, true
}

func (e daemonEngine) Pull(ctx context.Context, ref string) (string, error) {
	im, err := e.d.Puller.Pull(ctx, ref, nil, nil)
	if err != nil {
		return "", err
	}
	return im.ID, nil
}

func (e daemonEngine) Create(name string, cfg daemon.Config, hc daemon.HostConfig) (string, error) {
	c, _, err := e.d.Create(name, cfg, hc)
	if err != nil {
		return "", err
	}
	return c.ID, nil
}

func (e daemonEngine) Start(ctx context.Context, id string) error {
	err := e.d.Start(ctx, id)
	if errors.Is(err, daemon.ErrNotModified) {
		return nil // already running
	}
	return err
}

func (e daemonEngine) Remove(ctx context.Context, id string) error {
	// Stop first so the container gets its stop signal and grace period;
	// Remove's force would kill it at once.
	if err := e.d.Stop(ctx, id, nil); err != nil && !errors.Is(err, daemon.ErrNotModified) {
		return err
	}
	return e.d.Remove(ctx, id, true, true)
}

// Reconciler makes the engine's app containers match an apps file.
type Reconciler struct {
	Engine Engine
	// Path of the apps file.
	Path string
	// Log receives one line per action; nil means slog.Default().
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound the wait before a failed pass is
	// retried (defaults 2 s and 1 min): at boot the network may not be up
	// yet, and a registry may be down for a while.
	MinBackoff, MaxBackoff time.Duration
}

func (r *Reconciler) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}

// Run reconciles now and again whenever reload fires, retrying failed
// passes with back-off, until ctx ends. A missing or invalid file changes
// nothing: running apps keep running.
func (r *Reconciler) Run(ctx context.Context, reload <-chan struct{}) {
	minB, maxB := r.MinBackoff, r.MaxBackoff
	if minB <= 0 {
		minB = 2 * time.Second
	}
	if maxB < minB {
		maxB = max(minB, time.Minute)
	}
	backoff := minB
	for {
		var retry <-chan time.Time
		f, err := Load(r.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			r.log().Info("engine: no apps file: managing no apps", "path", r.Path)
		case err != nil:
			r.log().Error("engine: apps file not applied: running apps are left as they are", "err", err)
		default:
			// A reload cancels a pass stuck in a slow pull: the new file
			// may not even want that image any more.
			pctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.Reconcile(pctx, f) }()
			select {
			case err = <-done:
				cancel()
			case <-reload:
				cancel()
				<-done
				backoff = minB
				continue
			case <-ctx.Done():
				cancel()
				<-done
				return
			}
			if err != nil && ctx.Err() == nil {
				r.log().Warn("engine: apps not all running yet: retrying", "in", backoff, "err", err)
				retry = time.After(backoff)
				backoff = min(backoff*2, maxB)
			} else if err == nil {
				r.log().Info("engine: apps up to date", "services", len(f.Services))
				backoff = minB
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-reload:
			backoff = minB
		case <-retry:
		}
	}
}

// Reconcile makes one pass: containers of services no longer in f are
// removed first (freeing their names and ports), then each service, in
// dependency order, gets its image and a running container with its
// current settings. A failing service does not stop the others; the
// errors are joined.
func (r *Reconciler) Reconcile(ctx context.Context, f *File) error {
	byApp := map[string][]daemon.Container{}
	byName := map[string]daemon.Container{}
	for _, c := range r.Engine.Containers() {
		byName[c.Name] = c
		if app, ok := c.Config.Labels[LabelApp]; ok {
			byApp[app] = append(byApp[app], c)
		}
	}
	var errs []error
	var gone []string
	for app := range byApp {
		if _, ok := f.Services[app]; !ok {
			gone = append(gone, app)
		}
	}
	sort.Strings(gone)
	for _, app := range gone {
		for _, c := range byApp[app] {
			if err := r.Engine.Remove(ctx, c.ID); err != nil {
				errs = append(errs, fmt.Errorf("app %s: remove container %s: %w", app, short(c.ID), err))
				continue
			}
			delete(byName, c.Name)
			r.log().Info("engine: app removed: no longer in the apps file", "app", app, "container", short(c.ID))
		}
	}
	for _, name := range f.Order {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if err := r.ensure(ctx, f.Services[name], byApp[name], byName); err != nil {
			errs = append(errs, fmt.Errorf("app %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// ensure gives service s one running container with its current settings.
func (r *Reconciler) ensure(ctx context.Context, s *Service, have []daemon.Container, byName map[string]daemon.Container) error {
	spec, err := s.Spec()
	if err != nil {
		return err
	}
	imageID, ok := r.Engine.ImageID(s.Image)
	if !ok {
		r.log().Info("engine: app pulling image", "app", s.Name, "image", s.Image)
		if imageID, err = r.Engine.Pull(ctx, s.Image); err != nil {
			return err // the puller's errors name the image
		}
		r.log().Info("engine: app pulled image", "app", s.Name, "image", s.Image, "id", short(imageID))
	}
	// The newest matching container is kept; any other is replaced. The
	// new image is pulled before the old container stops, so a failed
	// download never leaves the app down.
	sort.Slice(have, func(i, j int) bool { return have[i].Created.After(have[j].Created) })
	var keep *daemon.Container
	for i := range have {
		c := &have[i]
		if keep == nil && c.Config.Labels[LabelHash] == spec.Hash && c.ImageID == imageID {
			keep = c
			continue
		}
		why := "its settings changed"
		if c.Config.Labels[LabelHash] == spec.Hash {
			why = "its image changed"
		}
		if err := r.Engine.Remove(ctx, c.ID); err != nil {
			return fmt.Errorf("replace container %s: %w", short(c.ID), err)
		}
		delete(byName, c.Name)
		r.log().Info("engine: app container removed for re-creation", "app", s.Name, "container", short(c.ID), "reason", why)
	}
	if keep != nil {
		if !wantsStart(keep) {
			return nil
		}
		if err := r.Engine.Start(ctx, keep.ID); err != nil {
			return fmt.Errorf("start container %s: %w", short(keep.ID), err)
		}
		r.log().Info("engine: app started", "app", s.Name, "container", short(keep.ID))
		return nil
	}
	if other, taken := byName[s.Name]; taken {
		return fmt.Errorf("the container name %q is taken by container %s, which the apps file does not manage: remove it (docker rm -f %s)", s.Name, short(other.ID), s.Name)
	}
	id, err := r.Engine.Create(s.Name, spec.Config, spec.HostConfig)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	r.log().Info("engine: app created", "app", s.Name, "container", short(id), "image", s.Image)
	if err := r.Engine.Start(ctx, id); err != nil {
		return fmt.Errorf("start container %s: %w", short(id), err)
	}
	r.log().Info("engine: app started", "app", s.Name, "container", short(id))
	return nil
}

// wantsStart says whether reconciliation should start an app container
// that matches the file: one never started (a power cut between create and
// start), or one whose policy wants it up and that nobody stopped through
// the API. Restart policies handle everything else.
func wantsStart(c *daemon.Container) bool {
	st := c.State
	if st.Running || st.Restarting || c.ManuallyStopped {
		return false
	}
	if st.Status == "created" {
		return true
	}
	switch c.HostConfig.RestartPolicy.Name {
	case "always", "unless-stopped":
		return true
	}
	return false
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
