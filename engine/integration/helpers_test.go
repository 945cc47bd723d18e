package integration

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
)

// setup starts a registry with the test image and an engine.
func setup(t *testing.T, engineArgs ...string) (*enginetest.Engine, *enginetest.Registry, string) {
	t.Helper()
	reg := enginetest.NewRegistry(t, nil)
	ref := reg.Push(t, "test/app:1", enginetest.AppImage(t, enginetest.Amd64))
	e := enginetest.NewEngine(t, "", engineArgs...)
	e.Start(t)
	return e, reg, ref
}

// inspect decodes `docker inspect` of one object.
func inspect(t *testing.T, e *enginetest.Engine, name string) map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal([]byte(e.MustDocker(t, "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return out[0]
}

func field(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func format(t *testing.T, e *enginetest.Engine, name, tmpl string) string {
	t.Helper()
	return strings.TrimSpace(e.MustDocker(t, "inspect", "--format", tmpl, name))
}

func waitState(t *testing.T, e *enginetest.Engine, name, want string) {
	t.Helper()
	enginetest.WaitFor(t, 20*time.Second, name+" to be "+want, func() bool {
		out, _, err := e.Docker("inspect", "--format", "{{.State.Status}}", name)
		return err == nil && strings.TrimSpace(out) == want
	})
}

func dialLine(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie is not running.
	f := strings.Fields(string(data))
	return len(f) > 2 && f[2] != "Z"
}
