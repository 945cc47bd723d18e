package integration

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
)

func TestContainersGetTheSettingsTheyAskFor(t *testing.T) {
	e, _, ref := setup(t)
	bind := t.TempDir()
	os.WriteFile(filepath.Join(bind, "host.txt"), []byte("from the host\n"), 0o644)
	e.MustDocker(t, "run", "-d", "--name", "settings",
		"-e", "FOO=bar", "-w", "/tmp", "-h", "myhost", "-l", "app=demo",
		"-v", bind+":/mnt/host:ro", "--tmpfs", "/scratch:size=1m",
		"--device", "/dev/null:/dev/mynull", "--read-only",
		"--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE",
		ref)
	run := func(args ...string) string {
		return e.MustDocker(t, append([]string{"exec", "settings", "/testapp"}, args...)...)
	}
	env := run("env")
	for _, want := range []string{"FOO=bar", "IMAGE_VAR=from-image", "HOSTNAME=myhost", "HOME=/root", "PATH="} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
	if got := run("id"); got != "uid=0 gid=0 hostname=myhost cwd=/tmp\n" {
		t.Errorf("id = %q", got)
	}
	if got := run("cat", "/mnt/host/host.txt"); got != "from the host\n" {
		t.Errorf("bind mount = %q", got)
	}
	if _, stderr, err := e.Docker("exec", "settings", "/testapp", "write", "/mnt/host/x", "y"); err == nil || !strings.Contains(stderr, "read-only") {
		t.Errorf("write to a :ro bind mount: %v %s", err, stderr)
	}
	if _, stderr, err := e.Docker("exec", "settings", "/testapp", "write", "/data/x", "y"); err == nil || !strings.Contains(stderr, "read-only") {
		t.Errorf("write to a --read-only root: %v %s", err, stderr)
	}
	if got := run("write", "/scratch/x", "y"); !strings.Contains(got, "wrote") {
		t.Errorf("write to the tmpfs: %q", got)
	}
	mounts := run("cat", "/proc/self/mounts")
	if !strings.Contains(mounts, "tmpfs /scratch tmpfs") || !strings.Contains(mounts, "size=1024k") {
		t.Errorf("tmpfs mount missing:\n%s", mounts)
	}
	if !strings.Contains(mounts, "overlay / overlay ro") {
		t.Errorf("root is not a read-only overlay:\n%s", mounts)
	}
	if got := run("cat", "/dev/mynull"); got != "" {
		t.Errorf("device read = %q", got)
	}
	status := run("cat", "/proc/self/status")
	if !strings.Contains(status, "CapEff:\t0000000000000400") { // CAP_NET_BIND_SERVICE only
		t.Errorf("capabilities after --cap-drop ALL --cap-add NET_BIND_SERVICE:\n%s", grep(status, "Cap"))
	}
	if got := format(t, e, "settings", "{{.Config.Labels.app}} {{.Config.Labels}}"); !strings.HasPrefix(got, "demo ") || !strings.Contains(got, "org.bulkhead.test:app") {
		t.Errorf("labels = %q", got)
	}

	e.MustDocker(t, "run", "-d", "--name", "priv", "--privileged", "-u", "0", ref)
	own, _ := os.ReadFile("/proc/self/status")
	bnd := strings.TrimPrefix(grep(string(own), "CapBnd:"), "CapBnd:")
	if st := e.MustDocker(t, "exec", "priv", "/testapp", "cat", "/proc/self/status"); !strings.Contains(st, "CapEff:"+bnd) {
		t.Errorf("privileged capabilities:\n%s", grep(st, "Cap"))
	}
	e.MustDocker(t, "run", "-d", "--name", "user1", "-u", "app", ref)
	if got := e.MustDocker(t, "exec", "user1", "/testapp", "id"); !strings.HasPrefix(got, "uid=1000 gid=1000") {
		t.Errorf("-u app: %q", got)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestNamedVolumesOutliveTheirContainers(t *testing.T) {
	e, _, ref := setup(t)
	e.MustDocker(t, "run", "--name", "writer", "-d", "-v", "keep:/data", ref, "write", "/data/file", "persisted")
	waitState(t, e, "writer", "exited")
	e.MustDocker(t, "rm", "writer")
	e.MustDocker(t, "run", "--name", "reader", "-d", "-v", "keep:/data", ref, "cat", "/data/file")
	waitState(t, e, "reader", "exited")
	if out := e.MustDocker(t, "logs", "reader"); out != "persisted" {
		t.Errorf("second container read %q from the volume", out)
	}
	// The volume lives under the data root, so it also survives the engine.
	e.Stop(t)
	e.Start(t)
	e.MustDocker(t, "rm", "reader")
	e.MustDocker(t, "run", "--name", "reader2", "-d", "--mount", "type=volume,source=keep,target=/v", ref, "cat", "/v/file")
	waitState(t, e, "reader2", "exited")
	if out := e.MustDocker(t, "logs", "reader2"); out != "persisted" {
		t.Errorf("after an engine restart the volume holds %q", out)
	}
}

func TestRestartPoliciesBringContainersBack(t *testing.T) {
	e, _, ref := setup(t)
	e.MustDocker(t, "run", "-d", "--name", "onfail", "--restart", "on-failure:2", ref, "exit", "3")
	e.MustDocker(t, "run", "-d", "--name", "always", "--restart", "always", ref, "exit", "0")
	e.MustDocker(t, "run", "-d", "--name", "never", ref, "exit", "1")
	e.MustDocker(t, "run", "-d", "--name", "unless", "--restart", "unless-stopped", ref)

	enginetest.WaitFor(t, 30*time.Second, "on-failure:2 to give up after two restarts", func() bool {
		return format(t, e, "onfail", "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}") == "2 exited 3"
	})
	if logs := e.MustDocker(t, "logs", "onfail"); strings.Count(logs, "exiting 3") != 3 {
		t.Errorf("on-failure:2 ran %d times, want 3:\n%s", strings.Count(logs, "exiting 3"), logs)
	}
	enginetest.WaitFor(t, 30*time.Second, "always to restart a container that exits 0", func() bool {
		n, _ := strconv.Atoi(format(t, e, "always", "{{.RestartCount}}"))
		return n >= 3
	})
	if got := format(t, e, "never", "{{.RestartCount}} {{.State.Status}}"); got != "0 exited" {
		t.Errorf("no policy: %s", got)
	}
	// A manual stop holds, whatever the policy.
	e.MustDocker(t, "stop", "always")
	e.MustDocker(t, "stop", "unless")
	time.Sleep(1500 * time.Millisecond)
	for _, n := range []string{"always", "unless"} {
		if st := format(t, e, n, "{{.State.Status}}"); st != "exited" {
			t.Errorf("%s after docker stop: %s", n, st)
		}
	}
}

func TestBridgeNetworkingPublishesPortsToTheHost(t *testing.T) {
	e, _, ref := setup(t)
	e.MustDocker(t, "run", "-d", "--name", "web", "-h", "webhost", "-p", "18080:80", ref, "serve", "80")
	enginetest.WaitFor(t, 10*time.Second, "the published port to answer", func() bool {
		got, err := dialLine("127.0.0.1:18080")
		return err == nil && got == "hello from webhost"
	})
	if out := e.MustDocker(t, "port", "web"); !strings.Contains(out, "80/tcp -> 0.0.0.0:18080") {
		t.Errorf("docker port: %q", out)
	}
	// A second container reaches the first over the bridge and the host
	// (the test process's namespace) through the gateway: outbound works.
	ip := format(t, e, "web", "{{.NetworkSettings.IPAddress}}")
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from the host\n"))
			c.Close()
		}
	}()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	e.MustDocker(t, "run", "-d", "--name", "client", ref, "dial", ip+":80")
	e.MustDocker(t, "run", "-d", "--name", "out", ref, "dial", "172.17.0.1:"+port)
	waitState(t, e, "client", "exited")
	waitState(t, e, "out", "exited")
	if out := e.MustDocker(t, "logs", "client"); out != "hello from webhost\n" {
		t.Errorf("container to container: %q", out)
	}
	if out := e.MustDocker(t, "logs", "out"); out != "hello from the host\n" {
		t.Errorf("container to host: %q", out)
	}
	// The engine was given a resolver file that does not exist: the
	// containers fall back to public servers instead of having none.
	if out := e.MustDocker(t, "exec", "web", "/testapp", "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 8.8.8.8") {
		t.Errorf("resolv.conf without a host file: %q", out)
	}
	if out := e.MustDocker(t, "exec", "web", "/testapp", "cat", "/etc/hosts"); !strings.Contains(out, ip+"\twebhost") {
		t.Errorf("/etc/hosts: %q", out)
	}
	// none: loopback only; host: the host's interfaces.
	e.MustDocker(t, "run", "-d", "--name", "isolated", "--network", "none", ref, "cat", "/proc/net/dev")
	e.MustDocker(t, "run", "-d", "--name", "hostnet", "--network", "host", ref, "cat", "/proc/net/dev")
	waitState(t, e, "isolated", "exited")
	waitState(t, e, "hostnet", "exited")
	if out := e.MustDocker(t, "logs", "isolated"); strings.Contains(out, "eth0") || !strings.Contains(out, "lo:") {
		t.Errorf("--network none sees:\n%s", out)
	}
	if out := e.MustDocker(t, "logs", "hostnet"); !strings.Contains(out, "bulkhead0") {
		t.Errorf("--network host does not see the host's bridge:\n%s", out)
	}
	e.MustDocker(t, "stop", "web")
	if _, err := dialLine("127.0.0.1:18080"); err == nil {
		t.Error("the port still answers after the container stopped")
	}
}

func TestResourceLimitsAreVisibleInTheContainersCgroup(t *testing.T) {
	e, _, ref := setup(t)
	e.MustDocker(t, "run", "-d", "--name", "limited", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50", ref)
	pid, _ := strconv.Atoi(format(t, e, "limited", "{{.State.Pid}}"))
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		f := strings.SplitN(line, ":", 3)
		for _, c := range strings.Split(f[1], ",") {
			paths[c] = f[2]
		}
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
		}
		return strings.TrimSpace(string(b))
	}
	if unified, ok := paths[""]; ok && len(paths) == 1 {
		// cgroup v2, as on Bulkhead devices.
		base := "/sys/fs/cgroup" + unified
		if got := read(base + "/memory.max"); got != "67108864" {
			t.Errorf("memory.max = %s", got)
		}
		if got := read(base + "/cpu.max"); got != "50000 100000" {
			t.Errorf("cpu.max = %s", got)
		}
		if got := read(base + "/pids.max"); got != "50" {
			t.Errorf("pids.max = %s", got)
		}
		if got := e.MustDocker(t, "exec", "limited", "/testapp", "cat", "/sys/fs/cgroup/memory.max"); strings.TrimSpace(got) != "67108864" {
			t.Errorf("inside the container memory.max = %q", got)
		}
	} else {
		// cgroup v1 (this host binds the controllers there).
		if !strings.HasSuffix(paths["memory"], "/bulkhead/"+format(t, e, "limited", "{{.Id}}")) {
			t.Errorf("memory cgroup %q is not the engine's", paths["memory"])
		}
		if got := read("/sys/fs/cgroup/memory" + paths["memory"] + "/memory.limit_in_bytes"); got != "67108864" {
			t.Errorf("memory.limit_in_bytes = %s", got)
		}
		if got := read("/sys/fs/cgroup/cpu" + paths["cpu"] + "/cpu.cfs_quota_us"); got != "50000" {
			t.Errorf("cpu.cfs_quota_us = %s", got)
		}
		if got := read("/sys/fs/cgroup/pids" + paths["pids"] + "/pids.max"); got != "50" {
			t.Errorf("pids.max = %s", got)
		}
		if got := e.MustDocker(t, "exec", "limited", "/testapp", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"); strings.TrimSpace(got) != "67108864" {
			t.Errorf("inside the container memory.limit_in_bytes = %q", got)
		}
	}
	if got := format(t, e, "limited", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"); got != "67108864 500000000" {
		t.Errorf("inspect HostConfig = %s", got)
	}
}
