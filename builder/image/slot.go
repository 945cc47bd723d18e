package image

import (
	"context"

	"github.com/bulkhead-os/bulkhead/builder/disk"
	"github.com/bulkhead-os/bulkhead/builder/ext4"
)

// slot writes the root slot filesystem. Its identifiers derive from the
// version too: the same slot image is written to either slot by an update,
// and the initramfs finds slots by partition, never by filesystem UUID.
func (b *Build) slot(ctx context.Context) error {
	id := b.seed() + "/" + b.cfg.Version
	b.slotImage = b.work("root.ext4")
	b.cfg.Progress(Event{Phase: "slot", Item: "ext4"})
	return ext4.Build(ctx, ext4.Options{
		Dir:      b.rootDir,
		Output:   b.slotImage,
		Size:     RootSize,
		Label:    "bulkhead-root",
		UUID:     disk.DeriveUUID(id, "root-fs"),
		HashSeed: disk.DeriveUUID(id, "root-hash-seed"),
		Time:     b.cfg.Epoch,
		Journal:  false, // mounted read-only, never written in place
	})
}

// data writes the initial data filesystem: small in the image, grown to the
// end of the medium by the initramfs on first boot.
func (b *Build) data(ctx context.Context) error {
	dir := b.work("data-tree")
	if err := recreateDir(dir); err != nil {
		return err
	}
	b.dataImage = b.work("data.ext4")
	return ext4.Build(ctx, ext4.Options{
		Dir:      dir,
		Output:   b.dataImage,
		Size:     DataSize,
		Label:    "bulkhead-data",
		UUID:     disk.DeriveUUID(b.seed(), "data-fs"),
		HashSeed: disk.DeriveUUID(b.seed(), "data-hash-seed"),
		Time:     b.cfg.Epoch,
		Journal:  true,
	})
}
