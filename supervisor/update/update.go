// Package update is the workstation side of an over-the-air update, what
// `make update BOARD=<b> DEVICE=<host>` runs: it uploads a bundle to a
// device's API and follows the device through install, reboot, health
// checks and commit or rollback, printing progress. The device decides
// everything; this package only reports what it decided.
package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// Options for Push.
type Options struct {
	// Device is "host", "host:port" or an http:// URL of the device API.
	Device string
	// Token is the device's api.token.
	Token string
	// Bundle is the path of the bundle file.
	Bundle string
	// Force allows a downgrade or reinstalling the same version.
	Force bool
	// Timeout bounds the whole update, reboots and health checks
	// included; default 15 minutes.
	Timeout time.Duration
	// Out receives progress lines; nil discards them.
	Out io.Writer
	// Client overrides the API client (tests).
	Client *client.Client
}

// ErrNotCommitted is returned when the device ended the update in any
// other way than committing it; the Outcome says how and why.
var ErrNotCommitted = errors.New("the device did not commit the update")

// Push uploads the bundle and waits for the outcome.
func Push(ctx context.Context, o Options) (updater.Outcome, error) {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Minute
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c := o.Client
	if c == nil {
		c = client.TCP(o.Device, o.Token)
	}

	f, err := os.Open(o.Bundle)
	if err != nil {
		return updater.Outcome{}, fmt.Errorf("update: %w", err)
	}
	defer f.Close()
	m, _, err := bundle.Inspect(f)
	if err != nil {
		return updater.Outcome{}, fmt.Errorf("update: %s: %w", o.Bundle, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return updater.Outcome{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return updater.Outcome{}, err
	}

	before, err := c.Status(ctx)
	if err != nil {
		return updater.Outcome{}, fmt.Errorf("update: reach %s: %w (is api.listen set in its device.yaml, and the token right?)", o.Device, err)
	}
	fmt.Fprintf(out, "device %s: %s %s on %s, slot %s\n", o.Device, before.Release.Name, before.Release.Version, before.Release.Board, before.Boot.Slot)
	fmt.Fprintf(out, "bundle: %s %s for %s, %d MiB\n", m.Name, m.Version, m.Board, fi.Size()>>20)

	pr := &progressReader{r: f}
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchInstall(ctx, c, out, pr, fi.Size(), done)
	}()
	resp, err := c.Upload(ctx, pr, fi.Size(), client.UploadOptions{Force: o.Force})
	close(done)
	<-watched
	if err != nil {
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Refused() {
			fmt.Fprintf(out, "refused by the device: %s\n", ae.Message)
			return updater.Outcome{ID: resp.ID, Result: updater.ResultRefused, Reason: ae.Message, FromVersion: before.Release.Version, ToVersion: m.Version},
				fmt.Errorf("%w: refused: %s", ErrNotCommitted, ae.Message)
		}
		return updater.Outcome{}, fmt.Errorf("update: %w", err)
	}
	fmt.Fprintf(out, "installed and verified (update %s, %s); the device reboots into the new slot\n", resp.ID, resp.Phase)

	last := ""
	outcome, err := c.WaitOutcome(ctx, resp.ID, 2*time.Second, func(st api.Status, err error) {
		line := "device not answering (rebooting?)"
		if err == nil {
			line = fmt.Sprintf("device: %s, slot %s, update %s", st.Release.Version, st.Boot.Slot, st.Update.Phase)
		}
		if line != last {
			fmt.Fprintln(out, line)
			last = line
		}
	})
	if err != nil {
		return updater.Outcome{}, fmt.Errorf("update: %w", err)
	}
	fmt.Fprintf(out, "outcome: %s %s -> %s: %s\n", outcome.Result, outcome.FromVersion, outcome.ToVersion, outcome.Reason)
	if outcome.Result != updater.ResultCommitted {
		return outcome, fmt.Errorf("%w: %s: %s", ErrNotCommitted, outcome.Result, outcome.Reason)
	}
	return outcome, nil
}

// watchInstall prints the install's progress until done: what was sent
// and, from the device's status (polled on a second connection), what it
// has written into the slot and read back.
func watchInstall(ctx context.Context, c *client.Client, out io.Writer, pr *progressReader, size int64, done <-chan struct{}) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		line := fmt.Sprintf("sent %d / %d MiB", pr.n.Load()>>20, size>>20)
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := c.Status(sctx)
		cancel()
		if err == nil && st.Update.Update != nil {
			p := st.Update.Progress
			line += fmt.Sprintf("; device %s: slot %s written %d / %d MiB, verified %d MiB",
				st.Update.Phase, st.Update.Update.Target, p.ImageBytes>>20, p.ImageSize>>20, p.VerifyBytes>>20)
		}
		if line != last {
			fmt.Fprintln(out, line)
			last = line
		}
	}
}

type progressReader struct {
	r io.Reader
	n atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}
