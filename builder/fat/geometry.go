package fat

import "fmt"

const (
	sectorSize = 512
	// minReserved is the conventional FAT32 reserved area: boot sector,
	// FSInfo, and the backup boot sector at 6 all live in it.
	minReserved = 32
	// minClusters is the smallest cluster count that makes a volume FAT32
	// by the Microsoft definition (fewer is FAT16 whatever the BPB says),
	// plus a margin so that no implementation's rounding lands on the
	// other side of the boundary.
	minClusters = 65525 + 16
	maxClusters = 0x0ffffff5 - 2
	// dataAlign is the smallest alignment of the data region. Partitions
	// start on 4 MiB boundaries, so aligning clusters to 4 KiB inside the
	// filesystem keeps every cluster on a flash page boundary.
	dataAlign = 4096 / sectorSize
)

// geometry is the layout of one filesystem.
type geometry struct {
	totalSectors uint32
	spc          uint32 // sectors per cluster
	reserved     uint32 // sectors before the first FAT
	fatSectors   uint32 // sectors per FAT
	clusters     uint32 // data clusters, numbered 2 .. clusters+1
}

func (g geometry) clusterSize() int64 { return int64(g.spc) * sectorSize }
func (g geometry) fatOffset(i int) int64 {
	return (int64(g.reserved) + int64(i)*int64(g.fatSectors)) * sectorSize
}
func (g geometry) dataOffset() int64 { return g.fatOffset(2) }
func (g geometry) clusterOffset(c uint32) int64 {
	return g.dataOffset() + int64(c-2)*g.clusterSize()
}

// maxClusterSectors caps the cluster size at what Microsoft's FAT32 table
// recommends for the volume size; small clusters waste little space on a
// boot partition full of small files (DTBs, overlays, config files).
func maxClusterSectors(size int64) uint32 {
	switch {
	case size <= 8<<30:
		return 8 // 4 KiB
	case size <= 16<<30:
		return 16
	case size <= 32<<30:
		return 32
	default:
		return 64 // 32 KiB
	}
}

// chooseGeometry picks the largest cluster size up to the recommended one
// that still gives a real FAT32 (at least minClusters clusters): larger
// clusters mean a smaller FAT and fewer chain lookups for the firmware. A
// 256 MiB boot partition gets 2 KiB clusters (about 130,000 clusters); 4 KiB
// would give only 65,404, which is FAT16 territory.
func chooseGeometry(size int64) (geometry, error) {
	if size%sectorSize != 0 {
		return geometry{}, fmt.Errorf("size %d is not a multiple of %d bytes", size, sectorSize)
	}
	if size/sectorSize > 0xffffffff {
		return geometry{}, fmt.Errorf("size %d exceeds the 2 TiB a FAT32 boot sector can describe", size)
	}
	total := uint32(size / sectorSize)
	for spc := maxClusterSectors(size); spc >= 1; spc /= 2 {
		if total <= minReserved {
			break
		}
		// Size the FAT as if every sector after the reserved area held
		// data: an upper bound, so the FAT is never too small.
		fat := ((total-minReserved)/spc + 2) * 4
		fat = (fat + sectorSize - 1) / sectorSize
		align := max(spc, dataAlign)
		reserved := uint32(minReserved)
		if r := (reserved + 2*fat) % align; r != 0 {
			reserved += align - r
		}
		if uint64(reserved)+2*uint64(fat) >= uint64(total) {
			continue
		}
		clusters := (total - reserved - 2*fat) / spc
		if clusters >= minClusters && clusters <= maxClusters {
			return geometry{totalSectors: total, spc: spc, reserved: reserved, fatSectors: fat, clusters: clusters}, nil
		}
	}
	// 512-byte clusters: data + two FATs of 4 bytes per cluster.
	need := int64(minReserved+dataAlign)*sectorSize + int64(minClusters)*(sectorSize+8)
	return geometry{}, fmt.Errorf("a %d-byte volume is too small for FAT32, which needs at least %d bytes (%d MiB): raise the boot partition size in the board file",
		size, need, (need+1<<20-1)>>20)
}
