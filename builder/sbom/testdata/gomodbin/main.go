// Command gomodbin is a fixture for GoModules: a small Go binary of this
// module with one dependency module, built by the test.
package main

import (
	"fmt"

	"github.com/google/uuid"
)

func main() {
	fmt.Println(uuid.NewSHA1(uuid.NameSpaceURL, []byte("bulkhead")))
}
