package debian

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// compressionOf returns the compression a file name's suffix implies:
// "xz", "gz", "zst", "bz2" or "" for none.
func compressionOf(name string) string {
	for _, c := range []string{"xz", "gz", "zst", "bz2"} {
		if strings.HasSuffix(name, "."+c) {
			return c
		}
	}
	return ""
}

// preferHostXZ is switched off by tests to exercise the pure Go decoder.
var preferHostXZ = true

// hostXZ is the path of the host's xz, or "". The xz binary decodes about
// ten times faster than the pure Go decoder (a 9 MB Packages.xz takes about
// half a second instead of several), and the arm64 kernel package is a
// 60 MB data.tar.xz.
var hostXZ = sync.OnceValue(func() string {
	p, err := exec.LookPath("xz")
	if err != nil {
		return ""
	}
	return p
})

// decompress returns a reader of the decompressed content of r. Closing it
// releases the decoder (and stops the host xz process); it does not close r.
func decompress(r io.Reader, kind string) (io.ReadCloser, error) {
	switch kind {
	case "":
		return io.NopCloser(r), nil
	case "gz":
		zr, err := gzip.NewReader(bufio.NewReader(r))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case "bz2":
		return io.NopCloser(bzip2.NewReader(bufio.NewReader(r))), nil
	case "zst":
		// One goroutine: archives are read sequentially, and the default
		// (GOMAXPROCS decoders with their windows) costs memory for
		// nothing here.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case "xz":
		if p := hostXZ(); p != "" && preferHostXZ {
			return startXZ(p, r)
		}
		zr, err := xz.NewReader(bufio.NewReaderSize(r, 1<<16))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(zr), nil
	}
	return nil, fmt.Errorf("unsupported compression %q", kind)
}

// xzProcess reads the output of "xz -dc". A decode error (corrupt input)
// only shows in the exit status, so it is reported from Read at the end of
// the output instead of a plain io.EOF: the caller sees it where it would
// see a Go decoder's error.
type xzProcess struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr bytes.Buffer
	waited bool
	err    error
}

func startXZ(path string, r io.Reader) (*xzProcess, error) {
	x := &xzProcess{cmd: exec.Command(path, "-dc", "-q")}
	x.cmd.Stdin = r
	x.cmd.Stderr = &x.stderr
	out, err := x.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	x.out = out
	if err := x.cmd.Start(); err != nil {
		return nil, fmt.Errorf("xz: start %s: %w", path, err)
	}
	return x, nil
}

func (x *xzProcess) Read(p []byte) (int, error) {
	n, err := x.out.Read(p)
	if errors.Is(err, io.EOF) {
		if werr := x.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (x *xzProcess) wait() error {
	if x.waited {
		return x.err
	}
	x.waited = true
	if err := x.cmd.Wait(); err != nil {
		x.err = fmt.Errorf("xz: %v: %s", err, strings.TrimSpace(x.stderr.String()))
	}
	return x.err
}

// Close stops xz if the caller did not read to the end (extracting a few
// files of a large archive) and reaps it.
func (x *xzProcess) Close() error {
	if x.waited {
		return nil
	}
	if x.cmd.Process != nil {
		if err := x.cmd.Process.Kill(); err != nil {
			slog.Debug("debian: could not stop xz", "err", err)
		}
	}
	x.out.Close()
	x.wait()
	return nil
}
