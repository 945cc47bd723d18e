package api

import (
	"io"

	"golang.org/x/sys/unix"
)

var ioEOF = io.EOF

func umask(m int) int { return unix.Umask(m) }
