package compress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"

	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

const (
	// xzBlockSize is the uncompressed size of every block but the last.
	// Blocks are independent, so the output does not depend on how many
	// run in parallel; on a 2.4 GB image 16 MiB blocks made the file only
	// 0.002% larger than one single block.
	xzBlockSize = 16 << 20
	// xzPreset trades size for time. Measured with xz 5.4.1 on 2 cores, per
	// 16 MiB chunk of Go binaries (CPU seconds, output): -3 2.6 s 4.93 MB,
	// -4 3.8 s 4.64 MB, -6 6.0 s 4.50 MB. On a 2.4 GiB image holding 80 MiB
	// of kernel, binaries and modules, -4 used 23 CPU seconds (about 11 s
	// on two idle cores; 25 s on a busy build host, where -6 took 38 s) for
	// a 3.5% larger file. Zero chunks cost nothing (see XZ), so only the
	// real data pays this price.
	xzPreset = 4
	// xzDictSize is preset 4's LZMA2 dictionary, used by the Go fallback.
	xzDictSize = 4 << 20
)

// XZ compresses the file src (typically a sparse, multi-GiB disk image) to
// dst as a single .xz stream of independent 16 MiB blocks with CRC64
// checks, the layout `xz -T2 --block-size=16MiB -4` writes. dst appears
// atomically (temporary file, fsync, rename) and only when complete.
// progress, if not nil, is called from one goroutine with the input bytes
// done so far and the input size.
//
// Speed comes from two facts: chunks that are entirely zero (holes of a
// sparse file, unused partitions) all compress to the same block, so it is
// computed once and reused; and the remaining chunks are compressed in
// parallel, one per CPU. With the host's xz the result is byte-identical to
// running that xz over the whole file; without it a pure-Go encoder is used
// (and logged once), whose valid output is larger (by a quarter in the
// benchmark) and differs from xz's. Reproducibility therefore holds for a
// given xz version.
func XZ(ctx context.Context, src, dst string, progress func(done, total int64)) error {
	enc := xzEncoder()
	return xzFile(ctx, src, dst, enc, xzWorkers(), progress)
}

var xzFallbackOnce sync.Once

func xzEncoder() blockEncoder {
	if path, err := exec.LookPath("xz"); err == nil {
		return hostXZ{path: path}
	}
	xzFallbackOnce.Do(func() {
		slog.Warn("xz not found on PATH: compressing with the pure-Go encoder, whose output is larger; install xz-utils for smaller, xz-identical output")
	})
	return goXZ{}
}

func xzWorkers() int {
	// Each worker holds two 16 MiB buffers and, with the host xz, one
	// ~50 MiB encoder process; four bounds memory on large build hosts.
	return max(1, min(runtime.NumCPU(), 4))
}

// blockEncoder compresses one chunk into one complete .xz block with a CRC64
// check. Implementations must be deterministic and safe for concurrent use.
type blockEncoder interface {
	encode(ctx context.Context, chunk []byte) (xzBlock, error)
}

// hostXZ runs the xz program once per chunk.
type hostXZ struct{ path string }

func (h hostXZ) encode(ctx context.Context, chunk []byte) (xzBlock, error) {
	// Multi-threaded mode (--threads=2) writes block sizes into the block
	// headers, exactly as `xz -T2` does for a whole file; single-threaded
	// mode writes different bytes. --no-adjust makes xz fail rather than
	// silently fall back to single-threaded mode under a memory limit, which
	// would change the output from one machine to another.
	cmd := exec.CommandContext(ctx, h.path,
		"--format=xz", "--check=crc64", "-"+strconv.Itoa(xzPreset),
		"--threads=2", "--block-size="+strconv.Itoa(xzBlockSize), "--no-adjust",
		"--stdout", "--quiet")
	cmd.Stdin = bytes.NewReader(chunk)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return xzBlock{}, ctx.Err()
		}
		return xzBlock{}, fmt.Errorf("%s: %w: %s", h.path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	blk, err := xzSingleBlock(out.Bytes(), xzCheckCRC64)
	if err != nil {
		return xzBlock{}, fmt.Errorf("%s wrote an unexpected stream (%w): check that it is XZ Utils 5.2 or newer", h.path, err)
	}
	return blk, nil
}

// goXZ is the pure-Go fallback (github.com/ulikunitz/xz).
type goXZ struct{}

func (goXZ) encode(ctx context.Context, chunk []byte) (xzBlock, error) {
	if err := ctx.Err(); err != nil {
		return xzBlock{}, err
	}
	var out bytes.Buffer
	cfg := xz.WriterConfig{DictCap: xzDictSize, BlockSize: xzBlockSize, CheckSum: xz.CRC64}
	w, err := cfg.NewWriter(&out)
	if err != nil {
		return xzBlock{}, fmt.Errorf("xz encoder: %w", err)
	}
	if _, err := w.Write(chunk); err != nil {
		return xzBlock{}, fmt.Errorf("xz encoder: %w", err)
	}
	if err := w.Close(); err != nil {
		return xzBlock{}, fmt.Errorf("xz encoder: %w", err)
	}
	blk, err := xzSingleBlock(out.Bytes(), xzCheckCRC64)
	if err != nil {
		return xzBlock{}, fmt.Errorf("pure-Go xz encoder: %w", err)
	}
	return blk, nil
}

// chunkResult is the compressed form of one chunk, delivered in order.
type chunkResult struct {
	blk xzBlock
	err error
}

type chunkJob struct {
	data []byte
	res  chan<- chunkResult
}

func xzFile(ctx context.Context, src, dst string, enc blockEncoder, workers int, progress func(done, total int64)) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("xz: %s is not a regular file", src)
	}
	total := st.Size()

	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("xz: create output next to %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(out.Name())
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	jobs := make(chan chunkJob)
	// ordered carries one future per chunk, in file order. Its capacity
	// bounds the chunks in memory at once.
	ordered := make(chan chan chunkResult, workers+1)

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				blk, err := enc.encode(ctx, j.data)
				j.res <- chunkResult{blk, err}
			}
		}()
	}
	go func() {
		defer close(jobs)
		defer close(ordered)
		readChunks(ctx, in, total, enc, jobs, ordered)
	}()
	// Whatever happens below, stop the reader and the workers before
	// returning so no goroutine or xz process outlives the call.
	defer func() {
		cancel()
		for range ordered {
		}
		wg.Wait()
	}()

	const check = xzCheckCRC64
	if _, err := out.Write(xzStreamHeader(check)); err != nil {
		return fmt.Errorf("xz: write %s: %w", out.Name(), err)
	}
	if progress != nil {
		progress(0, total)
	}
	var (
		records []xzBlock
		done    int64
	)
	for fut := range ordered {
		r := <-fut
		if r.err != nil {
			return fmt.Errorf("xz %s at byte %d: %w", src, done, r.err)
		}
		if _, err := out.Write(r.blk.data); err != nil {
			return fmt.Errorf("xz: write %s: %w", out.Name(), err)
		}
		records = append(records, xzBlock{unpadded: r.blk.unpadded, uncompressed: r.blk.uncompressed})
		done += r.blk.uncompressed
		if progress != nil {
			progress(done, total)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("xz %s: %w", src, err)
	}
	if done != total {
		return fmt.Errorf("xz %s: compressed %d of %d bytes: did the file change during compression?", src, done, total)
	}
	if _, err := out.Write(xzIndexAndFooter(records, check)); err != nil {
		return fmt.Errorf("xz: write %s: %w", out.Name(), err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("xz: sync %s: %w", out.Name(), err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("xz: close %s: %w", out.Name(), err)
	}
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	if err := os.Rename(out.Name(), dst); err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	return nil
}

// readChunks reads src in xzBlockSize chunks and queues one future per chunk
// on ordered: all-zero chunks get the shared zero block at once, the others
// go to the workers. On error it queues a failed future and stops.
func readChunks(ctx context.Context, in *os.File, total int64, enc blockEncoder, jobs chan<- chunkJob, ordered chan<- chan chunkResult) {
	var zero *xzBlock
	fail := func(err error) {
		res := make(chan chunkResult, 1)
		res <- chunkResult{err: err}
		select {
		case ordered <- res:
		case <-ctx.Done():
		}
	}
	var spare []byte
	for off := int64(0); off < total; off += xzBlockSize {
		n := min(total-off, xzBlockSize)
		isZero, buf, err := readChunk(in, off, n, spare)
		if err != nil {
			fail(err)
			return
		}
		res := make(chan chunkResult, 1)
		select {
		case ordered <- res:
		case <-ctx.Done():
			return
		}
		// Only full-size zero chunks share a block; a short final one is
		// compressed like data.
		if isZero && n == xzBlockSize {
			spare = buf
			if zero == nil {
				blk, err := enc.encode(ctx, make([]byte, xzBlockSize))
				if err != nil {
					res <- chunkResult{err: fmt.Errorf("compress a zero chunk: %w", err)}
					return
				}
				zero = &blk
			}
			res <- chunkResult{blk: *zero}
			continue
		}
		spare = nil
		select {
		case jobs <- chunkJob{data: buf, res: res}:
		case <-ctx.Done():
			// Every queued future must resolve, or the writer waits forever.
			res <- chunkResult{err: ctx.Err()}
			return
		}
	}
}

// readChunk returns whether the n bytes at off are all zero, and otherwise
// the bytes. Holes of a sparse file are recognised without reading them.
func readChunk(in *os.File, off, n int64, spare []byte) (bool, []byte, error) {
	// SEEK_DATA moves to the first data at or after off; ENXIO means only
	// a hole follows. Filesystems without hole tracking report everything
	// as data, which merely costs a read.
	// Only a full-size chunk may skip the read: a short final chunk is
	// compressed like data and needs its n zero bytes.
	if next, err := in.Seek(off, unix.SEEK_DATA); n == xzBlockSize && (errors.Is(err, unix.ENXIO) || (err == nil && next >= off+n)) {
		return true, spare, nil
	}
	buf := spare
	if int64(cap(buf)) < n {
		buf = make([]byte, xzBlockSize)
	}
	buf = buf[:n]
	if _, err := in.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil, fmt.Errorf("%s shrank while being compressed", in.Name())
		}
		return false, nil, err
	}
	return allZero(buf), buf, nil
}

var zeroPage [64 << 10]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
