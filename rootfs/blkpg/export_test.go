package blkpg

import "unsafe"

// PartitionSize and ArgSize expose the struct sizes to the layout test.
func PartitionSize() uintptr { return unsafe.Sizeof(partition{}) }
func ArgSize() uintptr       { return unsafe.Sizeof(ioctlArg{}) }

// IoctlBLKRRPART exposes the request number to the header check.
const IoctlBLKRRPART = ioctlBLKRRPART
