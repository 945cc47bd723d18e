package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-os/bulkhead/builder/board"
)

func TestLogWritesPutsBlklogwritesUnderTheDisk(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "w,1.log")
	for _, tc := range []struct {
		name, drive, device, want, wantDevice string
	}{
		{"a virtio disk", "if=none,id=disk0,format=raw,file=/d/disk.img", "virtio-blk-pci,drive=disk0",
			"if=none,id=disk0,driver=blklogwrites,log-sector-size=512,file.driver=file,file.filename=/d/disk.img,file.cache.no-flush=on,log.driver=file,log.filename=" + strings.ReplaceAll(log, ",", ",,") + ",log.cache.no-flush=on",
			"virtio-blk-pci,drive=disk0,request-merging=off"},
		{"an SD card", "if=sd,format=raw,file=/d/disk.img", "",
			"if=sd,driver=blklogwrites,log-sector-size=512,file.driver=file,file.filename=/d/disk.img,file.cache.no-flush=on,log.driver=file,log.filename=" + strings.ReplaceAll(log, ",", ",,") + ",log.cache.no-flush=on",
			""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-M", "virt", "-drive", tc.drive}
			if tc.device != "" {
				args = append(args, "-device", tc.device)
			}
			m := &Machine{cfg: Config{Board: &board.Board{Name: "test"}}, Disk: "/d/disk.img", args: args}
			os.WriteFile(log, []byte("stale"), 0o644)
			if err := m.LogWrites(log); err != nil {
				t.Fatal(err)
			}
			if m.args[3] != tc.want {
				t.Errorf("drive\n got %s\nwant %s", m.args[3], tc.want)
			}
			if tc.device != "" && m.args[5] != tc.wantDevice {
				t.Errorf("device %s, want %s", m.args[5], tc.wantDevice)
			}
			if fi, err := os.Stat(log); err != nil || fi.Size() != 0 {
				t.Errorf("the log is not emptied: %v", err)
			}
			// Again, as before a restart: the same command line.
			before := strings.Join(m.args, " ")
			if err := m.LogWrites(log); err != nil {
				t.Fatal(err)
			}
			if after := strings.Join(m.args, " "); after != before {
				t.Errorf("a second LogWrites changed the command line:\n%s\n%s", before, after)
			}
		})
	}
	m := &Machine{cfg: Config{Board: &board.Board{Name: "test"}}, Disk: "/d/disk.img", args: []string{"-drive", "if=none,id=other,file=/x"}}
	if err := m.LogWrites(log); err == nil {
		t.Error("LogWrites found a disk that is not there")
	}
}
