// Command badinit is a deliberately broken /sbin/init for the boot-state
// tests (tests/bootstate_test.go): a root slot whose PID 1 fails the way a
// bad OS update can fail. The test links the mode in with
// -ldflags "-X main.mode=exit|hang".
//
//   - exit: PID 1 exits, the kernel panics ("Attempted to kill init!") and,
//     with panic=10 on the command line, reboots: a failed boot.
//   - hang: PID 1 never feeds the watchdog the initramfs armed and never
//     exits: only the hardware watchdog can end the boot.
package main

import (
	"fmt"
	"os"
	"time"
)

var mode = "exit"

func main() {
	switch mode {
	case "hang":
		fmt.Fprintln(os.Stdout, "bulkhead-test: bad init: hanging without feeding the watchdog")
		// A sleeping timer keeps the Go runtime from declaring a
		// deadlock (which would exit, and panic the kernel instead).
		for {
			time.Sleep(time.Hour)
		}
	default:
		fmt.Fprintln(os.Stdout, "bulkhead-test: bad init: exiting")
		os.Exit(1)
	}
}
