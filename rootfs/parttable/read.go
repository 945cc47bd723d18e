package parttable

import (
	"errors"
	"fmt"
	"io"
)

// Read parses the partition table of a medium of diskSize bytes: an MBR with
// up to four primary partitions (extended partitions are refused), or a GPT.
//
// A GPT is taken from the primary header at LBA 1 when its header and entry
// CRCs verify; otherwise from the backup header in the last sector (where
// GrowLast puts it first), and failing that from the backup the primary
// header points at. Table.FromBackup reports the fallback. Read never writes.
func Read(r io.ReaderAt, diskSize int64) (*Table, error) {
	kind, sec0, err := detect(r, diskSize)
	if err != nil {
		return nil, fmt.Errorf("parttable: %w", err)
	}
	if kind == KindMBR {
		t, err := parseMBR(sec0, diskSize)
		if err != nil {
			return nil, fmt.Errorf("parttable: MBR: %w", err)
		}
		return t, nil
	}
	st, err := loadGPT(r, diskSize)
	if err != nil {
		return nil, fmt.Errorf("parttable: %w", err)
	}
	t, err := st.table()
	if err != nil {
		return nil, fmt.Errorf("parttable: GPT: %w", err)
	}
	return t, nil
}

// detect decides which table a medium carries and returns its sector 0.
func detect(r io.ReaderAt, diskSize int64) (string, []byte, error) {
	if err := checkDiskSize(diskSize); err != nil {
		return "", nil, err
	}
	sec0, err := readSectors(r, 0, 1)
	if err != nil {
		return "", nil, err
	}
	if hasBootSignature(sec0) {
		if isProtective(sec0) {
			return KindGPT, sec0, nil
		}
		return KindMBR, sec0, nil
	}
	// Without the 0x55aa signature sector 0 is no table at all. A GPT disk
	// whose sector 0 was wiped still has its headers, and UEFI and U-Boot
	// would use them, so look for those before giving up.
	if diskSize/SectorSize >= 3 {
		if _, err := loadGPT(r, diskSize); err == nil {
			return KindGPT, sec0, nil
		}
	}
	return "", nil, errors.New("no partition table: sector 0 has no 0x55aa signature and no GPT header verifies; write the image again")
}
