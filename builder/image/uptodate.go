package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// inputsKey digests everything the outputs depend on: the board, lock and
// image configuration files, the identity settings, the compiled programs
// and the builder itself. Equal keys mean equal outputs, because the build
// is reproducible.
func (b *Build) inputsKey() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "name=%s\nversion=%s\nepoch=%d\ncompress=%v\n", b.cfg.Name, b.cfg.Version, b.cfg.Epoch.Unix(), b.cfg.Compress)
	files := []string{b.cfg.Board.File, b.cfg.LockFile, filepath.Join(b.cfg.SrcDir, OSConfigPath)}
	if b.cfg.SigningKey != "" {
		files = append(files, b.cfg.SigningKey, b.cfg.SigningKey+".pub")
	}
	if exe, err := os.Executable(); err == nil {
		files = append(files, exe)
	}
	for _, p := range programs {
		files = append(files, filepath.Join(b.binDir, p.name))
	}
	for _, f := range files {
		if err := hashFile(h, f); err != nil {
			return "", err
		}
	}
	for _, o := range b.cfg.Overlay {
		fmt.Fprintf(h, "overlay %s %o %d\n", o.Path, o.Mode, len(o.Data))
		h.Write(o.Data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashFile(h io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("inputs: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(h, "file %s\n", filepath.Base(path))
	_, err = io.Copy(h, f)
	return err
}

func (b *Build) base() string {
	return fmt.Sprintf("%s-%s-%s", b.cfg.Name, b.cfg.Board.Name, b.cfg.Version)
}

func (b *Build) keyFile() string {
	return filepath.Join(b.cfg.OutDir, "."+b.base()+".inputs")
}

// upToDate reports whether deploy/ already holds the outputs of these exact
// inputs: every file SHA256SUMS lists is there with the size it had.
func (b *Build) upToDate(key string) (*Result, bool) {
	data, err := os.ReadFile(b.keyFile())
	if err != nil {
		return nil, false
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 2 || lines[0] != key {
		return nil, false
	}
	for _, l := range lines[1:] {
		var name string
		var size int64
		if _, err := fmt.Sscanf(l, "%d %s", &size, &name); err != nil {
			return nil, false
		}
		fi, err := os.Stat(filepath.Join(b.cfg.OutDir, name))
		if err != nil || fi.Size() != size {
			return nil, false
		}
	}
	if _, err := os.Stat(b.slotImageCache()); err != nil {
		return nil, false
	}
	b.slotImage = b.slotImageCache()
	return b.result(), true
}

// recordInputs writes the key and the published files' sizes.
func (b *Build) recordInputs(key string, names []string) error {
	sort.Strings(names)
	var s strings.Builder
	s.WriteString(key + "\n")
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(b.cfg.OutDir, n))
		if err != nil {
			return err
		}
		fmt.Fprintf(&s, "%d %s\n", fi.Size(), n)
	}
	return os.WriteFile(b.keyFile(), []byte(s.String()), 0o644)
}

func (b *Build) slotImageCache() string {
	return b.work("root.ext4")
}
