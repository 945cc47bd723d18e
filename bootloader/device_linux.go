package bootloader

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockWait bounds how long OpenDevice waits for another writer; a Store
// operation holds the lock for one read and one 4 KiB write plus fsync.
const lockWait = 10 * time.Second

// OpenDevice opens the disk read-write and takes an exclusive flock on it,
// released by Close, so that the supervisor and the bulkhead-boot command
// never interleave their read-modify-write of the boot state (two writers
// that both read seq n would both write seq n+1, one into each copy, and
// destroy the redundancy). Both must open the disk through OpenDevice.
func OpenDevice(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open boot-state device: %w", err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock boot-state device %s: %w (another bulkhead-boot or the supervisor holds it)", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
