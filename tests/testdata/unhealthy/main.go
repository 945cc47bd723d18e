// Command unhealthy is a health check that always fails. The OTA tests
// ship it in /etc/bulkhead/health.d of a deliberately broken release, whose
// trial must then roll back by itself.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("deliberately unhealthy release %s on slot %s\n", os.Getenv("BULKHEAD_VERSION"), os.Getenv("BULKHEAD_SLOT"))
	os.Exit(1)
}
