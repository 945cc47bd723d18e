package tests

// The harness of the over-the-air update tests (ota_test.go): the releases
// they build, a device driven through its console and its TCP API, and the
// update servers on the host (HTTP and an OCI registry), reached by the
// guest through QEMU's user-mode network at 10.0.2.2.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/compile"
	"github.com/bulkhead-os/bulkhead/builder/image"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/keys"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
	"github.com/google/go-containerregistry/pkg/registry"
)

// Versions of the OTA tests' releases, in upgrade order.
const (
	otaV1 = "1.0.0-ota"
	otaV2 = "2.0.0-ota"
	otaV3 = "3.0.0-ota"
	otaV4 = "4.0.0-ota" // unhealthy: its own health check fails
	otaV5 = "5.0.0-ota" // its kernel panics: the initramfs is garbage
	otaV9 = "9.0.0-ota" // the refused bundles: only their key or board is wrong
)

// otaGuestHost is the host as QEMU's user-mode network shows it to the guest;
// connections to it reach the host's loopback interface.
const otaGuestHost = "10.0.2.2"

// otaHealthDeadline bounds a trial boot's health checks in the test
// devices (device.yaml update.health_deadline): long enough for a healthy
// trial on a loaded machine, short enough to wait for an unhealthy one.
const otaHealthDeadline = 40 * time.Second

// otaBuildMu serialises the OTA tests' image builds: they share the caches
// and the cores with the running machines.
var otaBuildMu sync.Mutex

// otaBuild builds one release of board into dir, without the .img.xz.
func otaBuild(ctx context.Context, t testing.TB, b *board.Board, dir, version string, overlay []image.OverlayFile) (*image.Result, error) {
	otaBuildMu.Lock()
	defer otaBuildMu.Unlock()
	cfg := buildConfig(t, b, dir, version)
	cfg.Compress = false
	cfg.Overlay = overlay
	start := time.Now()
	res, err := image.Run(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", b.Name, version, err)
	}
	t.Logf("built %s %s in %s", b.Name, version, time.Since(start).Round(100*time.Millisecond))
	return res, nil
}

// otaRelease is a bundle on the host.
type otaRelease struct {
	Path     string
	Manifest bundle.Manifest
}

func (r otaRelease) Name() string { return filepath.Base(r.Path) }

// otaBuilderRelease is the bundle a build wrote, as the builder wrote it.
func otaBuilderRelease(res *image.Result) (otaRelease, error) {
	f, err := os.Open(res.Bundle)
	if err != nil {
		return otaRelease{}, err
	}
	defer f.Close()
	m, _, err := bundle.Inspect(f)
	if err != nil {
		return otaRelease{}, fmt.Errorf("%s: %w", res.Bundle, err)
	}
	return otaRelease{Path: res.Bundle, Manifest: m}, nil
}

// otaSlimRelease makes a bundle of the build's slot filesystem shrunk to its
// content (resize2fs -M), signed like the builder's and with its manifest
// fields. The builder's slot image fills the whole 1 GiB partition although
// it holds about 80 MB; installing it means writing and reading back 1 GiB,
// minutes under emulation (a raspi3b's SD card moves a few MB/s). A slot
// image smaller than its partition is a supported bundle (the filesystem
// records its own size), so all but the first update of a test device use
// slim bundles, which keep the tests within their time budget.
func otaSlimRelease(ctx context.Context, res *image.Result, dir string) (otaRelease, error) {
	full, err := otaBuilderRelease(res)
	if err != nil {
		return otaRelease{}, err
	}
	slot := filepath.Join(dir, "slim-"+full.Manifest.Version+".ext4")
	steps := [][]string{
		{"cp", "--sparse=always", res.Slot, slot},
		{"e2fsck", "-fy", slot},
		{"resize2fs", "-M", slot},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			return otaRelease{}, fmt.Errorf("slim %s: %s: %v\n%s", full.Manifest.Version, strings.Join(s, " "), err, out)
		}
	}
	defer os.Remove(slot)
	m := full.Manifest
	m.Image, m.Payload = bundle.Image{}, bundle.Payload{}
	return otaSignRelease(m, slot, "dev-key.pem", filepath.Join(dir, strings.TrimSuffix(full.Name(), ".bundle")+"-slim.bundle"))
}

// otaSignRelease writes a bundle of the slot image file with manifest m,
// signed with a key of supervisor/bundle/testdata (dev-key.pem is the one
// test images trust).
func otaSignRelease(m bundle.Manifest, slotImage, key, path string) (otaRelease, error) {
	priv, err := keys.LoadPrivate(filepath.Join(bundletest.TestdataDir(), key))
	if err != nil {
		return otaRelease{}, err
	}
	signed, err := bundle.WriteFile(path, m, slotImage, priv, &bundle.WriteOptions{TempDir: filepath.Dir(path)})
	if err != nil {
		return otaRelease{}, err
	}
	return otaRelease{Path: path, Manifest: signed}, nil
}

// otaUnhealthyCheck cross-compiles tests/testdata/unhealthy for the board: a
// health check that always fails, for the image's /etc/bulkhead/health.d.
func otaUnhealthyCheck(ctx context.Context, b *board.Board, dir string) ([]byte, error) {
	out := filepath.Join(dir, "unhealthy-"+b.Go.Arch)
	err := compile.Build(ctx, otaSrcDir(), out, compile.Target{GOARCH: b.Go.Arch, GOARM: b.GOARM()},
		[]compile.Program{{Package: "./tests/testdata/unhealthy", Name: "unhealthy"}})
	if err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(out, "unhealthy"))
}

func otaSrcDir() string {
	dir, _ := filepath.Abs("..")
	return dir
}

// otaPending is a value made in the background.
type otaPending[T any] struct {
	done chan struct{}
	v    T
	err  error
}

func newOTAPending[T any]() *otaPending[T] { return &otaPending[T]{done: make(chan struct{})} }

func (p *otaPending[T]) set(v T, err error) {
	p.v, p.err = v, err
	close(p.done)
}

// get waits for the value; a failure to make it fails the test.
func (p *otaPending[T]) get(t *testing.T, what string) T {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(15 * time.Minute):
		t.Fatalf("%s: not ready after 15 minutes", what)
	}
	if p.err != nil {
		t.Fatalf("%s: %v", what, p.err)
	}
	return p.v
}

// otaReleases are the bundles one device's life cycle installs or refuses.
type otaReleases struct {
	v1 *image.Result // the image the device boots
	// v2 is the builder's own bundle, installed over HTTP.
	v2 *otaPending[otaRelease]
	// v3 goes through the OCI registry.
	v3 *otaPending[otaRelease]
	// unhealthy ships a health check that fails.
	unhealthy *otaPending[otaRelease]
	// panics has a garbage initramfs: its kernel panics at every boot.
	panics *otaPending[otaRelease]
	// Refused before a byte is written: signed with an untrusted key, for
	// another board, and the older builder bundle of v1 (a downgrade).
	unsigned, wrongBoard, downgrade *otaPending[otaRelease]
}

// otaBuildReleases builds v1 now and the other releases in the background,
// in the order the life cycle needs them; then, if set, it runs then (more
// builds for a later test, while this one's machine runs).
func otaBuildReleases(t *testing.T, b *board.Board, then func()) *otaReleases {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	v1, err := otaBuild(ctx, t, b, filepath.Join(dir, "v1"), otaV1, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &otaReleases{v1: v1}
	for _, p := range []**otaPending[otaRelease]{&r.v2, &r.v3, &r.unhealthy, &r.panics, &r.unsigned, &r.wrongBoard, &r.downgrade} {
		*p = newOTAPending[otaRelease]()
	}
	r.downgrade.set(otaBuilderRelease(v1))
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		var v2, v3 *image.Result
		var err error
		// Each step sets its release; after a failed build the later
		// releases report that failure.
		steps := []struct {
			p    *otaPending[otaRelease]
			make func() (otaRelease, error)
		}{
			{r.v2, func() (otaRelease, error) {
				if v2, err = otaBuild(ctx, t, b, filepath.Join(dir, "v2"), otaV2, nil); err != nil {
					return otaRelease{}, err
				}
				return otaBuilderRelease(v2)
			}},
			{r.v3, func() (otaRelease, error) {
				if v3, err = otaBuild(ctx, t, b, filepath.Join(dir, "v3"), otaV3, nil); err != nil {
					return otaRelease{}, err
				}
				return otaSlimRelease(ctx, v3, dir)
			}},
			{r.unhealthy, func() (otaRelease, error) {
				check, err := otaUnhealthyCheck(ctx, b, dir)
				if err != nil {
					return otaRelease{}, err
				}
				res, err := otaBuild(ctx, t, b, filepath.Join(dir, "v4"), otaV4, []image.OverlayFile{
					{Path: "/etc/bulkhead/health.d/50-unhealthy", Data: check, Mode: 0o755},
				})
				if err != nil {
					return otaRelease{}, err
				}
				return otaSlimRelease(ctx, res, dir)
			}},
			{r.panics, func() (otaRelease, error) {
				res, err := otaBuild(ctx, t, b, filepath.Join(dir, "v5"), otaV5, []image.OverlayFile{
					{Path: "/boot/initrd.img", Data: []byte("not an initramfs: the kernel of this release must panic\n")},
				})
				if err != nil {
					return otaRelease{}, err
				}
				return otaSlimRelease(ctx, res, dir)
			}},
			// The refused bundles carry a real slot image and a newer
			// version: only the key or the board is wrong.
			{r.unsigned, func() (otaRelease, error) {
				m := r.v2.v.Manifest
				m.Version, m.Image, m.Payload = otaV9, bundle.Image{}, bundle.Payload{}
				return otaSignRelease(m, v3.Slot, "other-key.pem", filepath.Join(dir, "unsigned.bundle"))
			}},
			{r.wrongBoard, func() (otaRelease, error) {
				m := r.v2.v.Manifest
				m.Version, m.Image, m.Payload = otaV9, bundle.Image{}, bundle.Payload{}
				m.Board = "raspberrypi3"
				if b.Name == m.Board {
					m.Board = "qemu-aarch64"
				}
				return otaSignRelease(m, v3.Slot, "dev-key.pem", filepath.Join(dir, "wrong-board.bundle"))
			}},
		}
		var failed error
		for _, s := range steps {
			if failed != nil {
				s.p.set(otaRelease{}, fmt.Errorf("not built: %w", failed))
				continue
			}
			rel, err := s.make()
			if err != nil && (s.p == r.v2 || s.p == r.v3) {
				failed = err
			}
			s.p.set(rel, err)
		}
		if then != nil && ctx.Err() == nil {
			then()
		}
	}()
	return r
}

// otaInboxReleases are the raspberrypi3 image and the bundle dropped into
// its inbox.
type otaInboxReleases struct {
	v1 *image.Result
	v2 otaRelease
}

// otaBuildInbox builds them into dir.
func otaBuildInbox(t testing.TB, dir string) (otaInboxReleases, error) {
	ctx := context.Background()
	b, err := board.Load(filepath.Join(otaSrcDir(), "boards"), "raspberrypi3")
	if err != nil {
		return otaInboxReleases{}, err
	}
	v1, err := otaBuild(ctx, t, b, filepath.Join(dir, "v1"), otaV1, nil)
	if err != nil {
		return otaInboxReleases{}, err
	}
	res, err := otaBuild(ctx, t, b, filepath.Join(dir, "v2"), otaV2, nil)
	if err != nil {
		return otaInboxReleases{}, err
	}
	v2, err := otaSlimRelease(ctx, res, dir)
	return otaInboxReleases{v1: v1, v2: v2}, err
}

// otaDevice is a booted test machine and its device API.
type otaDevice struct {
	t     *testing.T
	b     *board.Board
	vm    *qemu.Machine
	api   *client.Client
	addr  string // of the device API on the host
	token string
	pos   int // console offset after the last line waited for
	mark  int // console offset where the current step began
	// Resident memory of the supervisor, idle before the first update
	// and at its peak during the last install.
	idleRSS int64
	peakRSS atomic.Int64
}

// otaDeviceConfig is device.yaml of the test devices: the TCP API with a
// token, and a short health deadline.
func otaDeviceConfig(token string) string {
	return fmt.Sprintf("# device.yaml of an OTA test device\nhostname: ota-test\napi:\n  listen: \":%s\"\n  token: %q\nupdate:\n  health_deadline: %s\n",
		api.DefaultPort, token, otaHealthDeadline)
}

// bootOTADevice prepares a copy of img with the device config on its boot
// partition (and files on its data partition), boots it and waits for the
// ready line of v1 on slot a. On boards with a network it forwards a free
// host port to the device API.
func bootOTADevice(t *testing.T, b *board.Board, img string, dataFiles map[string]string) *otaDevice {
	t.Helper()
	token := strings.Repeat("0123456789abcdef", 2)
	cfg := qemu.Config{
		Board:    b,
		Image:    img,
		Cache:    userCache(t),
		LockFile: filepath.Join(srcDir(t), "boards", b.Name+".lock"),
		WorkDir:  t.TempDir(),
		// A panicking kernel (the broken release) reboots after 1 s
		// instead of the image's 10 s, to keep the test short.
		Bootargs: "panic=1",
	}
	port := 0
	if b.QEMU.Machine == "virt" || b.QEMU.Machine == "q35" {
		port = otaFreePort(t)
		cfg.HostForward = []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%s", port, api.DefaultPort)}
	}
	ctx := context.Background()
	vm, err := qemu.Prepare(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.WriteBootFile(ctx, "bulkhead/device.yaml", []byte(otaDeviceConfig(token))); err != nil {
		t.Fatal(err)
	}
	for name, src := range dataFiles {
		if err := vm.WriteDataFile(ctx, name, src); err != nil {
			t.Fatal(err)
		}
	}
	d := &otaDevice{t: t, b: b, vm: vm}
	if port != 0 {
		d.addr, d.token = fmt.Sprintf("127.0.0.1:%d", port), token
		d.api = client.TCP(d.addr, token)
	}
	d.start()
	return d
}

func (d *otaDevice) start() {
	d.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d.t.Cleanup(cancel)
	if err := d.vm.Start(ctx); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(d.vm.PowerCut)
	d.pos, d.mark = 0, 0
}

func otaFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// step starts a named part of the life cycle: failures print the console
// from here.
func (d *otaDevice) step(format string, args ...any) {
	d.mark = d.vm.Offset()
	d.t.Logf("%s: "+format, append([]any{d.b.Name}, args...)...)
}

// fatalf fails with the console output of the current step.
func (d *otaDevice) fatalf(format string, args ...any) {
	d.t.Helper()
	log := d.vm.Log()
	if d.mark < len(log) {
		log = log[d.mark:]
	}
	d.t.Fatalf("%s: %s\n--- serial console since the step began ---\n%s\n--- end ---", d.b.Name, fmt.Sprintf(format, args...), log)
}

// waitLine waits for the next console line matching re.
func (d *otaDevice) waitLine(re *regexp.Regexp, timeout time.Duration) string {
	d.t.Helper()
	line, end, err := d.vm.Wait(context.Background(), re, d.pos, timeout)
	if err != nil {
		d.fatalf("%v", err)
	}
	d.pos = end
	return line
}

// waitReady waits for the next ready line and checks what booted.
func (d *otaDevice) waitReady(version, slot string, trial bool, timeout time.Duration) {
	d.t.Helper()
	start := time.Now()
	m := readyRE.FindStringSubmatch(d.waitLine(readyRE, timeout))
	want := fmt.Sprintf("version=%s slot=%s trial=%v", version, slot, trial)
	got := fmt.Sprintf("version=%s slot=%s trial=%v", m[1], m[2], m[4] == "1")
	if got != want || m[3] != d.b.Name {
		d.fatalf("booted %s board=%s, want %s", got, m[3], want)
	}
	d.t.Logf("%s: ready %s after %s", d.b.Name, got, time.Since(start).Round(100*time.Millisecond))
}

// status waits until the device API answers (the supervisor starts after
// the ready line, and DHCP takes a moment) and returns its status.
func (d *otaDevice) status() api.Status {
	d.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := d.api.Status(ctx)
		cancel()
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			d.fatalf("device API: %v", err)
		}
		time.Sleep(time.Second)
	}
}

// expectRunning checks that the device runs version from a committed
// slot with no trial otaPending.
func (d *otaDevice) expectRunning(version, slot string) api.Status {
	d.t.Helper()
	st := d.status()
	bs := st.BootState
	// st.Boot.Trial says how this boot began: a committed trial keeps
	// running as the boot that was the trial.
	if st.Release.Version != version || string(st.Boot.Slot) != slot {
		d.fatalf("device runs %s on slot %s, want %s on slot %s", st.Release.Version, st.Boot.Slot, version, slot)
	}
	if bs == nil || string(bs.Committed) != slot || bs.Trial != bootloader.SlotNone {
		d.fatalf("boot state %v (%s), want slot %s committed and no trial", bs, st.BootStateError, slot)
	}
	if st.Update.Phase.Busy() {
		d.fatalf("update phase %s, want none in progress", st.Update.Phase)
	}
	return st
}

// outcome waits for the outcome of update id, across the reboots.
func (d *otaDevice) outcome(id string) updater.Outcome {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	o, err := d.api.WaitOutcome(ctx, id, 2*time.Second, nil)
	if err != nil {
		d.fatalf("update %s: %v", id, err)
	}
	return o
}

// installPhaseRE matches the supervisor's log of an update's phases.
var installPhaseRE = regexp.MustCompile(`supervisor: time=(\S+) level=INFO msg=update phase=(downloading|verifying|ready-to-reboot) id=(\w+) slot=\w version=(\S+)`)

// logInstall reports how long the device took to write and to read back
// and verify the slot image of update id, from the supervisor's console
// log (guest clock): the on-device figures of docs/benchmarks.md.
func (d *otaDevice) logInstall(id string, r otaRelease) {
	times := map[string]time.Time{}
	for _, m := range installPhaseRE.FindAllStringSubmatch(d.vm.Log()[d.mark:], -1) {
		if m[3] != id {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			if _, ok := times[m[2]]; !ok {
				times[m[2]] = t
			}
		}
	}
	w, v := times["verifying"].Sub(times["downloading"]), times["ready-to-reboot"].Sub(times["verifying"])
	if w <= 0 || v <= 0 {
		return
	}
	mb := float64(r.Manifest.Image.Size) / 1e6
	d.t.Logf("%s: figures: install of %s (image %d MiB, bundle %.1f MiB): stream+write %.1f s (%.0f MB/s), read back+verify %.1f s (%.0f MB/s), together %.0f MB/s; supervisor RSS idle %.1f MiB, peak during the update %.1f MiB",
		d.b.Name, r.Manifest.Version, r.Manifest.Image.Size>>20, float64(otaFileSize(r.Path))/(1<<20),
		w.Seconds(), mb/w.Seconds(), v.Seconds(), mb/v.Seconds(), mb/(w+v).Seconds(),
		float64(d.idleRSS)/(1<<20), float64(d.peakRSS.Load())/(1<<20))
}

func otaFileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// startUpdate asks the device to fetch and install a bundle.
func (d *otaDevice) startUpdate(source string) string {
	d.t.Helper()
	d.status() // the API is up
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := d.api.StartUpdate(ctx, api.UpdateRequest{Source: source})
	if err != nil {
		d.fatalf("start update from %s: %v", source, err)
	}
	d.samplePeakRSS(resp.ID)
	return resp.ID
}

// samplePeakRSS records, in the background, the supervisor's peak
// resident memory while it downloads, writes and verifies update id.
func (d *otaDevice) samplePeakRSS(id string) {
	d.peakRSS.Store(0)
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := d.api.Status(ctx)
			cancel()
			if err != nil || st.Update.Update == nil || st.Update.Update.ID != id || st.Update.Phase == updater.PhaseTrial {
				return // rebooting, or done
			}
			if st.Supervisor != nil {
				d.peakRSS.Store(max(d.peakRSS.Load(), st.Supervisor.PeakRSSBytes))
			}
			time.Sleep(time.Second)
		}
	}()
}

// slotSums hashes both root slot partitions of the machine's disk as the
// host sees them.
func (d *otaDevice) slotSums() [2]string {
	d.t.Helper()
	var sums [2]string
	f, err := os.Open(d.vm.Disk)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	for i, n := range []int{qemu.PartRootA, qemu.PartRootB} {
		off, size, err := d.vm.Partition(n)
		if err != nil {
			d.t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, off, size)); err != nil {
			d.t.Fatal(err)
		}
		sums[i] = hex.EncodeToString(h.Sum(nil))
	}
	return sums
}

// diskBootState reads the boot state from the machine's disk.
func (d *otaDevice) diskBootState() bootloader.State {
	d.t.Helper()
	if d.b.Bootloader.Kind != "uboot" {
		d.t.Fatalf("diskBootState reads U-Boot's raw copies; %s uses %s", d.b.Name, d.b.Bootloader.Kind)
	}
	f, err := os.Open(d.vm.Disk)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	st, _, err := bootloader.NewStore(otaReadOnlyDisk{f}, bootloader.UBootEnv{}, bootloader.UBootStateOffsetA, bootloader.UBootStateOffsetB).Read()
	if err != nil {
		d.t.Fatal(err)
	}
	return st
}

type otaReadOnlyDisk struct{ *os.File }

func (otaReadOnlyDisk) WriteAt([]byte, int64) (int, error) { return 0, os.ErrPermission }
func (otaReadOnlyDisk) Sync() error                        { return nil }

// otaServers are the host's HTTP file server and OCI registry.
type otaServers struct {
	dir      string
	files    *httptest.Server
	registry *httptest.Server
}

func otaStartServers(t *testing.T) *otaServers {
	s := &otaServers{dir: t.TempDir()}
	s.files = httptest.NewServer(http.FileServer(http.Dir(s.dir)))
	t.Cleanup(s.files.Close)
	s.registry = httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(s.registry.Close)
	return s
}

// serve publishes a bundle on the file server and returns its URL as the
// guest sees it.
func (s *otaServers) serve(t *testing.T, r otaRelease) string {
	t.Helper()
	if err := os.Symlink(r.Path, filepath.Join(s.dir, r.Name())); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://%s:%d/%s", otaGuestHost, otaPort(s.files), r.Name())
}

// publish pushes a bundle to the registry (as `builder publish` does) and
// returns its reference as the guest sees it.
func (s *otaServers) publish(t *testing.T, r otaRelease, repoTag string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := bundle.Publish(ctx, fmt.Sprintf("127.0.0.1:%d/%s", otaPort(s.registry), repoTag), r.Path); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d/%s", otaGuestHost, otaPort(s.registry), repoTag)
}

func otaPort(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

// upload streams a bundle file to the device API.
func (d *otaDevice) upload(path string) error {
	d.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err = d.api.Upload(ctx, f, fi.Size(), client.UploadOptions{})
	return err
}
