package powercut

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// The devices boot Debian bookworm's Linux 6.1, whose jbd2 is stricter
// than e2fsprogs 1.47 and later kernels: when the first commit block it
// meets in the journal fails its checksum (a commit block torn by the cut:
// jbd2 writes it as one 4 KiB block after a flush), jbd2_journal_load
// fails with "journal transaction N is corrupt", ext4 with "error loading
// journal", and the mount with EUCLEAN. e2fsck replays such a journal
// (and kernels with "jbd2: allow to recover incomplete commit block" do
// too), so e2fsck -fn alone would pass a data partition the device cannot
// mount. kernelRefusesJournal replays PASS_SCAN of Linux 6.1's
// fs/jbd2/recovery.c do_one_pass over the journal to find out.

const (
	jbd2Magic      = 0xc03b3998
	jbd2Descriptor = 1
	jbd2Commit     = 2
	jbd2SuperV1    = 3
	jbd2SuperV2    = 4
	jbd2Revoke     = 5

	jbd2IncompatRevoke      = 0x1
	jbd2Incompat64bit       = 0x2
	jbd2IncompatAsyncCommit = 0x4
	jbd2IncompatCsumV2      = 0x8
	jbd2IncompatCsumV3      = 0x10

	jbd2FlagSameUUID = 0x2
	jbd2FlagLastTag  = 0x8

	ext4IncompatRecover = 0x4
	ext4JournalInode    = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's raw crc32c (no final inversion), which jbd2 chains.
func crc32c(seed uint32, b []byte) uint32 { return ^crc32.Update(^seed, castagnoli, b) }

// kernelRefusesJournal returns why Linux 6.1 would refuse to load the
// journal of the ext4 image img ("" if it would replay it).
func kernelRefusesJournal(img string) (string, error) {
	f, err := os.Open(img)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return "", fmt.Errorf("ext4 superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xef53 {
		return "", errors.New("no ext4 superblock")
	}
	if binary.LittleEndian.Uint32(sb[0x60:])&ext4IncompatRecover == 0 {
		return "", nil // clean: the kernel reads no journal
	}
	bs := int64(1024) << binary.LittleEndian.Uint32(sb[0x18:])
	if ino := binary.LittleEndian.Uint32(sb[0xe0:]); ino != ext4JournalInode {
		return "", fmt.Errorf("journal inode %d: only an internal journal (inode 8) is handled", ino)
	}
	j, err := journalMap(f, sb, bs)
	if err != nil {
		return "", fmt.Errorf("journal inode: %w", err)
	}
	return j.scan()
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
	if _, err := f.ReadAt(ino, table*bs+(ext4JournalInode-1)*inodeSize); err != nil {
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
func (j *journal) scan() (string, error) {
	sb, err := j.block(0)
	if err != nil {
		return "", err
	}
	be := binary.BigEndian
	if be.Uint32(sb[0:]) != jbd2Magic || (be.Uint32(sb[4:]) != jbd2SuperV1 && be.Uint32(sb[4:]) != jbd2SuperV2) {
		return "the journal superblock is not one", nil
	}
	if int64(be.Uint32(sb[12:])) != j.bs {
		return "", fmt.Errorf("journal block size %d, filesystem %d", be.Uint32(sb[12:]), j.bs)
	}
	maxlen, first := uint64(be.Uint32(sb[16:])), uint64(be.Uint32(sb[20:]))
	seq, start := be.Uint32(sb[24:]), uint64(be.Uint32(sb[28:]))
	if start == 0 {
		return "", nil // empty journal
	}
	var incompat uint32
	if be.Uint32(sb[4:]) == jbd2SuperV2 {
		incompat = be.Uint32(sb[40:])
	}
	csum := incompat&(jbd2IncompatCsumV2|jbd2IncompatCsumV3) != 0
	seed := crc32c(^uint32(0), sb[48:64])
	tagBytes := 16 // journal_block_tag3_t
	if incompat&jbd2IncompatCsumV3 == 0 {
		tagBytes = 12
		if incompat&jbd2IncompatCsumV2 != 0 {
			tagBytes += 2
		}
		if incompat&jbd2Incompat64bit == 0 {
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
		b, err := j.block(next)
		if err != nil {
			return "", err
		}
		next = wrap(next + 1)
		if be.Uint32(b[0:]) != jbd2Magic || be.Uint32(b[8:]) != seq {
			return "", nil // the end of the log
		}
		switch be.Uint32(b[4:]) {
		case jbd2Descriptor:
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
				if flags&jbd2FlagSameUUID == 0 {
					p += 16
				}
				if flags&jbd2FlagLastTag != 0 {
					break
				}
			}
			next = wrap(next + uint64(tags))
		case jbd2Commit:
			commitTime := be.Uint64(b[48:])
			if needCheck {
				if commitTime >= lastTime {
					return fmt.Sprintf("JBD2: Invalid checksum found in transaction %d (a descriptor or revoke block before its commit block fails its checksum)", seq), nil
				}
				return "", nil
			}
			if csum {
				c := append([]byte(nil), b...)
				provided := be.Uint32(c[16:])
				be.PutUint32(c[16:], 0)
				if provided != crc32c(seed, c) {
					if commitTime < lastTime {
						return "", nil // stale
					}
					if incompat&jbd2IncompatAsyncCommit == 0 {
						return fmt.Sprintf("JBD2: journal transaction %d is corrupt (its commit block fails its checksum: torn)", seq), nil
					}
					return "", nil
				}
			}
			lastTime = commitTime
			seq++
		case jbd2Revoke:
			if csum && !tailOK(b) {
				needCheck = true
			}
		default:
			return "", nil
		}
	}
	return "", nil
}
