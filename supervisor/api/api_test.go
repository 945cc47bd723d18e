package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/bootstate"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/health"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/update"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

const token = "0123456789abcdef-test-token"

// device is a simulated device behind a real API server: slots are files,
// the boot state is in memory, and a reboot (requested by the updater)
// runs the bootloader's algorithm and starts a new updater.
type device struct {
	t       *testing.T
	dir     string
	bs      *bootstate.Memory
	trusted []ed25519.PublicKey
	healthy bool

	mu      sync.Mutex
	u       *updater.Updater
	boot    updater.Boot
	boots   int
	version string
	reboots chan struct{}
}

func newDevice(t *testing.T) *device {
	pub, _ := bundletest.DevKey(t)
	d := &device{t: t, dir: t.TempDir(), trusted: []ed25519.PublicKey{pub}, healthy: true, version: "1.0.0",
		bs: bootstate.NewMemory(bootloader.State{Committed: bootloader.SlotA, Trial: bootloader.SlotNone}), reboots: make(chan struct{}, 8)}
	for _, s := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(d.dir, "slot-"+s), make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d.powerOn()
	return d
}

func (d *device) powerOn() {
	d.mu.Lock()
	st, _ := d.bs.Status()
	s, trial, next := bootloader.Decide(st)
	if next != nil {
		d.bs.Set(*next)
	}
	d.boots++
	d.boot = updater.Boot{Slot: s, Trial: trial, ID: string(rune('0' + d.boots))}
	if s == bootloader.SlotB {
		d.version = "2.0.0"
	} else {
		d.version = "1.0.0"
	}
	u, err := updater.New(updater.Config{
		Store:     updater.FileStore{Path: filepath.Join(d.dir, "state.json")},
		BootState: d.bs,
		Boot:      d.boot,
		OpenSlot: func(s bootloader.Slot) (slot.Device, error) {
			return slot.Open(filepath.Join(d.dir, "slot-"+string(s)))
		},
		Current: bundle.Manifest{Name: "bulkhead", Version: d.version, Board: "raspberrypi3", Arch: "arm64"},
		Board:   "raspberrypi3",
		Trusted: d.trusted,
		Health: func(context.Context, bool) []health.Result {
			return []health.Result{{Name: "fake", OK: d.healthy}}
		},
		Reboot: func() error {
			d.reboots <- struct{}{}
			return nil
		},
		HealthDeadline: 200 * time.Millisecond,
		HealthInterval: 20 * time.Millisecond,
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		d.t.Fatal(err)
	}
	d.u = u
	d.mu.Unlock()
	if err := u.Resume(context.Background()); err != nil {
		d.t.Logf("resume: %v", err)
	}
}

// autoReboot power-cycles the device whenever the updater asks.
func (d *device) autoReboot(ctx context.Context) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.reboots:
				time.Sleep(50 * time.Millisecond) // the reboot's delay
				d.current().Wait()
				d.powerOn()
			}
		}
	}()
}

func (d *device) current() *updater.Updater {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.u
}

// swapUpdater forwards to the updater of the current boot.
type swapUpdater struct{ d *device }

func (s swapUpdater) Status() updater.Status { return s.d.current().Status() }
func (s swapUpdater) Start(ctx context.Context, r updater.Request) (string, error) {
	return s.d.current().Start(ctx, r)
}
func (s swapUpdater) Install(ctx context.Context, r updater.Request, rd io.Reader, n int64) error {
	return s.d.current().Install(ctx, r, rd, n)
}
func (s swapUpdater) Cancel() error            { return s.d.current().Cancel() }
func (s swapUpdater) MarkGood() error          { return s.d.current().MarkGood() }
func (s swapUpdater) Abandon() error           { return s.d.current().Abandon() }
func (s swapUpdater) RebootNow(w string) error { return s.d.current().RebootNow(w) }

func (d *device) server() *api.Server {
	return &api.Server{Updater: swapUpdater{d}, Info: func() api.Status {
		d.mu.Lock()
		defer d.mu.Unlock()
		st, _ := d.bs.Status()
		return api.Status{Hostname: "test", Release: api.Release{Name: "bulkhead", Version: d.version, Board: "raspberrypi3"},
			Boot: api.Boot{Slot: d.boot.Slot, Trial: d.boot.Trial}, BootState: &st}
	}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// serve starts the API on a unix socket and on TCP with the token.
func (d *device) serve(t *testing.T) (unix, tcp string) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := d.server()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ul, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := api.ListenTCP("127.0.0.1:0", token)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ctx, ul, "")
	go s.Serve(ctx, tl, token)
	return sock, tl.Addr().String()
}

func bundleFile(t *testing.T, version string) (string, []byte) {
	_, priv := bundletest.DevKey(t)
	img := bundletest.Image(300<<10, 1)
	b, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", version), img, priv)
	p := filepath.Join(t.TempDir(), version+".bundle")
	os.WriteFile(p, b, 0o644)
	return p, b
}

func TestStatusOverTheUnixSocket(t *testing.T) {
	d := newDevice(t)
	sock, _ := d.serve(t)
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	st, err := client.Unix(sock).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Release.Version != "1.0.0" || st.Boot.Slot != bootloader.SlotA || st.BootState.Committed != bootloader.SlotA || st.Update.Phase != updater.PhaseIdle {
		t.Fatalf("status %+v", st)
	}
}

func TestTCPNeedsTheToken(t *testing.T) {
	d := newDevice(t)
	_, tcp := d.serve(t)
	for _, tok := range []string{"", "wrong-token-wrong-token", token + "x"} {
		_, err := client.TCP(tcp, tok).Status(context.Background())
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Code != http.StatusUnauthorized {
			t.Errorf("token %q: %v, want 401", tok, err)
		}
	}
	if _, err := client.TCP(tcp, token).Status(context.Background()); err != nil {
		t.Fatalf("right token: %v", err)
	}
	if _, err := api.ListenTCP("127.0.0.1:0", ""); !errors.Is(err, api.ErrNoToken) {
		t.Fatalf("ListenTCP without a token: %v", err)
	}
}

func TestUploadInstallsAndArmsTheTrial(t *testing.T) {
	d := newDevice(t)
	_, tcp := d.serve(t)
	_, b := bundleFile(t, "2.0.0")
	resp, err := client.TCP(tcp, token).Upload(context.Background(), bytes.NewReader(b), int64(len(b)), client.UploadOptions{NoReboot: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Phase != updater.PhaseReady || resp.ID == "" {
		t.Fatalf("upload answer %+v", resp)
	}
	if st, _ := d.bs.Status(); st.Trial != bootloader.SlotB || st.Tries != bootloader.DefaultTries {
		t.Fatalf("boot state %s", st)
	}
	// A second update while one is pending is a conflict.
	_, err = client.TCP(tcp, token).Upload(context.Background(), bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
	var ae *client.APIError
	if !errors.As(err, &ae) || (!ae.Conflict() && !ae.Refused()) {
		t.Fatalf("second upload: %v, want 409 or 422", err)
	}
	// Abandon before the reboot disarms it.
	if _, err := client.TCP(tcp, token).Abandon(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.bs.Status(); st.Trial != bootloader.SlotNone {
		t.Fatalf("boot state %s after abandon", st)
	}
}

func TestRefusedUploadIs422WithTheReason(t *testing.T) {
	d := newDevice(t)
	sock, _ := d.serve(t)
	_, b := bundleFile(t, "0.5.0")
	_, err := client.Unix(sock).Upload(context.Background(), bytes.NewReader(b), -1, client.UploadOptions{})
	var ae *client.APIError
	if !errors.As(err, &ae) || !ae.Refused() || !strings.Contains(ae.Message, "downgrade") {
		t.Fatalf("downgrade upload: %v, want 422 naming the downgrade", err)
	}
	if _, err := client.Unix(sock).MarkGood(context.Background()); !errors.As(err, &ae) || !ae.Conflict() {
		t.Fatalf("mark-good without a trial: %v, want 409", err)
	}
}

func TestStartUpdateFromURL(t *testing.T) {
	d := newDevice(t)
	sock, _ := d.serve(t)
	_, b := bundleFile(t, "2.0.0")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "x.bundle", time.Time{}, bytes.NewReader(b))
	}))
	defer srv.Close()
	c := client.Unix(sock)
	resp, err := c.StartUpdate(context.Background(), api.UpdateRequest{Source: srv.URL + "/x.bundle", NoReboot: true})
	if err != nil {
		t.Fatal(err)
	}
	d.current().Wait()
	st, _ := c.Status(context.Background())
	if st.Update.Phase != updater.PhaseReady || st.Update.Update.ID != resp.ID || st.Update.Progress.ImageBytes != st.Update.Progress.ImageSize {
		t.Fatalf("status after the download: %+v", st.Update)
	}
	if _, err := c.StartUpdate(context.Background(), api.UpdateRequest{Source: "relative.bundle"}); err == nil {
		t.Fatal("a relative path was accepted as a source")
	}
}

func TestPushFollowsTheDeviceToCommit(t *testing.T) {
	d := newDevice(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.autoReboot(ctx)
	_, tcp := d.serve(t)
	p, _ := bundleFile(t, "2.0.0")
	var out bytes.Buffer
	o, err := update.Push(ctx, update.Options{Device: tcp, Token: token, Bundle: p, Out: &out, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out.String())
	}
	if o.Result != updater.ResultCommitted || o.ToVersion != "2.0.0" {
		t.Fatalf("outcome %+v", o)
	}
	t.Logf("push output:\n%s", out.String())
}

func TestPushReportsARollback(t *testing.T) {
	d := newDevice(t)
	d.healthy = false
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.autoReboot(ctx)
	_, tcp := d.serve(t)
	p, _ := bundleFile(t, "2.0.0")
	o, err := update.Push(ctx, update.Options{Device: tcp, Token: token, Bundle: p, Timeout: 30 * time.Second})
	if !errors.Is(err, update.ErrNotCommitted) || o.Result != updater.ResultRolledBack {
		t.Fatalf("push: %+v, %v; want a rollback", o, err)
	}
}

func TestPushReportsARefusal(t *testing.T) {
	d := newDevice(t)
	_, tcp := d.serve(t)
	p, _ := bundleFile(t, "0.5.0")
	var out bytes.Buffer
	o, err := update.Push(context.Background(), update.Options{Device: tcp, Token: token, Bundle: p, Out: &out, Timeout: 30 * time.Second})
	if !errors.Is(err, update.ErrNotCommitted) || o.Result != updater.ResultRefused || !strings.Contains(o.Reason, "downgrade") {
		t.Fatalf("push of an older bundle: %+v, %v; want refused as a downgrade", o, err)
	}
	if !strings.Contains(out.String(), "refused by the device") {
		t.Fatalf("push output does not report the refusal:\n%s", out.String())
	}
}
