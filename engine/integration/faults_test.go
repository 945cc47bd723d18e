package integration

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
)

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestKillingTheEngineDuringAPullLeavesNoPartialImage(t *testing.T) {
	e, reg, _ := setup(t)
	big, _ := random.Layer(3<<20, types.OCILayer)
	small := enginetest.LayerOf(t, enginetest.File{Name: "small", Body: []byte("x")})
	ref := reg.Push(t, "test/big:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{Cmd: []string{"/x"}}, small, big))
	staging := filepath.Join(e.Root, "image", "tmp")
	layers := filepath.Join(e.Root, "image", "layers", "sha256")

	reg.Faults.Throttle(1 << 20) // 3 s for the big layer
	pullCmd := exec.Command("docker", "pull", ref)
	pullCmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+e.Socket, "DOCKER_CONFIG="+e.DockerConfig)
	if err := pullCmd.Start(); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, 20*time.Second, "one layer committed and one being extracted", func() bool {
		return len(dirEntries(t, layers)) >= 1 && len(dirEntries(t, staging)) >= 1
	})
	e.Kill(t)
	pullCmd.Wait()
	if len(dirEntries(t, staging)) == 0 {
		t.Fatal("the kill came too late: nothing was being extracted")
	}

	e.Start(t)
	if out := e.MustDocker(t, "images", "-q"); out != "" {
		t.Errorf("a partial image is visible after the crash: %q", out)
	}
	if _, _, err := e.Docker("image", "inspect", ref); err == nil {
		t.Error("image inspect finds the interrupted image")
	}
	if left := dirEntries(t, staging); len(left) != 0 {
		t.Errorf("staging data leaked across the restart: %v", left)
	}
	reg.Faults.Throttle(0)
	before := reg.Faults.BlobGets.Load()
	out := e.MustDocker(t, "pull", ref)
	if !strings.Contains(out, "Already exists") || !strings.Contains(out, "Downloaded newer image") {
		t.Errorf("re-pull did not resume from the committed layer:\n%s", out)
	}
	if n := reg.Faults.BlobGets.Load() - before; n != 2 { // config + the big layer
		t.Errorf("re-pull fetched %d blobs, want 2", n)
	}
}

func TestContainersKeepRunningWhenTheEngineIsKilledAndAreManagedAgain(t *testing.T) {
	e, _, ref := setup(t)
	e.MustDocker(t, "run", "-d", "--name", "web", "-h", "web", "-p", "18081:80", ref, "serve", "80")
	e.MustDocker(t, "run", "-d", "--name", "ticker", ref, "ticker", "0")
	e.MustDocker(t, "run", "-d", "--name", "phoenix", "--restart", "always", ref)
	enginetest.WaitFor(t, 10*time.Second, "web to serve", func() bool { _, err := dialLine("127.0.0.1:18081"); return err == nil })
	webPid, _ := strconv.Atoi(format(t, e, "web", "{{.State.Pid}}"))
	phoenixPid, _ := strconv.Atoi(format(t, e, "phoenix", "{{.State.Pid}}"))

	e.Kill(t)
	time.Sleep(300 * time.Millisecond)
	if !alive(webPid) {
		t.Fatal("the container died with the engine")
	}
	if got, err := dialLine("127.0.0.1:18081"); err != nil || got != "hello from web" {
		t.Errorf("published port while the engine is down: %q %v", got, err)
	}
	// A container that ends while nobody watches: its shim records how.
	syscall.Kill(phoenixPid, syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)

	e.Start(t)
	if got := format(t, e, "web", "{{.State.Status}} {{.State.Pid}}"); got != "running "+strconv.Itoa(webPid) {
		t.Errorf("web after the engine restart: %s, want running with pid %d", got, webPid)
	}
	enginetest.WaitFor(t, 10*time.Second, "phoenix to be brought back by its policy", func() bool {
		pid, _ := strconv.Atoi(format(t, e, "phoenix", "{{.State.Pid}}"))
		return pid != 0 && pid != phoenixPid && format(t, e, "phoenix", "{{.State.Status}}") == "running"
	})
	if got := format(t, e, "phoenix", "{{.RestartCount}}"); got != "1" {
		t.Errorf("phoenix restart count = %s", got)
	}
	n1 := strings.Count(e.MustDocker(t, "logs", "ticker"), "tick")
	time.Sleep(400 * time.Millisecond)
	n2 := strings.Count(e.MustDocker(t, "logs", "ticker"), "tick")
	if n2 <= n1 {
		t.Errorf("ticker's log stopped growing after the restart (%d then %d lines)", n1, n2)
	}
	// Managed again: stop, exec and the port table all work.
	if out := e.MustDocker(t, "exec", "web", "/testapp", "echo", "still here"); out != "still here\n" {
		t.Errorf("exec after restart: %q", out)
	}
	e.MustDocker(t, "stop", "web")
	if alive(webPid) {
		t.Error("docker stop after the engine restart did not stop the container")
	}
	if _, err := dialLine("127.0.0.1:18081"); err == nil {
		t.Error("the published port outlived docker stop")
	}
}

// simulateReboot kills the engine, every shim and container process, and
// clears what lives on tmpfs and in the kernel, as a power cut does.
func simulateReboot(t *testing.T, e *enginetest.Engine) {
	t.Helper()
	e.Kill(t)
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if bytes.HasPrefix(cmdline, []byte(e.Bin+"\x00shim\x00")) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// runc state lives under the exec root: kill what it knows, then
	// forget it as a reboot would.
	runcRoot := filepath.Join(e.ExecRoot, "runc")
	for _, id := range dirEntries(t, runcRoot) {
		exec.Command("runc", "--root", runcRoot, "kill", "--all", id, "KILL").Run()
		exec.Command("runc", "--root", runcRoot, "delete", "--force", id).Run()
	}
	time.Sleep(300 * time.Millisecond)
	enginetest.UnmountUnder(e.Root)
	enginetest.UnmountUnder(e.ExecRoot)
	os.RemoveAll(e.ExecRoot)
	if l, err := netlink.LinkByName("bulkhead0"); err == nil {
		netlink.LinkDel(l)
	}
}

func TestAfterARebootAlwaysAndUnlessStoppedContainersComeBack(t *testing.T) {
	e, _, ref := setup(t)
	e.MustDocker(t, "run", "-d", "--name", "always", "--restart", "always", "-p", "18082:80", ref, "serve", "80")
	e.MustDocker(t, "run", "-d", "--name", "unless", "--restart", "unless-stopped", ref)
	e.MustDocker(t, "run", "-d", "--name", "plain", ref)
	e.MustDocker(t, "run", "-d", "--name", "stopped", "--restart", "unless-stopped", ref)
	e.MustDocker(t, "stop", "stopped")

	simulateReboot(t, e)
	e.Start(t)

	for name, want := range map[string]string{"always": "running", "unless": "running", "plain": "exited", "stopped": "exited"} {
		if got := format(t, e, name, "{{.State.Status}}"); got != want {
			t.Errorf("%s after the reboot: %s, want %s", name, got, want)
		}
	}
	if got := format(t, e, "plain", "{{.State.ExitCode}}"); got != "255" {
		t.Errorf("a container that died with the machine reports exit %s, want 255", got)
	}
	enginetest.WaitFor(t, 10*time.Second, "the always container's published port", func() bool {
		_, err := dialLine("127.0.0.1:18082")
		return err == nil
	})
}

func TestAPullThroughARegistryThatDropsConnectionsSucceeds(t *testing.T) {
	e, reg, _ := setup(t)
	big, _ := random.Layer(1<<20, types.OCILayer)
	ref := reg.Push(t, "test/flaky:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{Cmd: []string{"/x"}}, big))
	reg.Faults.DropBlobs(2, 64<<10)
	out := e.MustDocker(t, "pull", ref)
	if !strings.Contains(out, "Downloaded newer image") {
		t.Errorf("pull:\n%s", out)
	}
	if reg.Faults.Dropped.Load() != 2 {
		t.Errorf("the registry cut %d downloads, want 2", reg.Faults.Dropped.Load())
	}
	if !strings.Contains(e.Log(), "pull: retrying") {
		t.Error("the engine did not log its retries")
	}
}

func TestAPullOntoAFullDataPartitionFailsClearlyAndTheStoreStaysUsable(t *testing.T) {
	enginetest.RequireRoot(t)
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	reg := enginetest.NewRegistry(t, nil)
	app := reg.Push(t, "test/app:1", enginetest.AppImage(t, enginetest.Amd64))
	b1, _ := random.Layer(4<<20, types.OCILayer)
	b2, _ := random.Layer(4<<20, types.OCILayer)
	big := reg.Push(t, "test/big:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{Cmd: []string{"/x"}}, b1, b2))
	e := enginetest.NewEngine(t, filepath.Join(root, "engine"))
	e.Start(t)
	e.MustDocker(t, "pull", app)
	out, stderr, err := e.Docker("pull", big)
	if err == nil || !strings.Contains(out+stderr, "data partition is full") || !strings.Contains(out+stderr, "free space") {
		t.Fatalf("pull onto a full partition: %v\n%s\n%s", err, out, stderr)
	}
	if left := dirEntries(t, filepath.Join(root, "engine", "image", "tmp")); len(left) != 0 {
		t.Errorf("staging left after the failure: %v", left)
	}
	if out := e.MustDocker(t, "images", "--format", "{{.Repository}}:{{.Tag}}"); strings.TrimSpace(out) != app {
		t.Errorf("images after the failure: %q", out)
	}
	// The store still works: the engine restarts on it and runs the image
	// that fit.
	e.Stop(t)
	e.Start(t)
	e.MustDocker(t, "run", "-d", "--name", "ok", "--network", "none", app, "echo", "fine")
	waitState(t, e, "ok", "exited")
	if out := e.MustDocker(t, "logs", "ok"); out != "fine\n" {
		t.Errorf("container from the surviving image printed %q", out)
	}
}

func TestACraftedLayerIsRejectedAndNothingIsWrittenOutside(t *testing.T) {
	e, reg, _ := setup(t)
	victim := t.TempDir()
	evil := enginetest.LayerOf(t,
		enginetest.File{Name: "ok", Body: []byte("fine")},
		enginetest.File{Name: "escape", Type: tar.TypeSymlink, Linkname: "../../../../../../../../.." + victim},
		enginetest.File{Name: "escape/pwned", Body: []byte("x")},
		enginetest.File{Name: "../../../../../../../.." + victim + "/pwned2", Body: []byte("x")},
	)
	ref := reg.Push(t, "test/evil:1", enginetest.ImageOf(t, enginetest.Amd64, v1.Config{Cmd: []string{"/ok"}}, evil))
	out, stderr, err := e.Docker("pull", ref)
	if err == nil || !strings.Contains(out+stderr, "unsafe layer entry") {
		t.Fatalf("pull of a crafted layer: %v\n%s\n%s", err, out, stderr)
	}
	if ents := dirEntries(t, victim); len(ents) != 0 {
		t.Errorf("the crafted layer wrote outside: %v", ents)
	}
	if out := e.MustDocker(t, "images", "-q"); out != "" {
		t.Errorf("images after the rejection: %q", out)
	}
	if left := dirEntries(t, filepath.Join(e.Root, "image", "tmp")); len(left) != 0 {
		t.Errorf("staging left: %v", left)
	}
}
