// Package jbd2 reads the journal of an ext4 filesystem the way Debian
// bookworm's Linux 6.1 does when it mounts one, and repairs the one state
// a power cut can leave that this kernel refuses: a torn commit block.
//
// jbd2 writes a transaction's log blocks, flushes, then writes the 4 KiB
// commit block with FUA. A cut during that write can leave the block's
// first sectors new and the rest old (the medium only promises 512-byte
// sectors). The header (magic, sequence, commit time) is in the first
// sector, so Linux 6.1 takes the block for the transaction's commit, finds
// that its checksum (csum v3, over the whole block) fails, and, since its
// "jbd2: allow to recover incomplete commit block" fix is later, does not
// end the log there as e2fsck and newer kernels do: jbd2_journal_load
// fails with "journal transaction N is corrupt" and the mount with
// EUCLEAN. The initramfs would then fail to mount /data on every boot.
//
// The transaction whose commit block was being written when the power
// went had not committed: no fsync that depends on it has returned. Repair
// zeroes that block's first sector, one sector write, so that the next
// scan meets no header there and ends the log at the transaction before,
// which is what e2fsck would replay. Everything committed before stays.
package jbd2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

const (
	magic      = 0xc03b3998
	descriptor = 1
	commit     = 2
	superV1    = 3
	superV2    = 4
	revoke     = 5

	incompat64bit       = 0x2
	incompatAsyncCommit = 0x4
	incompatCsumV2      = 0x8
	incompatCsumV3      = 0x10

	flagSameUUID = 0x2
	flagLastTag  = 0x8

	// IncompatRecover is ext4's needs_recovery flag (s_feature_incompat).
	IncompatRecover = 0x4
	journalInode    = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's raw crc32c (no final inversion), which jbd2 chains.
func crc32c(seed uint32, b []byte) uint32 { return ^crc32.Update(^seed, castagnoli, b) }

// Verdict is what Linux 6.1 would make of a journal at mount time.
type Verdict struct {
	// Refusal says why the kernel would refuse to load the journal
	// ("" if it would replay it, or finds nothing to replay).
	Refusal string
	// Torn is the byte offset in the filesystem of the commit block that
	// fails its checksum, when that is the reason (-1 otherwise); Seq is
	// its transaction.
	Torn int64
	Seq  uint32
}

// Check scans the journal of the ext4 filesystem in fs as PASS_SCAN of
// Linux 6.1's fs/jbd2/recovery.c do_one_pass does, reduced to what
// decides whether jbd2_journal_recover and jbd2_journal_load succeed.
func Check(fs io.ReaderAt) (Verdict, error) {
	v := Verdict{Torn: -1}
	sb := make([]byte, 1024)
	if _, err := fs.ReadAt(sb, 1024); err != nil {
		return v, fmt.Errorf("ext4 superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xef53 {
		return v, errors.New("no ext4 superblock")
	}
	if binary.LittleEndian.Uint32(sb[0x60:])&IncompatRecover == 0 {
		return v, nil // clean: the kernel reads no journal
	}
	bs := int64(1024) << binary.LittleEndian.Uint32(sb[0x18:])
	if ino := binary.LittleEndian.Uint32(sb[0xe0:]); ino != journalInode {
		return v, fmt.Errorf("journal inode %d: only an internal journal (inode 8) is handled", ino)
	}
	j, err := journalMap(fs, sb, bs)
	if err != nil {
		return v, fmt.Errorf("journal inode: %w", err)
	}
	return j.scan()
}

// Repair drops a torn commit block from the journal of the filesystem on
// dev (an unmounted block device or image), so that Linux 6.1 mounts it.
// It reports the verdict it found and whether it wrote; it writes nothing
// unless the verdict is a torn commit block, and flushes what it wrote.
func Repair(dev *os.File) (Verdict, bool, error) {
	v, err := Check(dev)
	if err != nil || v.Torn < 0 {
		return v, false, err
	}
	// One sector, so that a cut during the repair leaves either the torn
	// block (repaired again at the next boot) or no header.
	if _, err := dev.WriteAt(make([]byte, 512), v.Torn); err != nil {
		return v, false, fmt.Errorf("drop torn commit block of transaction %d: %w", v.Seq, err)
	}
	if err := dev.Sync(); err != nil {
		return v, false, fmt.Errorf("drop torn commit block of transaction %d: flush: %w", v.Seq, err)
	}
	return v, true, nil
}

// journal reads the blocks of an internal journal.
type journal struct {
	f    io.ReaderAt
	bs   int64
	phys []uint64 // journal block -> filesystem block
}

func (j *journal) block(n uint64) ([]byte, error) {
	if n >= uint64(len(j.phys)) {
		return nil, fmt.Errorf("journal block %d beyond the journal's %d blocks", n, len(j.phys))
	}
	b := make([]byte, j.bs)
	_, err := j.f.ReadAt(b, int64(j.phys[n])*j.bs)
	return b, err
}

// journalMap maps inode 8's blocks through its extent tree.
func journalMap(f io.ReaderAt, sb []byte, bs int64) (*journal, error) {
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	inodeSize := int64(binary.LittleEndian.Uint16(sb[0x58:]))
	firstData := int64(binary.LittleEndian.Uint32(sb[0x14:]))
	descSize := int64(32)
	if incompat&0x80 != 0 { // 64bit
		descSize = int64(binary.LittleEndian.Uint16(sb[0xfe:]))
	}
	gd := make([]byte, descSize)
	if _, err := f.ReadAt(gd, (firstData+1)*bs); err != nil {
		return nil, err
	}
	table := int64(binary.LittleEndian.Uint32(gd[8:]))
	if descSize >= 64 {
		table |= int64(binary.LittleEndian.Uint32(gd[0x28:])) << 32
	}
	ino := make([]byte, inodeSize)
	if _, err := f.ReadAt(ino, table*bs+(journalInode-1)*inodeSize); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(ino[0x20:])&0x80000 == 0 {
		return nil, errors.New("the journal inode does not use extents")
	}
	j := &journal{f: f, bs: bs}
	var walk func(node []byte, depth int) error
	walk = func(node []byte, depth int) error {
		if binary.LittleEndian.Uint16(node[0:]) != 0xf30a || depth > 5 {
			return errors.New("bad extent header")
		}
		n := int(binary.LittleEndian.Uint16(node[2:]))
		d := binary.LittleEndian.Uint16(node[6:])
		for i := 0; i < n; i++ {
			e := node[12+12*i:]
			if len(e) < 12 {
				return errors.New("extent entries past the node")
			}
			if d == 0 {
				lblk := uint64(binary.LittleEndian.Uint32(e[0:]))
				length := uint64(binary.LittleEndian.Uint16(e[4:]))
				if length > 32768 {
					length -= 32768 // unwritten
				}
				start := uint64(binary.LittleEndian.Uint16(e[6:]))<<32 | uint64(binary.LittleEndian.Uint32(e[8:]))
				for k := uint64(0); k < length; k++ {
					for uint64(len(j.phys)) <= lblk+k {
						j.phys = append(j.phys, 0)
					}
					j.phys[lblk+k] = start + k
				}
				continue
			}
			leaf := uint64(binary.LittleEndian.Uint16(e[8:]))<<32 | uint64(binary.LittleEndian.Uint32(e[4:]))
			child := make([]byte, bs)
			if _, err := f.ReadAt(child, int64(leaf)*bs); err != nil {
				return err
			}
			if err := walk(child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(ino[0x28:0x28+60], 0); err != nil {
		return nil, err
	}
	return j, nil
}

// scan is PASS_SCAN of Linux 6.1's do_one_pass, reduced to what decides
// whether jbd2_journal_recover and jbd2_journal_load succeed.
func (j *journal) scan() (Verdict, error) {
	v := Verdict{Torn: -1}
	sb, err := j.block(0)
	if err != nil {
		return v, err
	}
	be := binary.BigEndian
	if be.Uint32(sb[0:]) != magic || (be.Uint32(sb[4:]) != superV1 && be.Uint32(sb[4:]) != superV2) {
		v.Refusal = "the journal superblock is not one"
		return v, nil
	}
	if int64(be.Uint32(sb[12:])) != j.bs {
		return v, fmt.Errorf("journal block size %d, filesystem %d", be.Uint32(sb[12:]), j.bs)
	}
	maxlen, first := uint64(be.Uint32(sb[16:])), uint64(be.Uint32(sb[20:]))
	seq, start := be.Uint32(sb[24:]), uint64(be.Uint32(sb[28:]))
	if start == 0 {
		return v, nil // empty journal
	}
	var incompat uint32
	if be.Uint32(sb[4:]) == superV2 {
		incompat = be.Uint32(sb[40:])
	}
	csum := incompat&(incompatCsumV2|incompatCsumV3) != 0
	seed := crc32c(^uint32(0), sb[48:64])
	tagBytes := 16 // journal_block_tag3_t
	if incompat&incompatCsumV3 == 0 {
		tagBytes = 12
		if incompat&incompatCsumV2 != 0 {
			tagBytes += 2
		}
		if incompat&incompat64bit == 0 {
			tagBytes -= 4
		}
	}
	tail := 0
	if csum {
		tail = 4
	}
	tailOK := func(b []byte) bool { // jbd2_descriptor_block_csum_verify
		c := append([]byte(nil), b...)
		provided := be.Uint32(c[len(c)-4:])
		be.PutUint32(c[len(c)-4:], 0)
		return provided == crc32c(seed, c)
	}
	wrap := func(n uint64) uint64 {
		if n >= maxlen {
			n -= maxlen - first
		}
		return n
	}
	next := start
	var lastTime uint64
	needCheck := false
	for range maxlen {
		cur := next
		b, err := j.block(cur)
		if err != nil {
			return v, err
		}
		next = wrap(next + 1)
		if be.Uint32(b[0:]) != magic || be.Uint32(b[8:]) != seq {
			return v, nil // the end of the log
		}
		switch be.Uint32(b[4:]) {
		case descriptor:
			if csum && !tailOK(b) {
				needCheck = true
			}
			tags := 0
			for p := 12; p+tagBytes <= len(b)-tail; {
				tags++
				var flags uint32
				if tagBytes == 16 {
					flags = be.Uint32(b[p+4:])
				} else {
					flags = uint32(be.Uint16(b[p+6:]))
				}
				p += tagBytes
				if flags&flagSameUUID == 0 {
					p += 16
				}
				if flags&flagLastTag != 0 {
					break
				}
			}
			next = wrap(next + uint64(tags))
		case commit:
			commitTime := be.Uint64(b[48:])
			if needCheck {
				if commitTime >= lastTime {
					v.Refusal = fmt.Sprintf("JBD2: Invalid checksum found in transaction %d (a descriptor or revoke block before its commit block fails its checksum)", seq)
				}
				return v, nil
			}
			if csum {
				c := append([]byte(nil), b...)
				provided := be.Uint32(c[16:])
				be.PutUint32(c[16:], 0)
				if provided != crc32c(seed, c) {
					if commitTime < lastTime {
						return v, nil // stale
					}
					if incompat&incompatAsyncCommit == 0 {
						v.Refusal = fmt.Sprintf("JBD2: journal transaction %d is corrupt (its commit block fails its checksum: torn)", seq)
						v.Torn, v.Seq = int64(j.phys[cur])*j.bs, seq
					}
					return v, nil
				}
			}
			lastTime = commitTime
			seq++
		case revoke:
			if csum && !tailOK(b) {
				needCheck = true
			}
		default:
			return v, nil
		}
	}
	return v, nil
}
