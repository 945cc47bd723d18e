package integration

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestTheDockerCLIDrivesEveryCommandOfTheAPISubset runs the real docker
// client against the engine, command by command, and checks what it prints.
func TestTheDockerCLIDrivesEveryCommandOfTheAPISubset(t *testing.T) {
	e, _, ref := setup(t)
	short := strings.TrimPrefix(ref, "127.0.0.1:")
	_ = short

	t.Run("version", func(t *testing.T) {
		out := e.MustDocker(t, "version")
		for _, want := range []string{"Server: Bulkhead Engine", "API version:      1.47", "OS/Arch:          linux/amd64"} {
			if !strings.Contains(out, want) {
				t.Errorf("docker version lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("info", func(t *testing.T) {
		out := e.MustDocker(t, "info")
		for _, want := range []string{"Server Version: 0.1.0-dev", "Storage Driver: overlay2", "Operating System: Bulkhead", "Default Runtime: runc", "Docker Root Dir: " + e.Root} {
			if !strings.Contains(out, want) {
				t.Errorf("docker info lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("pull", func(t *testing.T) {
		out := e.MustDocker(t, "pull", ref)
		if !strings.Contains(out, "Status: Downloaded newer image for "+ref) || !strings.Contains(out, "Pull complete") {
			t.Errorf("docker pull printed:\n%s", out)
		}
		if out := e.MustDocker(t, "pull", ref); !strings.Contains(out, "Image is up to date") || !strings.Contains(out, "Already exists") {
			t.Errorf("second docker pull printed:\n%s", out)
		}
	})
	t.Run("images", func(t *testing.T) {
		out := e.MustDocker(t, "images")
		repo := strings.TrimSuffix(ref, ":1")
		if !regexp.MustCompile(regexp.QuoteMeta(repo) + `\s+1\s+[0-9a-f]{12}\s+.*ago\s+2\.\d+MB`).MatchString(out) {
			t.Errorf("docker images:\n%s", out)
		}
	})
	t.Run("image inspect", func(t *testing.T) {
		out := strings.TrimSpace(e.MustDocker(t, "image", "inspect", "--format", "{{.Os}}/{{.Architecture}} {{json .Config.Entrypoint}} {{len .RootFS.Layers}}", ref))
		if out != `linux/amd64 ["/testapp"] 2` {
			t.Errorf("image inspect = %q", out)
		}
	})
	t.Run("create and start", func(t *testing.T) {
		id := strings.TrimSpace(e.MustDocker(t, "create", "--name", "created", "-e", "GREETING=hi", ref, "echo", "created-ran"))
		if len(id) != 64 {
			t.Fatalf("create printed %q, want an ID", id)
		}
		if st := format(t, e, "created", "{{.State.Status}}"); st != "created" {
			t.Errorf("state after create = %s", st)
		}
		e.MustDocker(t, "start", "created")
		waitState(t, e, "created", "exited")
		if out := e.MustDocker(t, "logs", "created"); out != "created-ran\n" {
			t.Errorf("logs = %q", out)
		}
	})
	t.Run("run -d, ps -a, inspect", func(t *testing.T) {
		id := strings.TrimSpace(e.MustDocker(t, "run", "-d", "--name", "ticker", "--label", "role=test", ref, "ticker", "0"))
		out := e.MustDocker(t, "ps", "-a", "--format", "{{.Names}}|{{.Status}}|{{.Command}}")
		if !regexp.MustCompile(`ticker\|Up .*\|"/testapp ticker 0"`).MatchString(out) || !strings.Contains(out, "created|Exited (0)") {
			t.Errorf("docker ps -a:\n%s", out)
		}
		if got := format(t, e, "ticker", "{{.Id}} {{.State.Running}} {{.Config.Labels.role}} {{.HostConfig.NetworkMode}}"); got != id+" true test bridge" {
			t.Errorf("inspect = %q", got)
		}
		if ip := format(t, e, "ticker", "{{.NetworkSettings.IPAddress}}"); !strings.HasPrefix(ip, "172.17.") {
			t.Errorf("IP address = %q, want one from the bridge subnet", ip)
		}
	})
	t.Run("logs -f follows until the container stops", func(t *testing.T) {
		e.MustDocker(t, "run", "-d", "--name", "counter", ref, "ticker", "15")
		start := time.Now()
		out := e.MustDocker(t, "logs", "-f", "counter")
		if !strings.HasPrefix(out, "tick 1\n") || !strings.HasSuffix(out, "tick 15\n") {
			t.Errorf("logs -f = %q", out)
		}
		if time.Since(start) > 20*time.Second {
			t.Errorf("logs -f took %v", time.Since(start))
		}
		if out := e.MustDocker(t, "logs", "--tail", "2", "-t", "counter"); !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\S+ tick 14\n\S+ tick 15\n$`).MatchString(out) {
			t.Errorf("logs --tail 2 -t = %q", out)
		}
	})
	t.Run("exec", func(t *testing.T) {
		if out := e.MustDocker(t, "exec", "ticker", "/testapp", "echo", "inside"); out != "inside\n" {
			t.Errorf("exec output = %q", out)
		}
		_, _, err := e.Docker("exec", "ticker", "/testapp", "exit", "7")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
			t.Errorf("exec exit status = %v, want 7", err)
		}
		if out := e.MustDocker(t, "exec", "-u", "app", "-w", "/tmp", "-e", "X=1", "ticker", "/testapp", "id"); !strings.HasPrefix(out, "uid=1000 gid=1000 ") || !strings.Contains(out, "cwd=/tmp") {
			t.Errorf("exec -u app -w /tmp = %q", out)
		}
		_, stderr, _ := e.Docker("exec", "ticker", "/testapp", "stderr", "to-stderr")
		if stderr != "to-stderr\n" {
			t.Errorf("exec stderr = %q", stderr)
		}
	})
	t.Run("stop", func(t *testing.T) {
		start := time.Now()
		e.MustDocker(t, "stop", "ticker")
		// A Go program as PID 1 that ignores SIGTERM exits 2 (its runtime
		// cannot die from the signal); what matters is that SIGTERM, not the
		// SIGKILL 10 s later, ended it.
		if got := format(t, e, "ticker", "{{.State.Status}} {{.State.ExitCode}}"); got != "exited 2" || time.Since(start) > 5*time.Second {
			t.Errorf("after stop: %s", got)
		}
	})
	t.Run("restart", func(t *testing.T) {
		e.MustDocker(t, "run", "-d", "--name", "sleeper", ref)
		before := format(t, e, "sleeper", "{{.State.StartedAt}}")
		e.MustDocker(t, "restart", "-t", "5", "sleeper")
		after := format(t, e, "sleeper", "{{.State.StartedAt}} {{.State.Running}}")
		if !strings.HasSuffix(after, " true") || strings.HasPrefix(after, before) {
			t.Errorf("restart: started %s then %s", before, after)
		}
	})
	t.Run("kill", func(t *testing.T) {
		e.MustDocker(t, "kill", "sleeper")
		waitState(t, e, "sleeper", "exited")
		if code := format(t, e, "sleeper", "{{.State.ExitCode}}"); code != "137" {
			t.Errorf("exit code after kill = %s, want 137", code)
		}
	})
	t.Run("rm", func(t *testing.T) {
		e.MustDocker(t, "run", "-d", "--name", "doomed", ref)
		if _, stderr, err := e.Docker("rm", "doomed"); err == nil || !strings.Contains(stderr, "stop it first") {
			t.Errorf("rm of a running container: %v %s", err, stderr)
		}
		e.MustDocker(t, "rm", "-f", "doomed")
		e.MustDocker(t, "rm", "created", "sleeper")
		if out := e.MustDocker(t, "ps", "-a", "--format", "{{.Names}}"); strings.Contains(out, "doomed") || strings.Contains(out, "created") {
			t.Errorf("removed containers still listed:\n%s", out)
		}
		if _, stderr, _ := e.Docker("inspect", "doomed"); !strings.Contains(stderr, "No such object") && !strings.Contains(stderr, "No such container") {
			t.Errorf("inspect of a removed container: %s", stderr)
		}
	})
	t.Run("volume create, ls, rm", func(t *testing.T) {
		if out := e.MustDocker(t, "volume", "create", "--label", "k=v", "appdata"); out != "appdata\n" {
			t.Errorf("volume create = %q", out)
		}
		out := e.MustDocker(t, "volume", "ls")
		if !regexp.MustCompile(`local\s+appdata`).MatchString(out) {
			t.Errorf("volume ls:\n%s", out)
		}
		e.MustDocker(t, "run", "-d", "--name", "user", "-v", "appdata:/data", ref)
		if _, stderr, err := e.Docker("volume", "rm", "appdata"); err == nil || !strings.Contains(stderr, "in use") {
			t.Errorf("removing a volume in use: %v %s", err, stderr)
		}
		e.MustDocker(t, "rm", "-f", "user")
		e.MustDocker(t, "volume", "rm", "appdata")
		if out := e.MustDocker(t, "volume", "ls", "-q"); strings.Contains(out, "appdata") {
			t.Errorf("volume still listed: %s", out)
		}
	})
	t.Run("network ls", func(t *testing.T) {
		out := e.MustDocker(t, "network", "ls")
		for _, re := range []string{`[0-9a-f]{12}\s+bridge\s+bridge\s+local`, `[0-9a-f]{12}\s+host\s+host\s+local`, `[0-9a-f]{12}\s+none\s+null\s+local`} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("network ls lacks %s:\n%s", re, out)
			}
		}
	})
	t.Run("system df", func(t *testing.T) {
		out := e.MustDocker(t, "system", "df")
		for _, re := range []string{`Images\s+1\s+1\s+2\.\d+MB`, `Containers\s+2\s+0\s+`, `Local Volumes\s+\d+\s+\d+`} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("system df lacks %s:\n%s", re, out)
			}
		}
	})
	t.Run("rmi", func(t *testing.T) {
		if _, stderr, err := e.Docker("rmi", ref); err == nil || !strings.Contains(stderr, "container") {
			t.Errorf("rmi of an image in use: %v %s", err, stderr)
		}
		for _, n := range strings.Fields(e.MustDocker(t, "ps", "-aq")) {
			e.MustDocker(t, "rm", "-f", n)
		}
		out := e.MustDocker(t, "rmi", ref)
		if !strings.Contains(out, "Untagged: "+ref) || strings.Count(out, "Deleted: sha256:") != 3 {
			t.Errorf("rmi printed:\n%s", out)
		}
		if out := e.MustDocker(t, "images", "-q"); out != "" {
			t.Errorf("images after rmi: %q", out)
		}
	})
	t.Run("run pulls a missing image", func(t *testing.T) {
		out, stderr, err := e.Docker("run", "-d", "--name", "autopull", ref, "echo", "pulled")
		if err != nil || !strings.Contains(stderr, "Unable to find image") {
			t.Fatalf("run of a missing image: %v\n%s\n%s", err, out, stderr)
		}
		waitState(t, e, "autopull", "exited")
	})
	t.Run("unsupported endpoints say so at once", func(t *testing.T) {
		start := time.Now()
		_, stderr, err := e.Docker("pause", "autopull")
		if err == nil || !strings.Contains(stderr, "not supported by this engine") {
			t.Errorf("docker pause: %v %s", err, stderr)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("an unsupported call took %v", time.Since(start))
		}
	})
}
