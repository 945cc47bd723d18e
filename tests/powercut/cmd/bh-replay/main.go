// Command bh-replay checks the crash states of a kept power-cut recording
// (BULKHEAD_TORTURE_KEEP=<dir> go test ./tests -run TestPowerCut) again,
// without QEMU: to debug a failure, or to try a change of the checks.
//
//	bh-replay -recording <dir>/<board> [-full] [-states 500] [-seed 1] [-fixtures dir]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/tests/powercut"
)

func main() {
	dir := flag.String("recording", "", "directory of a kept recording (holds recording.json)")
	full := flag.Bool("full", false, "the full enumeration of make torture (default: the sample of make test)")
	states := flag.Int("states", 150, "crash states to check without -full (0: all enumerated)")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "sampling seed")
	workers := flag.Int("workers", 2, "states checked in parallel")
	fixtures := flag.String("fixtures", "", "keep a fixture of every failing state here")
	verbose := flag.Bool("v", false, "print every state")
	only := flag.String("state", "", "check only the crash state of this name (as reports print it)")
	dump := flag.String("dump", "", "write the data partition of every checked state (before the journal replay) into this directory")
	first := flag.Int("first", 0, "with -full: check only the first n enumerated states (to measure the rate)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the checks here")
	flag.Parse()
	if *dir == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bh-replay:", err)
			os.Exit(1)
		}
	}
	failed, err := run(*dir, *full, *states, *first, *seed, *workers, *fixtures, *dump, *only, *verbose)
	pprof.StopCPUProfile() // also when states failed: the profile is complete
	if err != nil {
		fmt.Fprintln(os.Stderr, "bh-replay:", err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}

func run(dir string, full bool, n, first int, seed uint64, workers int, fixtures, dump, only string, verbose bool) (failed bool, err error) {
	rec, err := powercut.LoadRecording(dir)
	if err != nil {
		return false, err
	}
	scratch, rm, err := powercut.MemoryScratch()
	if err != nil {
		return false, err
	}
	defer rm()
	c, log, done, err := rec.Open(scratch, workers)
	if err != nil {
		return false, err
	}
	defer done()
	defer c.Close()
	start := time.Now()
	audit, err := c.Audit()
	if err != nil {
		return false, err
	}
	for _, w := range audit.BootStateWrites {
		fmt.Println("boot state", w)
	}
	for _, f := range audit.Findings {
		fmt.Println("AUDIT FAILURE", f.Detail)
	}
	o := powercut.EnumOptions{Exhaustive: 4, Sampled: 4, TearAll: 8, TearSampled: 4}
	if full {
		o = powercut.FullEnum
		o.Focus = c.OutsideData
	}
	o.Seed = seed
	all := powercut.Enumerate(log, o)
	list := all
	switch {
	case only != "":
		list = nil
		for _, s := range all {
			if s.Name() == only {
				list = append(list, s)
			}
		}
		if len(list) == 0 {
			return false, fmt.Errorf("no crash state %q in the enumeration (the same -full and -seed as the run that printed it?)", only)
		}
	case full && first > 0:
		list = all[:min(first, len(all))]
	case !full && n > 0:
		list = powercut.Sample(all, n, seed, nil, c.Phase)
	}
	fmt.Printf("%s: %d log entries, %d crash states enumerated, checking %d (seed %d)\n", rec.Board, len(log.Entries), len(all), len(list), seed)
	rep, err := c.Check(context.Background(), list, func(r *powercut.Result) {
		if verbose || r.Failed() {
			b, _ := json.Marshal(r)
			fmt.Println(string(b))
		}
		if dump != "" {
			if err := c.DumpData(r.State, filepath.Join(dump, strings.NewReplacer("/", "_", "@", "-").Replace(r.Name)+".img")); err != nil {
				fmt.Fprintln(os.Stderr, "dump:", err)
			}
		}
		if r.Failed() && fixtures != "" {
			f, err := c.Fixture(context.Background(), r, fixtures)
			if err == nil {
				_, err = f.Save(fixtures)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "fixture:", err)
			}
		}
	})
	if err != nil {
		return false, err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(b))
	fmt.Printf("%d states checked in %s, %d failed\n", rep.Checked, time.Since(start).Round(time.Second), rep.Failed)
	return rep.Failed > 0 || len(audit.Findings) > 0, nil
}
