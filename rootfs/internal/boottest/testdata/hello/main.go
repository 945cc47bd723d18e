// Command hello is the service of the boot test: it greets, then waits for
// SIGTERM and says goodbye, so the test sees supervision and shutdown.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	fmt.Println("hello", strings.Join(os.Args[1:], " "))
	<-sigs
	fmt.Println("goodbye")
}
