// Package logfile writes a log file on the data partition that never grows
// beyond a fixed budget: when the current file would exceed MaxSize it is
// renamed to <name>.1, older files shift up, and the oldest is dropped.
//
// It does not fsync: logs are worth less than the flash writes a sync per
// line would cost, and ext4 commits every few seconds anyway.
package logfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Writer is a size-rotated log file, safe for concurrent use.
type Writer struct {
	path    string
	maxSize int64
	files   int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (appending to) the log at path, keeping at most files files
// (path, path.1, ... path.<files-1>) of at most maxSize bytes each. The
// directory is created when missing.
func Open(path string, maxSize int64, files int) (*Writer, error) {
	if maxSize <= 0 || files < 1 {
		return nil, fmt.Errorf("log %s: need a positive size and at least one file", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log %s: %w", path, err)
	}
	w := &Writer{path: path, maxSize: maxSize, files: files}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("log %s: %w", w.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log %s: %w", w.path, err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Write appends p, rotating first if p would push the file past the limit.
// Callers write whole lines, so a line is never split across two files; a
// single line longer than the limit gets a file of its own.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, errors.New("log is closed")
	}
	if w.size > 0 && w.size+int64(len(p)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := w.f.Write(p)
	w.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("log %s: %w", w.path, err)
	}
	return n, nil
}

func (w *Writer) rotate() error {
	w.f.Close()
	w.f = nil
	// Shift path.(n-1) -> path.n, dropping the oldest by overwriting it.
	for i := w.files - 1; i >= 1; i-- {
		from := w.name(i - 1)
		if err := os.Rename(from, w.name(i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("log rotate %s: %w", from, err)
		}
	}
	if w.files == 1 {
		if err := os.Truncate(w.path, 0); err != nil {
			return fmt.Errorf("log rotate %s: %w", w.path, err)
		}
	}
	return w.open()
}

func (w *Writer) name(i int) string {
	if i == 0 {
		return w.path
	}
	return fmt.Sprintf("%s.%d", w.path, i)
}

// Close closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
