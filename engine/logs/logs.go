// Package logs stores container output as size-rotated JSON-lines files
// (docker's json-file format: {"log","stream","time"}) and reads them back,
// with tail, since and follow.
//
// It owns the file format and rotation. It must not fsync: logs are the
// largest steady write load on the device's flash, and losing the last
// seconds of output in a power cut is the accepted trade (the kernel writes
// them back within its dirty-page interval).
package logs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// FileName is the current log file in a container's log directory.
const FileName = "container.log"

// Entry is one line of output.
type Entry struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
}

// Writer appends entries to a rotated set of files.
type Writer struct {
	dir      string
	maxSize  int64
	maxFiles int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// NewWriter opens (appending) the log in dir. A file grows to maxSize
// bytes, then becomes container.log.1 and so on up to maxFiles files in
// total.
func NewWriter(dir string, maxSize int64, maxFiles int) (*Writer, error) {
	if maxFiles < 1 {
		maxFiles = 1
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("container log directory: %w", err)
	}
	w := &Writer{dir: dir, maxSize: maxSize, maxFiles: maxFiles}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(filepath.Join(w.dir, FileName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open container log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

func (w *Writer) rotate() error {
	w.f.Close()
	base := filepath.Join(w.dir, FileName)
	if w.maxFiles == 1 {
		os.Remove(base)
	} else {
		for i := w.maxFiles - 1; i >= 1; i-- {
			src := base
			if i > 1 {
				src = base + "." + strconv.Itoa(i-1)
			}
			os.Rename(src, base+"."+strconv.Itoa(i))
		}
	}
	return w.open()
}

// Write records one entry.
func (w *Writer) Write(e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.maxSize > 0 && w.size > 0 && w.size+int64(len(line)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(line)
	w.size += int64(n)
	return err
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}

// maxLine bounds a line kept in memory: a program that prints megabytes
// without a newline is split, as docker does at 16 KiB.
const maxLine = 16 << 10

// Copy reads r until EOF and records its lines as stream. It returns when
// r is exhausted (the program closed its output).
func (w *Writer) Copy(stream string, r io.Reader) error {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if werr := w.Write(Entry{Log: string(line), Stream: stream, Time: time.Now().UTC()}); werr != nil {
				return werr
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Options select what Read returns.
type Options struct {
	Stdout, Stderr bool
	Tail           int       // last N entries; < 0 for all
	Since          time.Time // entries after this time
	Until          time.Time
	Follow         bool
	// Done is closed when no more output will come (the container
	// exited); Follow then drains what is written and returns.
	Done <-chan struct{}
	Poll time.Duration // follow interval (default 200ms)
}

func (o *Options) want(e *Entry) bool {
	if e.Stream == "stdout" && !o.Stdout || e.Stream == "stderr" && !o.Stderr {
		return false
	}
	if !o.Since.IsZero() && !e.Time.After(o.Since) {
		return false
	}
	if !o.Until.IsZero() && e.Time.After(o.Until) {
		return false
	}
	return true
}

// files lists the log files oldest first.
func files(dir string, max int) []string {
	base := filepath.Join(dir, FileName)
	var out []string
	for i := max; i >= 1; i-- {
		p := base + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return append(out, base)
}

// Read sends the entries of the log in dir to emit, oldest first.
func Read(ctx context.Context, dir string, opts Options, emit func(Entry) error) error {
	if opts.Poll <= 0 {
		opts.Poll = 200 * time.Millisecond
	}
	var tail []Entry
	keep := func(e Entry) error {
		if !opts.want(&e) {
			return nil
		}
		if opts.Tail < 0 {
			return emit(e)
		}
		if opts.Tail == 0 {
			return nil
		}
		tail = append(tail, e)
		if len(tail) > opts.Tail {
			tail = tail[1:]
		}
		return nil
	}
	list := files(dir, 32)
	var cur *os.File
	var pos int64
	for i, p := range list {
		f, err := os.Open(p)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return err
		}
		n, err := scan(f, keep)
		if err != nil {
			f.Close()
			return err
		}
		if i == len(list)-1 {
			cur, pos = f, n
		} else {
			f.Close()
		}
	}
	for _, e := range tail {
		if err := emit(e); err != nil {
			return err
		}
	}
	if !opts.Follow || cur == nil {
		if cur != nil {
			cur.Close()
		}
		return nil
	}
	defer func() { cur.Close() }()
	send := func(e Entry) error {
		if !opts.want(&e) {
			return nil
		}
		return emit(e)
	}
	tick := time.NewTicker(opts.Poll)
	defer tick.Stop()
	for {
		done := false
		select {
		case <-ctx.Done():
			return nil
		case <-opts.Done:
			done = true
		case <-tick.C:
		}
		cur.Seek(pos, io.SeekStart)
		n, err := scan(cur, send)
		pos += n
		if err != nil {
			return err
		}
		// Rotation renamed our file away: finish it (done above), then
		// continue with the new current file.
		if rotated(cur, filepath.Join(dir, FileName)) {
			f, err := os.Open(filepath.Join(dir, FileName))
			if err == nil {
				cur.Close()
				cur, pos = f, 0
				continue
			}
		}
		if done {
			return nil
		}
	}
}

func rotated(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	if err1 != nil || err2 != nil {
		return false
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Ino != sb.Ino
}

// scan decodes complete lines from f's current offset and returns how many
// bytes they spanned; a partial last line is left for the next call.
func scan(f *os.File, emit func(Entry) error) (int64, error) {
	br := bufio.NewReaderSize(f, 64<<10)
	var n int64
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += int64(len(line))
		var e Entry
		if json.Unmarshal(bytes.TrimSpace(line), &e) != nil {
			continue // a torn line from a power cut
		}
		if err := emit(e); err != nil {
			return n, err
		}
	}
}
