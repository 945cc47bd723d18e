package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
)

const (
	// chunk is the write size: large enough for flash to see whole erase
	// blocks, small enough for a 512 MiB device.
	chunk = 1 << 20
	// dropEvery is how often written data is flushed and evicted from the
	// page cache while streaming (see slot.CacheDropper).
	dropEvery = 32 << 20
)

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// refusal reports whether a bundle.Open error is the bundle's fault (refuse)
// rather than the transport's (fail, may be retried).
func refusal(err error) bool {
	for _, e := range []error{bundle.ErrNotBundle, bundle.ErrUnknownKey, bundle.ErrBadSignature, bundle.ErrCorrupt, bundle.ErrUnsupported, bundle.ErrInvalidManifest} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// openTarget re-checks target against the boot state as it is now and
// opens it.
func (u *Updater) openTarget(target bootloader.Slot) (slot.Device, error) {
	bs, err := u.cfg.BootState.Status()
	if err != nil {
		return nil, fmt.Errorf("read boot state: %w", err)
	}
	if err := checkTarget(target, bs, u.cfg.Boot); err != nil {
		return nil, err
	}
	dev, err := u.cfg.OpenSlot(target)
	if err != nil {
		return nil, fmt.Errorf("open slot %s: %w", target, err)
	}
	return dev, nil
}

// install streams the bundle in r into upd.Target and, once every byte
// is verified, arms the trial.
func (u *Updater) install(ctx context.Context, upd *Update, r io.Reader, size int64) error {
	u.prog.bundleSize.Store(size)
	br, err := bundle.Open(&countingReader{r: r, n: &u.prog.bundleBytes}, u.cfg.Trusted)
	if err != nil {
		if refusal(err) {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return u.fail(upd, ResultFailed, err)
	}
	m := br.Manifest
	if err := bundle.CheckPolicy(u.cfg.Current, m, u.cfg.Board, upd.Force); err != nil {
		return u.fail(upd, ResultRefused, fmt.Errorf("%w: %w", ErrRefused, err))
	}
	dev, err := u.openTarget(upd.Target)
	if err != nil {
		return u.fail(upd, ResultFailed, err)
	}
	defer dev.Close()
	if m.Image.Size > dev.Size() {
		return u.fail(upd, ResultRefused, fmt.Errorf("%w: slot %s: the image is %d MiB, the partition holds %d MiB: rebuild with a smaller root or reflash with larger slots",
			ErrRefused, upd.Target, m.Image.Size>>20, dev.Size()>>20))
	}
	if err := u.transition(PhaseDownloading, func(x *Update) { x.Manifest, x.KeyID = &m, br.KeyID }); err != nil {
		return err
	}
	upd.Manifest = &m
	u.prog.imageSize.Store(m.Image.Size)

	// The slot is read back and compared with the signed image digest
	// below; hashing the stream too would double the CPU time of the
	// install for no additional guarantee (bundle.ImageForReadBack).
	img, err := br.ImageForReadBack()
	if err != nil {
		return u.fail(upd, ResultFailed, err)
	}
	defer img.Close()
	if err := writeSlot(ctx, dev, img, m.Image.Size, &u.prog.imageBytes); err != nil {
		return u.fail(upd, ResultFailed, fmt.Errorf("install into slot %s: %w", upd.Target, err))
	}
	if err := dev.Sync(); err != nil {
		return u.fail(upd, ResultFailed, fmt.Errorf("flush slot %s: %w", upd.Target, err))
	}
	if err := u.transition(PhaseVerifying, nil); err != nil {
		return err
	}
	return u.verifyAndArm(ctx, upd, dev)
}

// writeSlot copies exactly size image bytes to dev from offset 0 and
// requires the image stream's clean end (which is its signature check).
func writeSlot(ctx context.Context, dev slot.Device, img io.Reader, size int64, progress *atomic.Int64) error {
	buf := make([]byte, chunk)
	dropper, _ := dev.(slot.CacheDropper)
	var off, dropped int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(img, buf)
		if n > 0 {
			if off+int64(n) > size {
				return fmt.Errorf("image longer than the signed %d bytes", size)
			}
			if _, werr := dev.WriteAt(buf[:n], off); werr != nil {
				return fmt.Errorf("write at byte %d: %w", off, werr)
			}
			off += int64(n)
			progress.Store(off)
			if dropper != nil && off-dropped >= dropEvery {
				if derr := dropper.DropCache(dropped, off-dropped); derr != nil {
					return derr
				}
				dropped = off
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			// ReadFull turns the stream's io.EOF into these; a
			// verification error would have been returned as is.
			break
		}
		if err != nil {
			return err
		}
	}
	if off != size {
		return fmt.Errorf("image ended after %d of %d bytes", off, size)
	}
	return nil
}

// verifyAndArm reads the slot back from the medium, compares it with the
// signed digest and only then starts the trial (invariant 6).
func (u *Updater) verifyAndArm(ctx context.Context, upd *Update, dev slot.Device) error {
	m := upd.Manifest
	if dev == nil {
		var err error
		if dev, err = u.openTarget(upd.Target); err != nil {
			return u.fail(upd, ResultFailed, err)
		}
		defer dev.Close()
	}
	if d, ok := dev.(slot.CacheDropper); ok {
		// Evict what the write left cached, so the read-back comes
		// from the card and not from memory.
		if err := d.DropCache(0, m.Image.Size); err != nil {
			return u.fail(upd, ResultFailed, fmt.Errorf("verify slot %s: %w", upd.Target, err))
		}
	}
	sum, err := readBack(ctx, dev, m.Image.Size, &u.prog.verifyBytes)
	if err != nil {
		return u.fail(upd, ResultFailed, fmt.Errorf("verify slot %s: %w", upd.Target, err))
	}
	if want, _ := hex.DecodeString(m.Image.SHA256); !bytes.Equal(sum, want) {
		return u.fail(upd, ResultFailed, fmt.Errorf("verify slot %s: it reads back with sha256 %x, the bundle signed %s: the medium may be failing, try again or replace it", upd.Target, sum, m.Image.SHA256))
	}
	bs, err := u.cfg.BootState.Status()
	if err != nil {
		return u.fail(upd, ResultFailed, fmt.Errorf("read boot state: %w", err))
	}
	if err := checkTarget(upd.Target, bs, u.cfg.Boot); err != nil {
		return u.fail(upd, ResultFailed, err)
	}
	if bs.Trial != upd.Target {
		if err := u.cfg.BootState.StartTrial(upd.Target, u.cfg.Tries); err != nil {
			return u.fail(upd, ResultFailed, fmt.Errorf("arm trial of slot %s: %w", upd.Target, err))
		}
	}
	if err := u.transition(PhaseReady, func(x *Update) { x.BootID = u.cfg.Boot.ID }); err != nil {
		return err
	}
	if !upd.NoReboot {
		return u.reboot("boot the trial slot " + string(upd.Target))
	}
	return nil
}

func readBack(ctx context.Context, dev io.ReaderAt, size int64, progress *atomic.Int64) ([]byte, error) {
	h := sha256.New()
	buf := make([]byte, chunk)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if _, err := dev.ReadAt(buf[:n], off); err != nil {
			return nil, fmt.Errorf("read back at byte %d: %w", off, err)
		}
		h.Write(buf[:n])
		off += n
		progress.Store(off)
	}
	return h.Sum(nil), nil
}

// reboot asks PID 1 to reboot.
func (u *Updater) reboot(why string) error {
	u.log.Info("rebooting", "reason", why)
	if u.cfg.Reboot == nil {
		return errors.New("reboot: no way to reboot configured")
	}
	if err := u.cfg.Reboot(); err != nil {
		return fmt.Errorf("reboot to %s: %w", why, err)
	}
	return nil
}
