package blkpg_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/rootfs/blkpg"
	"github.com/bulkhead-os/bulkhead/rootfs/internal/looptest"
)

func TestStructLayoutMatchesKernel(t *testing.T) {
	// x/sys/unix generates these from the kernel headers for each GOARCH.
	if got, want := blkpg.PartitionSize(), unsafe.Sizeof(unix.BlkpgPartition{}); got != want {
		t.Errorf("struct blkpg_partition is %d bytes here, %d in the kernel", got, want)
	}
	if got, want := blkpg.ArgSize(), unsafe.Sizeof(unix.BlkpgIoctlArg{}); got != want {
		t.Errorf("struct blkpg_ioctl_arg is %d bytes here, %d in the kernel", got, want)
	}
	if blkpg.IoctlBLKRRPART != unix.BLKRRPART {
		t.Errorf("BLKRRPART = %#x, kernel header says %#x", blkpg.IoctlBLKRRPART, unix.BLKRRPART)
	}
	if unix.BLKPG_RESIZE_PARTITION != 3 || unix.BLKPG_ADD_PARTITION != 1 || unix.BLKPG_DEL_PARTITION != 2 {
		t.Error("BLKPG op numbers changed in the kernel headers")
	}
}

func TestResizeShowsTheNewSizeInSysfs(t *testing.T) {
	l := looptest.New(t, 64*looptest.MiB,
		"label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=8192, type=83\n")
	disk, err := os.Open(l.Dev)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()

	// Partition 2 starts at sector 10240; grow it from 4 MiB to 20 MiB.
	if err := blkpg.Resize(disk, 2, 10240*512, 20*looptest.MiB); err != nil {
		t.Fatal(err)
	}
	if got := sysfsSectors(t, l.Name, 2); got != 20*looptest.MiB/512 {
		t.Errorf("partition 2 has %d sectors after resize, want %d", got, 20*looptest.MiB/512)
	}

	// The kernel insists that a resize keeps the start.
	if err := blkpg.Resize(disk, 2, 12288*512, looptest.MiB); err == nil {
		t.Error("resize that moves the start succeeded")
	}

	if err := blkpg.Delete(disk, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/sys/block/%s/%sp2", l.Name, l.Name)); !os.IsNotExist(err) {
		t.Errorf("partition 2 still in sysfs after delete: %v", err)
	}
}

func sysfsSectors(t *testing.T, disk string, n int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/%s/%sp%d/size", disk, disk, n))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
