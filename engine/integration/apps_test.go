package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
)

// TestTheAppsFileIsRunKeptRunningAndFollowed drives the engine only
// through its apps file, as a device with no shell is driven: the services
// are pulled and started, a changed file (SIGHUP) re-creates what changed
// and removes what was dropped, and after a reboot the same containers
// come back by their restart policy without being re-created.
func TestTheAppsFileIsRunKeptRunningAndFollowed(t *testing.T) {
	reg := enginetest.NewRegistry(t, nil)
	v1ref := reg.Push(t, "test/app:1", enginetest.AppImage(t, enginetest.Amd64))
	v2ref := reg.Push(t, "test/app:2", enginetest.AppImage(t, enginetest.Amd64, enginetest.File{Name: "VERSION", Body: []byte("2\n")}))
	appsFile := filepath.Join(t.TempDir(), "apps.yaml")
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(appsFile, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`
services:
  web:
    image: ` + v1ref + `
    command: serve 80
    hostname: webhost
    ports: ["18090:80"]
    environment: {GREETING: hello}
  worker:
    image: ` + v1ref + `
    depends_on: [web]
`)
	e := enginetest.NewEngine(t, "", "--apps", appsFile)
	e.Start(t)
	// A container of the user's own, made through the API.
	e.MustDocker(t, "run", "-d", "--name", "mine", v1ref)

	enginetest.WaitFor(t, 30*time.Second, "the web app's published port", func() bool {
		got, err := dialLine("127.0.0.1:18090")
		return err == nil && got == "hello from webhost"
	})
	waitState(t, e, "worker", "running")
	if got := format(t, e, "web", `{{index .Config.Labels "org.bulkhead.app"}} {{.HostConfig.RestartPolicy.Name}}`); got != "web always" {
		t.Errorf("web's label and restart policy: %q, want \"web always\"", got)
	}
	if env := e.MustDocker(t, "exec", "web", "/testapp", "env"); !strings.Contains(env, "GREETING=hello") {
		t.Errorf("web's environment lacks GREETING=hello:\n%s", env)
	}
	firstWeb := format(t, e, "web", "{{.Id}}")

	// A new release: web moves to :2, worker is dropped.
	write(`
services:
  web:
    image: ` + v2ref + `
    command: ["serve", "80"]
    hostname: webhost
    ports: ["18090:80"]
    environment: {GREETING: hello}
`)
	syscall.Kill(e.Pid(), syscall.SIGHUP)
	enginetest.WaitFor(t, 30*time.Second, "web on the new image and worker gone", func() bool {
		img, _, err := e.Docker("inspect", "--format", "{{.Config.Image}}", "web")
		_, _, werr := e.Docker("inspect", "worker")
		return err == nil && strings.TrimSpace(img) == v2ref && werr != nil
	})
	waitState(t, e, "web", "running")
	if got := e.MustDocker(t, "exec", "web", "/testapp", "cat", "/VERSION"); got != "2\n" {
		t.Errorf("web runs %q, want the :2 image", got)
	}
	secondWeb := format(t, e, "web", "{{.Id}}")
	if secondWeb == firstWeb {
		t.Error("web was not re-created for its new image")
	}
	if got := format(t, e, "mine", "{{.State.Status}}"); got != "running" {
		t.Errorf("the user's own container is %s, want running", got)
	}

	simulateReboot(t, e)
	e.Start(t)
	enginetest.WaitFor(t, 30*time.Second, "the web app after the reboot", func() bool {
		got, err := dialLine("127.0.0.1:18090")
		return err == nil && got == "hello from webhost"
	})
	if got := format(t, e, "web", "{{.Id}}"); got != secondWeb {
		t.Errorf("web was re-created at boot (%s, was %s): its restart policy should have brought it back", got[:12], secondWeb[:12])
	}
	if !strings.Contains(e.Log(), `started by its restart policy" container=web`) {
		t.Errorf("the engine did not log web's restart at boot:\n%s", e.Log())
	}

	// A file that does not parse changes nothing.
	write("services:\n  web:\n    imgae: typo\n")
	syscall.Kill(e.Pid(), syscall.SIGHUP)
	enginetest.WaitFor(t, 10*time.Second, "the engine to report the bad file", func() bool {
		return strings.Contains(e.Log(), "services.web.imgae is not a key this engine knows")
	})
	if got := format(t, e, "web", "{{.State.Status}}"); got != "running" {
		t.Errorf("after a bad file web is %s, want running", got)
	}
}
