package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/bmap"
	"github.com/bulkhead-os/bulkhead/builder/compress"
	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/bulkhead-os/bulkhead/builder/sbom"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/keys"
	"golang.org/x/sync/errgroup"
)

// outputs writes every output into a private directory beside OutDir and
// renames them into place only when all are complete, so a failed build
// never leaves a partial image in deploy/.
func (b *Build) outputs(ctx context.Context, key string) (*Result, error) {
	if err := os.MkdirAll(b.cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(b.cfg.OutDir, ".partial-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)

	base := b.base()
	os.Remove(b.keyFile())
	img := filepath.Join(stage, base+".img")
	if err := os.Rename(b.diskImage, img); err != nil {
		return nil, err
	}
	names := []string{base + ".img", base + ".img.bmap", base + ".spdx.json"}
	g, gctx := errgroup.WithContext(ctx)
	if b.cfg.Compress {
		names = append(names, base+".img.xz")
		g.Go(func() error {
			return compress.XZ(gctx, img, filepath.Join(stage, base+".img.xz"), func(done, total int64) {
				b.cfg.Progress(Event{Phase: "xz", Item: base + ".img.xz", Done: done, Total: total})
			})
		})
	}
	g.Go(func() error {
		defer b.timed("bmap")()
		f, err := os.Create(filepath.Join(stage, base+".img.bmap"))
		if err != nil {
			return err
		}
		if err := bmap.Write(f, img); err != nil {
			f.Close()
			return fmt.Errorf("bmap: %w", err)
		}
		return f.Close()
	})
	g.Go(func() error {
		defer b.timed("sbom")()
		return b.writeSBOM(filepath.Join(stage, base+".spdx.json"))
	})
	if b.cfg.SigningKey != "" {
		names = append(names, base+".bundle")
		g.Go(func() error {
			defer b.timed("bundle")()
			return b.writeBundle(filepath.Join(stage, base+".bundle"), stage)
		})
	}
	// The image is the biggest file to hash: do it alongside the others.
	var imgSum string
	g.Go(func() error {
		defer b.timed("sha256 img")()
		var err error
		imgSum, err = fileSHA256(img)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sort.Strings(names)
	var sums strings.Builder
	for _, n := range names {
		sum := imgSum
		if n != base+".img" {
			var err error
			if sum, err = fileSHA256(filepath.Join(stage, n)); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&sums, "%s  %s\n", sum, n)
	}
	if err := os.WriteFile(filepath.Join(stage, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		return nil, err
	}
	// Publish. Each rename is atomic; SHA256SUMS goes last so that a reader
	// who trusts it only ever sees complete files.
	for _, n := range append(names, "SHA256SUMS") {
		if err := os.Rename(filepath.Join(stage, n), filepath.Join(b.cfg.OutDir, n)); err != nil {
			return nil, fmt.Errorf("publish %s: %w", n, err)
		}
	}
	if err := b.recordInputs(key, append(names, "SHA256SUMS")); err != nil {
		return nil, err
	}
	return b.result(), nil
}

// result names the published outputs of this build.
func (b *Build) result() *Result {
	base := filepath.Join(b.cfg.OutDir, b.base())
	res := &Result{
		Image: base + ".img",
		Bmap:  base + ".img.bmap",
		SBOM:  base + ".spdx.json",
		Sums:  filepath.Join(b.cfg.OutDir, "SHA256SUMS"),
		Slot:  b.slotImage,
	}
	if b.cfg.Compress {
		res.XZ = res.Image + ".xz"
	}
	if b.cfg.SigningKey != "" {
		res.Bundle = base + ".bundle"
	}
	return res
}

// writeBundle signs the root slot image into the OTA bundle
// (docs/update-protocol.md).
func (b *Build) writeBundle(path, tmp string) error {
	key, err := keys.LoadPrivate(b.cfg.SigningKey)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	m := bundle.Manifest{
		Name:      b.cfg.Name,
		Version:   b.cfg.Version,
		Board:     b.cfg.Board.Name,
		Arch:      b.cfg.Board.Arch,
		Kernel:    b.kernelVersion,
		BuildTime: b.cfg.Epoch.Unix(),
	}
	b.cfg.Progress(Event{Phase: "bundle", Item: filepath.Base(path)})
	img, err := os.Open(b.slotImage)
	if err != nil {
		return err
	}
	defer img.Close()
	src, err := newSparseReader(img)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := bundle.Write(w, m, src, key, &bundle.WriteOptions{TempDir: tmp}); err != nil {
		f.Close()
		return fmt.Errorf("bundle: %w", err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (b *Build) writeSBOM(path string) error {
	doc := sbom.Document{
		Name:    fmt.Sprintf("%s-%s-%s", b.cfg.Name, b.cfg.Board.Name, b.cfg.Version),
		Version: b.cfg.Version,
		Created: b.cfg.Epoch,
		Creator: "Tool: bulkhead-builder",
	}
	for _, in := range b.pins {
		p := in.pin
		lic := debian.Licenses(b.trees[p.Name], p.Name)
		doc.Packages = append(doc.Packages, sbom.Package{
			Kind:     "deb",
			Name:     p.Name,
			Version:  p.Version,
			Arch:     p.Arch,
			Supplier: "Organization: Debian",
			License:  sbom.LicenseExpression(lic),
			// The mirror is host configuration, not an input of the image: the
			// package is identified by its purl and SHA-256 instead.
			DownloadLocation: "NOASSERTION",
			SHA256:           p.SHA256,
		})
	}
	seen := map[string]bool{}
	for _, p := range programs {
		mods, err := sbom.GoModules(filepath.Join(b.binDir, p.name))
		if err != nil {
			return err
		}
		for _, m := range mods {
			if !seen[m.Name+"@"+m.Version] {
				seen[m.Name+"@"+m.Version] = true
				doc.Packages = append(doc.Packages, m)
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := sbom.Write(f, doc); err != nil {
		f.Close()
		return fmt.Errorf("sbom: %w", err)
	}
	return f.Close()
}

// timed logs how long a step took, at debug level.
func (b *Build) timed(step string) func() {
	start := time.Now()
	return func() { b.log.Debug("step done", "step", step, "took", time.Since(start).Round(time.Millisecond)) }
}

// fileSHA256 hashes a file, feeding the holes of a sparse file from memory
// instead of reading gigabytes of zeros through the kernel.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	ranges, err := bmap.DataRanges(f)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	h := sha256.New()
	zero := make([]byte, 1<<20)
	zeros := func(n int64) {
		for n > 0 {
			k := min(n, int64(len(zero)))
			h.Write(zero[:k])
			n -= k
		}
	}
	var pos int64
	for _, r := range ranges {
		zeros(r.Offset - pos)
		if _, err := io.Copy(h, io.NewSectionReader(f, r.Offset, r.Length)); err != nil {
			return "", fmt.Errorf("hash %s: %w", path, err)
		}
		pos = r.Offset + r.Length
	}
	zeros(fi.Size() - pos)
	return hex.EncodeToString(h.Sum(nil)), nil
}
