package tests

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/update"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// TestOTA takes devices through the life of their host OS, each on one
// machine that keeps running across the updates' reboots:
//
//   - x86_64 (GRUB) and qemu-aarch64 (U-Boot), updated over QEMU's user-mode
//     network through the device API: v1 -> v2 from an HTTP server, v2 -> v3
//     from an OCI registry, three bundles refused without a byte written,
//     a release whose own health check fails rolled back by the supervisor,
//     a release whose kernel panics rolled back by the bootloader;
//   - raspberrypi3 (raspi3b, U-Boot, no network), updated from a bundle
//     dropped on its data partition.
//
// The two lanes run in parallel; the machines of a lane one after another.
func TestOTA(t *testing.T) {
	t.Run("x86_64", func(t *testing.T) {
		t.Parallel()
		otaLifeCycle(t, "x86_64", nil)
	})
	t.Run("arm64", func(t *testing.T) {
		t.Parallel()
		// The Pi's releases are built while the qemu-aarch64 machine
		// runs, once that one's own builds are done.
		lane := t
		dir := t.TempDir()
		inbox := sync.OnceValues(func() (otaInboxReleases, error) { return otaBuildInbox(lane, dir) })
		t.Run("qemu-aarch64", func(t *testing.T) {
			otaLifeCycle(t, "qemu-aarch64", func() { inbox() })
		})
		t.Run("raspberrypi3-from-the-data-partition", func(t *testing.T) {
			rel, err := inbox()
			if err != nil {
				t.Fatal(err)
			}
			otaFromDataPartition(t, rel)
		})
	})
}

// otaLifeCycle updates one networked device through every path; then runs
// in the background once its releases are built.
func otaLifeCycle(t *testing.T, name string, then func()) {
	b := loadBoard(t, name)
	rel := otaBuildReleases(t, b, then)
	srv := otaStartServers(t)
	d := bootOTADevice(t, b, rel.v1.Image, nil)
	d.step("boot v1")
	d.waitReady(otaV1, "a", false, 6*time.Minute)
	if st := d.expectRunning(otaV1, "a"); st.Supervisor != nil {
		d.idleRSS = st.Supervisor.RSSBytes
	}

	ok := t.Run("v1 to v2 over HTTP is committed after a healthy trial", func(t *testing.T) {
		d.t = t
		v2 := rel.v2.get(t, "v2 bundle")
		d.step("update to %s from %s", otaV2, v2.Name())
		id := d.startUpdate(srv.serve(t, v2))
		d.waitReady(otaV2, "b", true, 10*time.Minute)
		o := d.outcome(id)
		if o.Result != updater.ResultCommitted || o.FromVersion != otaV1 || o.ToVersion != otaV2 {
			d.fatalf("outcome %+v, want committed %s -> %s", o, otaV1, otaV2)
		}
		d.logInstall(id, v2)
		d.expectRunning(otaV2, "b")
	})
	ok = ok && t.Run("v2 to v3 from an OCI registry is committed", func(t *testing.T) {
		d.t = t
		v3 := rel.v3.get(t, "v3 bundle")
		d.step("update to %s through the registry", otaV3)
		id := d.startUpdate(srv.publish(t, v3, "bulkhead/os:"+otaV3))
		d.waitReady(otaV3, "a", true, 10*time.Minute)
		if o := d.outcome(id); o.Result != updater.ResultCommitted || o.ToVersion != otaV3 {
			d.fatalf("outcome %+v, want committed %s", o, otaV3)
		}
		d.logInstall(id, v3)
		d.expectRunning(otaV3, "a")
	})
	ok = ok && t.Run("unsigned, wrong-board and downgrade bundles are refused with nothing written", func(t *testing.T) {
		d.t = t
		refused := []struct {
			what   string
			rel    otaRelease
			upload bool
			reason string
		}{
			{"signed by an untrusted key", rel.unsigned.get(t, "unsigned bundle"), true, "not signed by a trusted key"},
			{"for another board", rel.wrongBoard.get(t, "wrong-board bundle"), true, "for another board"},
			{"older (the builder's v1 bundle)", rel.downgrade.get(t, "v1 bundle"), false, "downgrade"},
		}
		d.step("refusals")
		before := d.expectRunning(otaV3, "a")
		sums := d.slotSums()
		for _, r := range refused {
			var reason string
			if r.upload {
				// Streamed to the API: the answer is the refusal.
				err := d.upload(r.rel.Path)
				var ae *client.APIError
				if !errors.As(err, &ae) || !ae.Refused() {
					d.fatalf("upload of a bundle %s: %v, want 422 refused", r.what, err)
				}
				reason = ae.Message
			} else {
				// Fetched by the device: the refusal is the outcome.
				o := d.outcome(d.startUpdate(srv.serve(t, r.rel)))
				if o.Result != updater.ResultRefused {
					d.fatalf("bundle %s: outcome %+v, want refused", r.what, o)
				}
				reason = o.Reason
			}
			if !strings.Contains(reason, r.reason) {
				d.fatalf("bundle %s refused because %q, want it to say %q", r.what, reason, r.reason)
			}
			t.Logf("%s: bundle %s refused: %s", name, r.what, reason)
		}
		after := d.expectRunning(otaV3, "a")
		if *after.BootState != *before.BootState {
			d.fatalf("boot state changed from %s to %s", before.BootState, after.BootState)
		}
		for i, h := range after.Update.History[:len(refused)] {
			if h.Result != updater.ResultRefused {
				d.fatalf("history[%d] = %+v, want refused", i, h)
			}
		}
		if got := d.slotSums(); got != sums {
			d.fatalf("slot partitions changed: sha256 a %s -> %s, b %s -> %s", sums[0], got[0], sums[1], got[1])
		}
	})
	ok = ok && t.Run("a release whose health check fails is rolled back by the supervisor", func(t *testing.T) {
		d.t = t
		bad := rel.unhealthy.get(t, "unhealthy bundle")
		d.step("update to %s, which is unhealthy, with update.Push", otaV4)
		d.status()
		var out strings.Builder
		o, err := update.Push(context.Background(), update.Options{
			Device: d.addr, Token: d.token, Bundle: bad.Path, Timeout: 15 * time.Minute, Out: &out,
		})
		t.Logf("update.Push:\n%s", out.String())
		if !errors.Is(err, update.ErrNotCommitted) || o.Result != updater.ResultRolledBack {
			d.fatalf("update.Push: %+v, %v; want rolled back and ErrNotCommitted", o, err)
		}
		if !strings.Contains(o.Reason, "os:50-unhealthy") || !strings.Contains(o.Reason, "deliberately unhealthy release "+otaV4) {
			d.fatalf("rolled back because %q, want the failing check os:50-unhealthy and its output", o.Reason)
		}
		d.waitReady(otaV4, "b", true, time.Minute) // already on the console
		d.waitReady(otaV3, "a", false, 5*time.Minute)
		d.expectRunning(otaV3, "a")
	})
	ok = ok && t.Run("a release whose kernel panics is rolled back by the bootloader", func(t *testing.T) {
		d.t = t
		bad := rel.panics.get(t, "panicking bundle")
		d.step("update to %s, whose kernel panics", otaV5)
		id := d.startUpdate(srv.serve(t, bad))
		d.waitReady(otaV3, "a", false, 12*time.Minute)
		o := d.outcome(id)
		if o.Result != updater.ResultRolledBack || !strings.Contains(o.Reason, "the bootloader returned to slot a") {
			d.fatalf("outcome %+v, want rolled back by the bootloader", o)
		}
		log := d.vm.Log()[d.mark:]
		if n := len(otaPanicRE.FindAllString(log, -1)); n != bootloader.DefaultTries {
			d.fatalf("the kernel panicked %d times, want once per try (%d)", n, bootloader.DefaultTries)
		}
		d.expectRunning(otaV3, "a")
	})
	if !ok {
		t.Logf("%s: later steps skipped: they start from the state the failed one should have left", name)
	}
}

// otaPanicRE matches the kernel's panic line, not the "---[ end Kernel panic"
// line that follows it.
var otaPanicRE = regexp.MustCompile(`\] Kernel panic - not syncing`)

// otaFromDataPartition updates a Raspberry Pi 3 without network: the v2
// bundle is written into the data partition's inbox of the card before the
// first boot, the way a user with a card reader would, and the supervisor
// installs it, U-Boot boots the trial, and the supervisor commits it.
func otaFromDataPartition(t *testing.T, rel otaInboxReleases) {
	b := loadBoard(t, "raspberrypi3")
	v2 := rel.v2
	d := bootOTADevice(t, b, rel.v1.Image, map[string]string{"supervisor/inbox/" + v2.Name(): v2.Path})
	d.step("boot v1 with %s in the inbox", v2.Name())
	d.waitReady(otaV1, "a", false, 6*time.Minute)
	d.waitLine(regexp.MustCompile(`update inbox: installing.*file=`+regexp.QuoteMeta(v2.Name())), 3*time.Minute)
	d.waitReady(otaV2, "b", true, 15*time.Minute)
	d.waitLine(regexp.MustCompile(`update finished" result=committed .*version=`+regexp.QuoteMeta(otaV2)), 5*time.Minute)
	d.waitLine(regexp.MustCompile(`update inbox: removed the bundle of an ended update.*file=`+regexp.QuoteMeta(v2.Name())), 2*time.Minute)
	if st := d.diskBootState(); st.Committed != bootloader.SlotB || st.Trial != bootloader.SlotNone {
		d.fatalf("boot state on the card after the commit: %s, want b committed", st)
	}

	d.step("power cut and boot again: U-Boot boots the committed slot b without a trial")
	d.vm.PowerCut()
	d.start()
	d.waitReady(otaV2, "b", false, 6*time.Minute)
}
