package qemu

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// LogWrites puts QEMU's blklogwrites block driver between the guest and the
// machine's disk, for the power-cut tests (tests/powercut): every write the
// guest's disk controller completes, and every flush, is appended to
// logPath in the dm-log-writes format (Linux drivers/md/dm-log-writes.c,
// which QEMU 7.2's block/blklogwrites.c writes too), with its sector and
// data. The disk itself is written as before, so the machine behaves the
// same; the log is what lets a test rebuild the disk as it stood after any
// write and between any two flushes.
//
// Call it after Prepare and before Start. It empties logPath: blklogwrites
// starts a new log at its first sector on every start without truncating
// the file, so call it again before restarting a machine that was cut.
//
// The virtio disk stops merging requests: virtio-blk merges adjacent writes
// up to IOV_MAX (1024) buffers (hw/block/virtio-blk.c), and blklogwrites
// adds two of its own (the entry header and its padding) to every write it
// logs, so a fully merged write fails with EIO in the guest.
//
// Neither the disk nor the log is flushed to the host's medium
// (cache.no-flush): the test needs what the guest sent, not the host's
// durability, and a host fdatasync per guest flush would slow the guest's
// fsync-heavy workloads by an order of magnitude.
func (m *Machine) LogWrites(logPath string) error {
	if m.done != nil {
		select {
		case <-m.done:
		default:
			return errors.New("qemu: LogWrites on a running machine: call it before Start")
		}
	}
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		return fmt.Errorf("qemu: write log: %w", err)
	}
	for i := 1; i < len(m.args); i++ {
		if m.args[i-1] != "-drive" {
			continue
		}
		iface, ok := m.diskDrive(m.args[i])
		if !ok {
			continue
		}
		m.args[i] = iface + ",driver=blklogwrites,log-sector-size=512" +
			",file.driver=file,file.filename=" + escapeOpt(m.Disk) + ",file.cache.no-flush=on" +
			",log.driver=file,log.filename=" + escapeOpt(logPath) + ",log.cache.no-flush=on"
		for j := 1; j < len(m.args); j++ {
			if m.args[j-1] == "-device" && m.args[j] == "virtio-blk-pci,drive=disk0" {
				m.args[j] += ",request-merging=off"
			}
		}
		return nil
	}
	return fmt.Errorf("qemu: no -drive for %s in the command line of board %s", m.Disk, m.cfg.Board.Name)
}

// diskDrive recognises the machine's disk among -drive values, as Prepare
// writes them or as an earlier LogWrites rewrote them, and returns the
// interface part that must stay ("if=none,id=disk0" or "if=sd").
func (m *Machine) diskDrive(v string) (string, bool) {
	for _, iface := range []string{"if=none,id=disk0", "if=sd"} {
		switch v {
		case iface + ",format=raw,file=" + m.Disk:
			return iface, true
		}
		if strings.HasPrefix(v, iface+",driver=blklogwrites,") {
			return iface, true
		}
	}
	return "", false
}

// escapeOpt escapes a value for QEMU's option syntax, where a comma
// separates options and ",," stands for a comma.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }
