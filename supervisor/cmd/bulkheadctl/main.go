// Command bulkheadctl drives the supervisor's device API: on the device
// over its unix socket, or from a workstation with -device and a token.
// docs/update-protocol.md describes the commands.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead-os/bulkhead/supervisor/api"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
)

const usage = `usage: bulkheadctl [-socket path | -device host[:port] -token t] command [args]

commands:
  status [-json]                      running version, slot, boot state, update phase and progress, last outcomes
  update [-force] [-no-reboot] [-wait] <https-url | /path/on/device | registry/ref:tag>
                                      fetch and install a bundle in the background
  install [-force] [-no-reboot] [-wait] <bundle file | ->
                                      stream a local bundle to the device and install it
  wait <update id>                    wait for an update's outcome (across reboots)
  cancel                              stop a download in progress
  mark-good                           commit the running trial slot now
  abandon                             give up the pending or running trial
  reboot                              reboot the device
  inspect <bundle file>               show a bundle's manifest (NOT verified)

The token may also come from $BULKHEAD_TOKEN.
`

func main() {
	socket := flag.String("socket", api.DefaultSocket, "device API unix socket")
	device := flag.String("device", "", "device API address (host or host:port) instead of the socket")
	token := flag.String("token", os.Getenv("BULKHEAD_TOKEN"), "bearer token for -device (device.yaml api.token)")
	flag.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := client.Unix(*socket)
	if *device != "" {
		c = client.TCP(*device, *token)
	}
	if err := run(ctx, c, flag.Arg(0), flag.Args()[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bulkheadctl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c *client.Client, cmd string, args []string) error {
	switch cmd {
	case "status":
		fs := flag.NewFlagSet("status", flag.ExitOnError)
		asJSON := fs.Bool("json", false, "print the raw JSON")
		fs.Parse(args)
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(st)
		}
		printStatus(st)
		return nil
	case "update", "install":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		force := fs.Bool("force", false, "allow a downgrade, the same version or another OS")
		noReboot := fs.Bool("no-reboot", false, "stay in ready-to-reboot; reboot later with `bulkheadctl reboot`")
		wait := fs.Bool("wait", false, "wait for the outcome (across the reboot)")
		fs.Parse(args)
		if fs.NArg() != 1 {
			return fmt.Errorf("%s takes one source", cmd)
		}
		var resp api.UpdateResponse
		var err error
		if cmd == "update" {
			resp, err = c.StartUpdate(ctx, api.UpdateRequest{Source: fs.Arg(0), Force: *force, NoReboot: *noReboot})
		} else {
			resp, err = upload(ctx, c, fs.Arg(0), client.UploadOptions{Force: *force, NoReboot: *noReboot})
		}
		if err != nil {
			return err
		}
		fmt.Printf("update %s: %s\n", resp.ID, resp.Phase)
		if *wait {
			return waitFor(ctx, c, resp.ID)
		}
		return nil
	case "wait":
		if len(args) != 1 {
			return errors.New("wait takes an update id")
		}
		return waitFor(ctx, c, args[0])
	case "cancel", "mark-good", "abandon", "reboot":
		f := map[string]func(context.Context) (api.UpdateResponse, error){
			"cancel": c.Cancel, "mark-good": c.MarkGood, "abandon": c.Abandon, "reboot": c.Reboot,
		}[cmd]
		resp, err := f(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("%s: ok (update phase %s)\n", cmd, resp.Phase)
		return nil
	case "inspect":
		if len(args) != 1 {
			return errors.New("inspect takes a bundle file")
		}
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		m, ids, err := bundle.Inspect(f)
		if err != nil {
			return err
		}
		fmt.Println("# NOT verified: the device checks the signature against its trusted keys")
		fmt.Printf("# signed by key(s) %s\n", strings.Join(ids, ", "))
		return printJSON(m)
	}
	return fmt.Errorf("unknown command %q (see bulkheadctl -h)", cmd)
}

func upload(ctx context.Context, c *client.Client, path string, o client.UploadOptions) (api.UpdateResponse, error) {
	var r io.Reader = os.Stdin
	size := int64(-1)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return api.UpdateResponse{}, err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		r = f
	}
	return c.Upload(ctx, r, size, o)
}

func waitFor(ctx context.Context, c *client.Client, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	last := ""
	o, err := c.WaitOutcome(ctx, id, 2*time.Second, func(st api.Status, err error) {
		line := "device not answering"
		if err == nil {
			line = fmt.Sprintf("phase %s", st.Update.Phase)
		}
		if line != last {
			fmt.Println(line)
			last = line
		}
	})
	if err != nil {
		return err
	}
	fmt.Printf("outcome: %s (%s -> %s) %s\n", o.Result, o.FromVersion, o.ToVersion, o.Reason)
	if o.Result != "committed" {
		return fmt.Errorf("update %s was not committed", id)
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printStatus(st api.Status) {
	r := st.Release
	fmt.Printf("%s %s (%s/%s, kernel %s) on %s\n", r.Name, r.Version, r.Board, r.Arch, r.Kernel, st.Hostname)
	trial := ""
	if st.Boot.Trial {
		trial = " (trial boot)"
	}
	fmt.Printf("running slot %s%s, up %s\n", st.Boot.Slot, trial, time.Duration(st.UptimeSeconds)*time.Second)
	if p := st.Supervisor; p != nil && p.RSSBytes > 0 {
		fmt.Printf("supervisor: pid %d, resident %.1f MiB (peak %.1f MiB)\n", p.PID, float64(p.RSSBytes)/(1<<20), float64(p.PeakRSSBytes)/(1<<20))
	}
	if st.BootState != nil {
		fmt.Printf("boot state: %s\n", st.BootState)
	} else if st.BootStateError != "" {
		fmt.Printf("boot state: unreadable: %s\n", st.BootStateError)
	}
	u := st.Update
	fmt.Printf("update: %s", u.Phase)
	if up := u.Update; up != nil {
		fmt.Printf(" %s from %s into slot %s", up.ID, up.Source, up.Target)
		if up.Manifest != nil {
			fmt.Printf(", version %s", up.Manifest.Version)
		}
	}
	fmt.Println()
	p := u.Progress
	if p.ImageSize > 0 {
		fmt.Printf("progress: bundle %d/%d MiB, image %d/%d MiB, verified %d MiB\n",
			p.BundleBytes>>20, max(p.BundleSize, 0)>>20, p.ImageBytes>>20, p.ImageSize>>20, p.VerifyBytes>>20)
	}
	if u.Update != nil {
		for _, r := range u.Update.Health {
			fmt.Printf("  health %s: %v %s\n", r.Name, r.OK, r.Detail)
		}
	}
	for i, o := range u.History {
		if i == 5 {
			break
		}
		fmt.Printf("  %s %s %s -> %s: %s\n", o.Time.Format(time.RFC3339), o.Result, o.FromVersion, o.ToVersion, o.Reason)
	}
}
