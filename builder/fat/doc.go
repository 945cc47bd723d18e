// Package fat writes the boot partition: a FAT32 filesystem built in one
// pass from a list of files, byte-for-byte reproducible.
//
// It owns the FAT32 on-disk format as Bulkhead writes it: geometry and
// cluster size, boot sector, FSInfo, the two FATs, directories with VFAT
// long names and unique 8.3 short names, and the placement of file data.
// Files are stored contiguously in the order given, so the caller can put
// data at predictable offsets (the GRUB boot-state files) and learn them
// from the returned extents.
//
// It must not read the clock, the environment or map order into the image,
// must not decide what goes on the boot partition (the boot stage does), and
// must not modify an existing filesystem: it only creates new ones.
// go-diskfs's FAT32 writer is not used because its output is not
// reproducible and fsck.vfat warns about its ".." entries.
package fat
