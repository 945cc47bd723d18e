// Package bootloader owns Bulkhead's boot state: the record that tells the
// bootloader which root slot to boot, its two on-disk encodings (a U-Boot
// binary environment block and a GRUB environment block), the Store that
// reads and writes the two redundant copies through a block device, and the
// generators of the U-Boot boot script and the GRUB configuration that apply
// the same algorithm before Linux runs.
//
// The algorithm lives in Decide; UBootScript and GrubConfig are hand
// translations of it into U-Boot hush and GRUB script, and the tests hold the
// three together. docs/boot-state.md documents the on-disk formats
// and the kernel command-line keys for readers who do not read Go.
//
// What this package must not do: it never writes a root slot, never writes
// both boot-state copies in one operation (a torn write must always leave the
// other copy intact, invariant 2 of DESIGN.md), and never touches boot state
// through a filesystem (on GRUB boards the copies are files on the ESP, but
// Linux writes their data sectors through the block device at offsets the
// builder records, so no FAT or directory sector is ever rewritten).
package bootloader
