// Command bulkhead-boot shows and changes the boot state on a running
// Bulkhead device: which slot is committed, whether a trial is pending.
//
//	bulkhead-boot [flags] status                  print the state as JSON
//	bulkhead-boot [flags] mark-good               commit the running trial slot
//	bulkhead-boot [flags] abandon                 end a pending trial; next boot is the committed slot
//	bulkhead-boot [flags] start-trial SLOT [TRIES] boot SLOT on trial for TRIES boots (default 3)
//
// The disk and the location of the two copies come from the kernel command
// line the bootloader wrote (bulkhead.disk, bulkhead.bootstate); --device
// and --bootstate override them, e.g. to work on an image file. It is a thin
// wrapper: the rules live in package bootloader, which the supervisor uses
// directly.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/bulkhead-os/bulkhead/bootloader"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type output struct {
	State     bootloader.State      `json:"state"`
	Source    string                `json:"source"`
	Default   bool                  `json:"default"`
	Target    string                `json:"target"`
	Copies    []bootloader.CopyInfo `json:"copies"`
	Device    string                `json:"device"`
	Bootstate string                `json:"bootstate"`
	Booted    *bootloader.Boot      `json:"booted,omitempty"`
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bulkhead-boot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	device := fs.String("device", "", "disk or image holding the boot state (default: the disk named by bulkhead.disk)")
	bootstate := fs.String("bootstate", "", "format and offsets, <uboot|grub>:<offset a>:<offset b>:<size> (default: bulkhead.bootstate)")
	cmdline := fs.String("cmdline", "/proc/cmdline", "kernel command line to read bulkhead.* from")
	force := fs.Bool("force", false, "mark-good: commit even if this boot is not a trial boot of the trial slot")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bulkhead-boot [flags] status | mark-good | abandon | start-trial SLOT [TRIES]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return 2
	}
	if err := do(fs.Args(), *device, *bootstate, *cmdline, *force, stdout); err != nil {
		fmt.Fprintf(stderr, "bulkhead-boot: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) }

func do(args []string, device, bootstate, cmdlinePath string, force bool, stdout io.Writer) error {
	verb := args[0]
	switch verb {
	case "status", "mark-good", "abandon":
		if len(args) != 1 {
			return usageError(verb + " takes no arguments")
		}
	case "start-trial":
		if len(args) < 2 || len(args) > 3 {
			return usageError("usage: start-trial SLOT [TRIES]")
		}
	default:
		return usageError(fmt.Sprintf("unknown command %q: want status, mark-good, abandon or start-trial", verb))
	}

	var boot *bootloader.Boot
	if raw, err := os.ReadFile(cmdlinePath); err == nil {
		b, err := bootloader.ParseCmdline(string(raw))
		if err != nil {
			return fmt.Errorf("%s: %w", cmdlinePath, err)
		}
		boot = &b
	} else if device == "" || bootstate == "" {
		return fmt.Errorf("read kernel command line (or pass --device and --bootstate): %w", err)
	}
	if bootstate == "" {
		bootstate = boot.Bootstate
	}
	if bootstate == "" {
		return fmt.Errorf("%s has no %s=: not booted by a Bulkhead bootloader (pass --bootstate)", cmdlinePath, bootloader.ArgBootstate)
	}
	bs, err := bootloader.ParseBootstateArg(bootstate)
	if err != nil {
		return err
	}
	codec, err := bs.Codec()
	if err != nil {
		return err
	}
	if device == "" {
		if boot.Disk == "" {
			return fmt.Errorf("%s has no %s=: pass --device", cmdlinePath, bootloader.ArgDisk)
		}
		if device, err = bootloader.FindDisk(boot.Disk); err != nil {
			return err
		}
	}
	f, err := bootloader.OpenDevice(device)
	if err != nil {
		return err
	}
	defer f.Close()
	store := bootloader.NewStore(f, codec, bs.OffA, bs.OffB)

	switch verb {
	case "status":
		st, info, err := store.Status()
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(output{
			State: st, Source: info.Source, Default: info.Default(), Target: info.Target,
			Copies: info.Copies[:], Device: device, Bootstate: bs.String(), Booted: boot,
		})
	case "mark-good":
		st, _, err := store.Status()
		if err != nil {
			return err
		}
		if st.Trial == bootloader.SlotNone {
			fmt.Fprintf(stdout, "no trial pending: slot %s is committed\n", st.Committed)
			return nil
		}
		if !force {
			if boot == nil || boot.Slot == "" {
				return fmt.Errorf("mark-good: cannot tell which slot is running (no %s= in %s): pass --force", bootloader.ArgSlot, cmdlinePath)
			}
			if err := bootloader.CheckCommit(st, boot.Slot, boot.Trial); err != nil {
				return fmt.Errorf("mark-good: %w", err)
			}
		}
		st, err = store.Commit()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "committed slot %s (%s)\n", st.Committed, st)
	case "abandon":
		st, err := store.AbandonTrial()
		if errors.Is(err, bootloader.ErrNoTrial) {
			fmt.Fprintln(stdout, err)
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "trial abandoned: next boot is slot %s (%s)\n", st.Committed, st)
	case "start-trial":
		slot, err := bootloader.ParseSlot(args[1])
		if err != nil {
			return usageError(err.Error())
		}
		tries := bootloader.DefaultTries
		if len(args) == 3 {
			if tries, err = strconv.Atoi(args[2]); err != nil {
				return usageError(fmt.Sprintf("tries %q: %v", args[2], err))
			}
		}
		st, err := store.StartTrial(slot, tries)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "trial of slot %s for %d boots starts at the next boot (%s)\n", slot, tries, st)
	}
	return nil
}
