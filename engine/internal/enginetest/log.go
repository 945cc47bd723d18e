package enginetest

import (
	"io"
	"log"
)

// nopLogger silences the registry's per-request log lines, which would
// drown test failures.
func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }
