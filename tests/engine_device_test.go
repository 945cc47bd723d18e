package tests

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
)

// Console lines of the engine (PID 1 prefixes a service's output with its
// name; the engine logs with slog's text handler).
var (
	appStartedRE          = regexp.MustCompile(`(?m)^engine: .*msg="engine: app started" app=web container=([0-9a-f]{12})`)
	appCreatedOrStartedRE = regexp.MustCompile(`(?m)^engine: .*msg="engine: app (created|started)" app=web`)
	appsUpToDateRE        = regexp.MustCompile(`(?m)^engine: .*msg="engine: apps up to date" services=1`)
	policyStartedRE       = regexp.MustCompile(`(?m)^engine: .*msg="engine: started by its restart policy" container=web id=([0-9a-f]{12})`)
)

// webAnswer is what tests/testdata/webapp answers.
type webAnswer struct {
	Hostname  string `json:"hostname"`
	BootID    string `json:"boot_id"`
	Arch      string `json:"arch"`
	Starts    int    `json:"starts"`
	Greeting  string `json:"greeting"`
	Cgroup    string `json:"cgroup"`
	MemoryMax string `json:"memory_max"`
	CPUMax    string `json:"cpu_max"`
	PidsMax   string `json:"pids_max"`
}

// TestEngineRunsTheAppsFileAndBringsTheAppBackAfterReboots is issue 6's
// on-device proof, for the QEMU boards with a network: a user writes
// bulkhead/apps.yaml onto the boot partition of a freshly built image; at
// boot the engine pulls the app (a multi-platform image, from a registry
// on the host) and runs it with a published port the host reaches; after
// an orderly reboot through the supervisor's API and after a power cut the
// same container runs again, brought back by its restart policy, with its
// named volume intact.
func TestEngineRunsTheAppsFileAndBringsTheAppBackAfterReboots(t *testing.T) {
	reg := startAppRegistry(t)
	reg.PushIndex(t, "test/webapp:1", map[string]v1.Image{
		"amd64": webappImage(t, "amd64"),
		"arm64": webappImage(t, "arm64"),
	})
	for _, name := range []string{"x86_64", "qemu-aarch64"} {
		t.Run(name, func(t *testing.T) {
			res := buildOnce(t, name)
			t.Parallel()
			b := loadBoard(t, name)
			// What a user writes onto the card after flashing it.
			apps := fmt.Sprintf(`# The containers this device runs (docs/engine.md).
services:
  web:
    image: %s
    command: ["-listen", ":80", "-state", "/data/starts"]
    ports: ["8080:80"]
    volumes: ["webdata:/data"]
    environment:
      GREETING: hello from %s
    mem_limit: 64m
    cpus: 0.5
    pids_limit: 50
`, reg.GuestRef("test/webapp:1"), name)
			dev := bootAppDevice(t, b, res.Image, apps)

			// Boot 1: pull, create, start.
			line, _ := dev.waitLine(appStartedRE, 0, 5*time.Minute, "the engine to pull and start the app")
			id := appStartedRE.FindStringSubmatch(line)[1]
			first := dev.answer(3*time.Minute, "the app's published port", func(a webAnswer) bool { return true })
			if first.Hostname != id || first.Arch != b.Go.Arch || first.Starts != 1 || first.Greeting != "hello from "+name {
				dev.fatalf("first boot: the app answered %+v, want hostname %s (the container), arch %s, start 1, the greeting", first, id, b.Go.Arch)
			}
			// The limits reached the kernel through runc's cgroup v2 driver,
			// in the container's own cgroup namespace.
			if first.Cgroup != "0::/" || first.MemoryMax != "67108864" || first.CPUMax != "50000 100000" || first.PidsMax != "50" {
				dev.fatalf("the app's cgroup is %q with memory.max %q, cpu.max %q, pids.max %q; want 0::/ (cgroup v2, own namespace), 67108864, \"50000 100000\", 50",
					first.Cgroup, first.MemoryMax, first.CPUMax, first.PidsMax)
			}
			t.Logf("%s: boot 1: container %s answers from its published port", name, id)

			// Boot 2: an orderly reboot (PID 1 stops everything, unmounts).
			// QEMU resets the machine and the console log goes on.
			bootAt := dev.m.Offset()
			if _, err := client.TCP(dev.api, dev.token).Reboot(dev.ctx); err != nil {
				dev.fatalf("reboot through the supervisor's API: %v", err)
			}
			dev.wait(readyRE, bootAt, 6*time.Minute, "the ready line after the reboot")
			dev.expectBack(bootAt, id)
			second := dev.answer(3*time.Minute, "the app after the reboot", func(a webAnswer) bool { return a.BootID != first.BootID })
			dev.expectSameApp("after the reboot", second, first)
			t.Logf("%s: boot 2 (reboot): container %s is back, start %d", name, id, second.Starts)

			// Boot 3: a power cut. A new QEMU process: a new console log.
			dev.m.PowerCut()
			if err := dev.m.Start(dev.ctx); err != nil {
				t.Fatal(err)
			}
			dev.wait(readyRE, 0, 6*time.Minute, "the ready line after the power cut")
			dev.expectBack(0, id)
			third := dev.answer(3*time.Minute, "the app after the power cut", func(a webAnswer) bool { return a.BootID != second.BootID })
			dev.expectSameApp("after the power cut", third, second)
			t.Logf("%s: boot 3 (power cut): container %s is back, start %d", name, id, third.Starts)
		})
	}
}

// bootAppDevice prepares a copy of img with apps.yaml and a device.yaml that
// opens the supervisor's TCP API on the boot partition, boots it with the
// app's port (8080) and the API (7070) forwarded to free host ports, and
// waits for the ready line.
func bootAppDevice(t *testing.T, b *board.Board, img, apps string) *appDevice {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for attempt := 1; ; attempt++ {
		webPort, apiPort := appFreePort(t), appFreePort(t)
		m, err := qemu.Prepare(ctx, qemu.Config{
			Board: b, Image: img, Cache: userCache(t),
			LockFile: filepath.Join(srcDir(t), "boards", b.Name+".lock"), WorkDir: t.TempDir(),
			HostForward: []string{
				fmt.Sprintf("tcp:127.0.0.1:%d-:8080", webPort),
				fmt.Sprintf("tcp:127.0.0.1:%d-:7070", apiPort),
			},
			// An entropy source, as a VM host gives: QEMU's emulated x86
			// CPU has no RDRAND, and until the kernel's pool is ready the
			// supervisor's DHCP cannot draw a transaction ID (minutes).
			ExtraArgs: []string{"-device", "virtio-rng-pci"},
		})
		if err != nil {
			t.Fatal(err)
		}
		dev := &appDevice{t: t, m: m, ctx: ctx, url: fmt.Sprintf("http://127.0.0.1:%d/", webPort),
			api: fmt.Sprintf("127.0.0.1:%d", apiPort), token: appAPIToken(t)}
		writeAppBootFile(t, m.Disk, "apps.yaml", apps)
		writeAppBootFile(t, m.Disk, "device.yaml", fmt.Sprintf("api:\n  listen: \":7070\"\n  token: %q\n", dev.token))
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.PowerCut)
		_, _, err = m.Wait(ctx, readyRE, 0, 6*time.Minute)
		// Another process may have taken a port between appFreePort and
		// QEMU's bind; QEMU then exits at once.
		if errors.Is(err, qemu.ErrExited) && strings.Contains(m.Log(), "Could not set up host forwarding") && attempt < 3 {
			t.Logf("%s: QEMU could not forward a port, retrying: %s", b.Name, strings.TrimSpace(m.Log()))
			continue
		}
		if err != nil {
			dev.fatalf("%s: waiting for the ready line: %v\ncommand: %s", b.Name, err, strings.Join(m.Command(), " "))
		}
		return dev
	}
}

// appDevice is one QEMU machine under test, seen from the host.
type appDevice struct {
	t     *testing.T
	m     *qemu.Machine
	ctx   context.Context
	url   string // the app's published port, forwarded
	api   string // the supervisor's TCP API, forwarded
	token string // its bearer token
}

func (d *appDevice) fatalf(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("%s\n--- serial console ---\n%s\n--- end ---", fmt.Sprintf(format, args...), d.m.Log())
}

func (d *appDevice) waitLine(re *regexp.Regexp, from int, timeout time.Duration, what string) (string, int) {
	d.t.Helper()
	line, off, err := d.m.Wait(d.ctx, re, from, timeout)
	if err != nil {
		d.fatalf("waiting for %s: %v", what, err)
	}
	return line, off
}

func (d *appDevice) wait(re *regexp.Regexp, from int, timeout time.Duration, what string) {
	d.t.Helper()
	d.waitLine(re, from, timeout, what)
}

// expectBack checks the console of the boot that starts at offset from:
// the engine restarted container id by its restart policy, and reconciling
// the apps file then found nothing to create or start.
func (d *appDevice) expectBack(from int, id string) {
	d.t.Helper()
	line, _ := d.waitLine(policyStartedRE, from, 5*time.Minute, "the engine to start the app by its restart policy")
	if got := policyStartedRE.FindStringSubmatch(line)[1]; got != id {
		d.fatalf("the engine started container %s at boot, want %s", got, id)
	}
	_, end := d.waitLine(appsUpToDateRE, from, 5*time.Minute, "the engine to reconcile the apps file")
	if appCreatedOrStartedRE.MatchString(d.m.Log()[from:end]) {
		d.fatalf("the engine re-created or started the app itself at boot instead of restarting container %s by its policy", id)
	}
}

// expectSameApp checks that the app answering now is the container that
// answered before, started again, with the start count its volume kept.
func (d *appDevice) expectSameApp(when string, now, before webAnswer) {
	d.t.Helper()
	if now.Hostname != before.Hostname || now.Arch != before.Arch || now.Greeting != before.Greeting || now.Starts <= before.Starts {
		d.fatalf("%s the app answered %+v; before: %+v (want the same container, started again, its volume's count higher)", when, now, before)
	}
}

// answer polls the app's published port through QEMU's forward until it
// answers and ok accepts the answer.
func (d *appDevice) answer(timeout time.Duration, what string, ok func(webAnswer) bool) webAnswer {
	d.t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		resp, err := hc.Get(d.url)
		if err == nil {
			var a webAnswer
			err = json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
			if err == nil && ok(a) {
				return a
			}
			if err == nil {
				err = fmt.Errorf("answer %+v", a)
			}
		}
		last = err.Error()
		if time.Now().After(deadline) {
			d.fatalf("waiting %s for %s at %s: last: %s", timeout, what, d.url, last)
		}
		select {
		case <-d.ctx.Done():
			d.fatalf("waiting for %s: %v", what, d.ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}

// writeAppBootFile writes bulkhead/<name> onto the boot partition (FAT) of a
// disk image with mtools, as a user does on a PC after flashing.
func writeAppBootFile(t *testing.T, disk, name, content string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", disk, err)
	}
	var table struct {
		PartitionTable struct {
			Partitions []struct {
				Start int64 `json:"start"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &table); err != nil || len(table.PartitionTable.Partitions) == 0 {
		t.Fatalf("%s: no partition table (%v)", disk, err)
	}
	// Partition 1 is the boot partition (docs/architecture.md).
	img := fmt.Sprintf("%s@@%d", disk, table.PartitionTable.Partitions[0].Start*512)
	src := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	// mmd fails when the directory exists; mcopy tells if it is missing.
	exec.Command("mmd", "-i", img, "::bulkhead").Run()
	if out, err := exec.Command("mcopy", "-o", "-i", img, src, "::bulkhead/"+name).CombinedOutput(); err != nil {
		t.Fatalf("write bulkhead/%s onto the boot partition (mtools): %v\n%s", name, err, out)
	}
}

func appFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func appAPIToken(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
