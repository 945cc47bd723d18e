package apps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/daemon"
)

// fakeEngine keeps containers in memory and records every call.
type fakeEngine struct {
	mu         sync.Mutex
	images     map[string]string // ref -> image ID
	registry   map[string]string // what a pull of ref gives
	pullErr    error
	startErr   error
	containers map[string]*daemon.Container
	calls      []string
	next       int
}

func newFake() *fakeEngine {
	return &fakeEngine{images: map[string]string{}, registry: map[string]string{}, containers: map[string]*daemon.Container{}}
}

func (f *fakeEngine) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeEngine) Containers() []daemon.Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []daemon.Container
	for _, c := range f.containers {
		out = append(out, *c)
	}
	return out
}

func (f *fakeEngine) ImageID(ref string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.images[ref]
	return id, ok
}

func (f *fakeEngine) Pull(ctx context.Context, ref string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("pull %s", ref)
	if f.pullErr != nil {
		return "", fmt.Errorf("pull %s: %w", ref, f.pullErr)
	}
	id, ok := f.registry[ref]
	if !ok {
		return "", fmt.Errorf("pull %s: not in the registry", ref)
	}
	f.images[ref] = id
	return id, nil
}

func (f *fakeEngine) Create(name string, cfg daemon.Config, hc daemon.HostConfig) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.containers {
		if c.Name == name {
			return "", fmt.Errorf("%w: name %s in use", daemon.ErrConflict, name)
		}
	}
	f.next++
	id := fmt.Sprintf("%064d", f.next)
	f.containers[id] = &daemon.Container{ID: id, Name: name, Created: time.Unix(int64(f.next), 0), ImageID: f.images[cfg.Image],
		Config: cfg, HostConfig: hc, State: daemon.State{Status: "created"}}
	f.record("create %s", name)
	return id, nil
}

func (f *fakeEngine) Start(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[id]
	f.record("start %s", c.Name)
	if f.startErr != nil {
		return f.startErr
	}
	c.State = daemon.State{Status: "running", Running: true}
	return nil
}

func (f *fakeEngine) Remove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("remove %s", f.containers[id].Name)
	delete(f.containers, id)
	return nil
}

func (f *fakeEngine) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeEngine) byName(name string) *daemon.Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.containers {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func mustParse(t *testing.T, doc string) *File {
	t.Helper()
	f, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const twoApps = `
services:
  web:
    image: reg.example/web:1
    ports: ["8080:80"]
    depends_on: [db]
  db:
    image: reg.example/db:1
`

func TestReconcileCreatesAndStartsEveryServiceDependenciesFirst(t *testing.T) {
	e := newFake()
	e.registry["reg.example/web:1"] = "sha256:web1"
	e.registry["reg.example/db:1"] = "sha256:db1"
	r := &Reconciler{Engine: e, Log: quiet()}
	if err := r.Reconcile(context.Background(), mustParse(t, twoApps)); err != nil {
		t.Fatal(err)
	}
	want := []string{"pull reg.example/db:1", "create db", "start db", "pull reg.example/web:1", "create web", "start web"}
	if got := e.takeCalls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	web := e.byName("web")
	if web.Config.Labels[LabelApp] != "web" || web.HostConfig.PortBindings["80/tcp"][0].HostPort != "8080" {
		t.Errorf("web = %+v", web)
	}
}

func TestReconcileLeavesMatchingRunningAppsAlone(t *testing.T) {
	e := newFake()
	e.registry["reg.example/web:1"] = "sha256:web1"
	e.registry["reg.example/db:1"] = "sha256:db1"
	r := &Reconciler{Engine: e, Log: quiet()}
	f := mustParse(t, twoApps)
	if err := r.Reconcile(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	e.takeCalls()
	// As after a reboot: restart policies have already started them.
	if err := r.Reconcile(context.Background(), mustParse(t, twoApps)); err != nil {
		t.Fatal(err)
	}
	if got := e.takeCalls(); len(got) != 0 {
		t.Errorf("a second pass over an unchanged file did %q", got)
	}
}

func TestReconcileStartsAppsThatShouldRunAndRespectsManualStops(t *testing.T) {
	for _, tc := range []struct {
		name    string
		state   daemon.State
		policy  string
		manual  bool
		started bool
	}{
		{"created but never started (power cut)", daemon.State{Status: "created"}, "always", false, true},
		{"exited under always", daemon.State{Status: "exited"}, "always", false, true},
		{"exited under unless-stopped", daemon.State{Status: "exited"}, "unless-stopped", false, true},
		{"stopped through the API", daemon.State{Status: "exited"}, "always", true, false},
		{"done under restart no", daemon.State{Status: "exited"}, "no", false, false},
		{"waiting for its restart back-off", daemon.State{Status: "restarting", Restarting: true}, "always", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newFake()
			e.registry["reg.example/app:1"] = "sha256:app1"
			r := &Reconciler{Engine: e, Log: quiet()}
			f := mustParse(t, "services:\n  app:\n    image: reg.example/app:1\n    restart: "+tc.policy+"\n")
			if err := r.Reconcile(context.Background(), f); err != nil {
				t.Fatal(err)
			}
			c := e.byName("app")
			c.State, c.ManuallyStopped = tc.state, tc.manual
			e.takeCalls()
			if err := r.Reconcile(context.Background(), f); err != nil {
				t.Fatal(err)
			}
			got := e.takeCalls()
			if started := reflect.DeepEqual(got, []string{"start app"}); started != tc.started || (!started && len(got) != 0) {
				t.Errorf("calls = %q, want a start: %v", got, tc.started)
			}
		})
	}
}

func TestReconcileRecreatesChangedAppsAfterTheNewImageIsPulled(t *testing.T) {
	e := newFake()
	e.registry["reg.example/web:1"] = "sha256:web1"
	e.registry["reg.example/db:1"] = "sha256:db1"
	r := &Reconciler{Engine: e, Log: quiet()}
	if err := r.Reconcile(context.Background(), mustParse(t, twoApps)); err != nil {
		t.Fatal(err)
	}
	old := e.byName("web").ID
	e.takeCalls()

	// A new tag that the registry does not have yet: the running app stays.
	next := strings.Replace(twoApps, "web:1", "web:2", 1)
	err := r.Reconcile(context.Background(), mustParse(t, next))
	if err == nil || !strings.Contains(err.Error(), "app web: pull reg.example/web:2") {
		t.Fatalf("Reconcile = %v, want the pull error", err)
	}
	if e.byName("web").ID != old {
		t.Fatal("the old container went away although the new image was not there")
	}
	e.takeCalls()

	e.registry["reg.example/web:2"] = "sha256:web2"
	if err := r.Reconcile(context.Background(), mustParse(t, next)); err != nil {
		t.Fatal(err)
	}
	want := []string{"pull reg.example/web:2", "remove web", "create web", "start web"}
	if got := e.takeCalls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if c := e.byName("web"); c.ID == old || c.ImageID != "sha256:web2" {
		t.Errorf("web = %s on %s", c.ID, c.ImageID)
	}

	// The tag moved locally (someone pulled a newer web:2): re-created too.
	e.images["reg.example/web:2"] = "sha256:web2b"
	if err := r.Reconcile(context.Background(), mustParse(t, next)); err != nil {
		t.Fatal(err)
	}
	if got := e.takeCalls(); !reflect.DeepEqual(got, []string{"remove web", "create web", "start web"}) {
		t.Errorf("calls after the tag moved = %q", got)
	}
}

func TestReconcileRemovesDroppedAppsButNeverOtherContainers(t *testing.T) {
	e := newFake()
	e.registry["reg.example/web:1"] = "sha256:web1"
	e.registry["reg.example/db:1"] = "sha256:db1"
	r := &Reconciler{Engine: e, Log: quiet()}
	if err := r.Reconcile(context.Background(), mustParse(t, twoApps)); err != nil {
		t.Fatal(err)
	}
	// A container made through the Docker API.
	e.images["mine:1"] = "sha256:mine"
	if _, err := e.Create("mine", daemon.Config{Image: "mine:1"}, daemon.HostConfig{}); err != nil {
		t.Fatal(err)
	}
	e.takeCalls()
	if err := r.Reconcile(context.Background(), mustParse(t, "services: {}\n")); err != nil {
		t.Fatal(err)
	}
	got := e.takeCalls()
	sort.Strings(got)
	if want := []string{"remove db", "remove web"}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if e.byName("mine") == nil {
		t.Error("a container the apps file does not manage was removed")
	}
}

func TestReconcileRefusesToTakeTheNameOfAContainerItDoesNotManage(t *testing.T) {
	e := newFake()
	e.registry["reg.example/app:1"] = "sha256:app1"
	e.images["mine:1"] = "sha256:mine"
	if _, err := e.Create("app", daemon.Config{Image: "mine:1"}, daemon.HostConfig{}); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Engine: e, Log: quiet()}
	err := r.Reconcile(context.Background(), mustParse(t, "services:\n  app:\n    image: reg.example/app:1\n  other:\n    image: reg.example/app:1\n"))
	if err == nil || !strings.Contains(err.Error(), `app app: the container name "app" is taken`) || !strings.Contains(err.Error(), "docker rm -f app") {
		t.Fatalf("Reconcile = %v", err)
	}
	if e.byName("other") == nil {
		t.Error("one failing service kept the others from starting")
	}
}

func TestRunRetriesUntilTheRegistryAnswersAndIgnoresBadFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "apps.yaml")
	e := newFake()
	e.pullErr = errors.New("dial tcp 10.0.2.2:5000: connect: network is unreachable")
	e.registry["reg.example/app:1"] = "sha256:app1"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{}, 1)
	r := &Reconciler{Engine: e, Path: path, Log: quiet(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	done := make(chan struct{})
	go func() { r.Run(ctx, reload); close(done) }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// No file yet: nothing happens until a reload finds one.
	time.Sleep(30 * time.Millisecond)
	if got := e.takeCalls(); len(got) != 0 {
		t.Fatalf("without a file: %q", got)
	}
	os.WriteFile(path, []byte("services:\n  app:\n    image: reg.example/app:1\n"), 0o644)
	reload <- struct{}{}
	waitFor("a few failed pulls", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.calls) >= 3
	})
	e.mu.Lock()
	e.pullErr = nil // the network came up
	e.mu.Unlock()
	waitFor("the app to run", func() bool { c := e.byName("app"); return c != nil && c.State.Running })

	// A broken file changes nothing.
	os.WriteFile(path, []byte("services:\n  app:\n    imag: typo\n"), 0o644)
	e.takeCalls()
	reload <- struct{}{}
	time.Sleep(50 * time.Millisecond)
	if got := e.takeCalls(); len(got) != 0 || e.byName("app") == nil {
		t.Errorf("a broken file led to %q", got)
	}
	cancel()
	<-done
}
