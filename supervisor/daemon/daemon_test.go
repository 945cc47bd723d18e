package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/rootfs/blkpg"
	"github.com/bulkhead-os/bulkhead/rootfs/blockdev"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/supervisor/client"
	"github.com/bulkhead-os/bulkhead/supervisor/devconf"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
	"golang.org/x/sys/unix"
)

const (
	mib    = 1 << 20
	diskID = "0x1a2b3c4d"
)

// loopDisk is a Bulkhead-shaped disk (boot state copies, partitions 1-4)
// on a loop device, with device nodes in a private directory so the test
// works whether or not the kernel parses partition tables and devtmpfs
// creates nodes.
type loopDisk struct {
	img, dev, name string
	sys            blockdev.Sysfs
}

func newLoopDisk(t testing.TB) *loopDisk { return newLoopDiskSlots(t, 8) }

// newLoopDiskSlots makes a disk whose root slots hold slotMiB each.
func newLoopDiskSlots(t testing.TB, slotMiB int64) *loopDisk {
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("needs losetup")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	slotSize := slotMiB * mib
	size := 12*mib + 2*slotSize + 36*mib
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	tab := &parttable.Table{Kind: parttable.KindMBR, DiskID: diskID, Partitions: []parttable.Partition{
		{Number: 1, Type: parttable.MBRTypeFAT32LBA, Start: 4 * mib, Size: 8 * mib},
		{Number: 2, Type: parttable.MBRTypeLinux, Start: 12 * mib, Size: slotSize},
		{Number: 3, Type: parttable.MBRTypeLinux, Start: 12*mib + slotSize, Size: slotSize},
		{Number: 4, Type: parttable.MBRTypeLinux, Start: 12*mib + 2*slotSize, Size: 36 * mib},
	}}
	writes, err := parttable.Encode(tab, size)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range writes {
		f.WriteAt(w.Data, w.Off)
	}
	a, b, err := bootloader.Initial(bootloader.UBootEnv{}, bootloader.SlotA)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(a, bootloader.UBootStateOffsetA)
	f.WriteAt(b, bootloader.UBootStateOffsetB)
	// The committed slot a holds a recognisable pattern.
	f.WriteAt(bytes.Repeat([]byte("slot-a-v1-"), 8*mib/10), 12*mib)
	f.Close()

	out, err := exec.Command("losetup", "--partscan", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	name := filepath.Base(dev)
	disk, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	devDir := filepath.Join(dir, "dev")
	os.MkdirAll(devDir, 0o755)
	mknod := func(sysdir, node string) {
		b, err := os.ReadFile(filepath.Join(sysdir, "dev"))
		if err != nil {
			t.Fatal(err)
		}
		var maj, min uint32
		fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min)
		if err := unix.Mknod(filepath.Join(devDir, node), unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min))); err != nil {
			t.Fatalf("mknod %s: %v", node, err)
		}
	}
	mknod(filepath.Join("/sys/block", name), name)
	for _, p := range tab.Partitions {
		pn := fmt.Sprintf("%sp%d", name, p.Number)
		sys := filepath.Join("/sys/block", name, pn)
		if _, err := os.Stat(sys); err != nil {
			// The kernel does not parse partition tables here: add the
			// partitions it would have found.
			if err := blkpg.Add(disk, p.Number, p.Start, p.Size); err != nil {
				t.Skipf("cannot add loop partitions: %v", err)
			}
		}
		for i := 0; i < 50; i++ {
			if _, err := os.Stat(sys); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		mknod(sys, pn)
	}
	return &loopDisk{img: img, dev: dev, name: name, sys: blockdev.Sysfs{Dev: devDir}}
}

func (d *loopDisk) bootState(t *testing.T) bootloader.State {
	f, err := os.Open(d.img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _, err := bootloader.NewStore(rwFile{f}, bootloader.UBootEnv{}, bootloader.UBootStateOffsetA, bootloader.UBootStateOffsetB).Read()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// bootloaderStep applies one boot's decision to the disk, as U-Boot does.
func (d *loopDisk) bootloaderStep(t *testing.T) (bootloader.Slot, bool) {
	f, err := os.OpenFile(d.dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bootloader.NewStore(f, bootloader.UBootEnv{}, bootloader.UBootStateOffsetA, bootloader.UBootStateOffsetB)
	st, _, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	boot, trial, next := bootloader.Decide(st)
	if next != nil {
		if err := s.Write(*next); err != nil {
			t.Fatal(err)
		}
	}
	return boot, trial
}

type rwFile struct{ *os.File }

func (rwFile) Sync() error { return nil }

// device is the root filesystem a daemon run sees.
type device struct {
	dir, socket string
	reboots     chan struct{}
}

func newDevice(t testing.TB, d *loopDisk) *device {
	dir := t.TempDir()
	dv := &device{dir: dir, socket: filepath.Join(dir, "run", "supervisor.sock"), reboots: make(chan struct{}, 4)}
	os.WriteFile(filepath.Join(dir, "release-1.json"), []byte(`{"name":"bulkhead","version":"1.0.0","board":"raspberrypi3","arch":"arm64","kernel":"6.1.0-28-arm64","build_time":1700000000}`), 0o644)
	os.WriteFile(filepath.Join(dir, "release-2.json"), []byte(`{"name":"bulkhead","version":"2.0.0","board":"raspberrypi3","arch":"arm64","kernel":"6.1.0-28-arm64","build_time":1750000000}`), 0o644)
	os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
	pub, err := os.ReadFile(filepath.Join(bundletest.TestdataDir(), "dev-key.pem.pub"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "keys", "dev.pub"), pub, 0o644)
	return dv
}

// run starts the daemon for one boot and returns a stop function.
func (dv *device) run(t *testing.T, d *loopDisk, slot bootloader.Slot, trial bool, release string) func() {
	t.Helper()
	tr := 0
	if trial {
		tr = 1
	}
	cmd := filepath.Join(dv.dir, "cmdline")
	os.WriteFile(cmd, []byte(fmt.Sprintf("console=ttyS0 bulkhead.slot=%s bulkhead.trial=%d bulkhead.disk=mbr:%s bulkhead.bootstate=uboot:%d:%d:4096\n",
		slot, tr, diskID, bootloader.UBootStateOffsetA, bootloader.UBootStateOffsetB)), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Release: filepath.Join(dv.dir, release), KeysDir: filepath.Join(dv.dir, "keys"),
			DeviceConfig: filepath.Join(dv.dir, "device.yaml"), StateDir: filepath.Join(dv.dir, "data", "supervisor"),
			Socket: dv.socket, Cmdline: cmd, Sysfs: d.sys, DiskTimeout: 5 * time.Second,
			OSHealthDir: filepath.Join(dv.dir, "os-health.d"), InboxInterval: 50 * time.Millisecond,
			Services: filepath.Join(dv.dir, "services.json"),
			Reboot:   func() error { dv.reboots <- struct{}{}; return nil },
			Updater: func(c *updater.Config) {
				c.HealthDeadline, c.HealthInterval = 5*time.Second, 50*time.Millisecond
				c.Boot.ID = fmt.Sprintf("%s-%v-%d", slot, trial, time.Now().UnixNano())
			},
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}()
	c := client.Unix(dv.socket)
	for i := 0; ; i++ {
		if c.Health(context.Background()) == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("daemon exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if i > 200 {
			t.Fatal("daemon did not come up")
		}
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}
}

func TestDaemonUpdatesALoopDiskEndToEnd(t *testing.T) {
	d := newLoopDisk(t)
	dv := newDevice(t, d)
	_, priv := bundletest.DevKey(t)
	image := bundletest.Image(6*mib, 3)
	b, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", "2.0.0"), image, priv)

	// Boot 1: slot a, committed. Upload the bundle over the socket.
	boot, trial := d.bootloaderStep(t)
	if boot != bootloader.SlotA || trial {
		t.Fatalf("first boot: slot %s trial %v", boot, trial)
	}
	stop := dv.run(t, d, boot, trial, "release-1.json")
	c := client.Unix(dv.socket)
	resp, err := c.Upload(context.Background(), bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-dv.reboots:
	case <-time.After(5 * time.Second):
		t.Fatal("no reboot requested after the install")
	}
	stop()
	if st := d.bootState(t); st.Trial != bootloader.SlotB || st.Tries != bootloader.DefaultTries {
		t.Fatalf("boot state after install: %s", st)
	}
	raw, _ := os.ReadFile(d.img)
	if !bytes.Equal(raw[20*mib:20*mib+len(image)], image) {
		t.Fatal("slot b (partition 3) does not hold the image")
	}
	pattern := bytes.Repeat([]byte("slot-a-v1-"), 8*mib/10)
	if !bytes.Equal(raw[12*mib:12*mib+len(pattern)], pattern) {
		t.Fatal("slot a (committed) changed")
	}

	// Boot 2: the bootloader tries slot b; the daemon checks health and
	// commits.
	boot, trial = d.bootloaderStep(t)
	if boot != bootloader.SlotB || !trial {
		t.Fatalf("second boot: slot %s trial %v", boot, trial)
	}
	stop = dv.run(t, d, boot, trial, "release-2.json")
	o, err := c.WaitOutcome(context.Background(), resp.ID, 50*time.Millisecond, nil)
	stop()
	if err != nil || o.Result != updater.ResultCommitted {
		t.Fatalf("outcome %+v, %v", o, err)
	}
	if st := d.bootState(t); st.Committed != bootloader.SlotB || st.Trial != bootloader.SlotNone {
		t.Fatalf("boot state after the trial: %s", st)
	}
}

func TestSlotOpenIsExclusive(t *testing.T) {
	d := newLoopDisk(t)
	p3 := filepath.Join(d.sys.Dev, d.name+"p3")
	// Someone (a mount, another writer) holds the partition exclusively.
	fd, err := unix.Open(p3, unix.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := slot.Open(p3); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("slot.Open of a busy partition: %v, want ErrInUse", err)
	}
}

// bundleFor writes a bundle of a recognisable 4 MiB image for version.
func bundleFor(t *testing.T, version string) ([]byte, []byte) {
	_, priv := bundletest.DevKey(t)
	image := bytes.Repeat([]byte("slot-b-"+version+"-"), 4*mib/12)
	b, _ := bundletest.Make(t, bundletest.Manifest("raspberrypi3", version), image, priv)
	return b, image
}

func TestBundleDroppedIntoTheInboxIsInstalledAndRemoved(t *testing.T) {
	d := newLoopDisk(t)
	dv := newDevice(t, d)
	b, image := bundleFor(t, "2.0.0")
	inbox := filepath.Join(dv.dir, "data", "supervisor", "inbox")
	os.MkdirAll(inbox, 0o700)
	if err := os.WriteFile(filepath.Join(inbox, "os-2.0.0.bundle"), b, 0o644); err != nil {
		t.Fatal(err)
	}

	// Boot 1: the supervisor finds the bundle, installs it and reboots.
	stop := dv.run(t, d, bootloader.SlotA, false, "release-1.json")
	select {
	case <-dv.reboots:
	case <-time.After(20 * time.Second):
		stop()
		t.Fatal("no reboot after a bundle was dropped into the inbox")
	}
	stop()
	if st := d.bootState(t); st.Trial != bootloader.SlotB {
		t.Fatalf("boot state after the inbox install: %s", st)
	}
	raw, _ := os.ReadFile(d.img)
	if !bytes.Equal(raw[20*mib:20*mib+len(image)], image) {
		t.Fatal("slot b does not hold the dropped bundle's image")
	}
	if _, err := os.Stat(filepath.Join(inbox, "os-2.0.0.bundle")); err == nil {
		t.Fatal("the bundle is still in the inbox: it would be installed again")
	}

	// Boot 2: the trial commits and the spent bundle is deleted.
	boot, trial := d.bootloaderStep(t)
	stop = dv.run(t, d, boot, trial, "release-2.json")
	c := client.Unix(dv.socket)
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := c.Status(context.Background())
		left, _ := os.ReadDir(filepath.Join(inbox, ".installing"))
		if err == nil && st.Update.Phase == updater.PhaseCommitted && len(left) == 0 {
			if h := st.Update.History[0]; !strings.Contains(h.Source, "inbox/.installing/os-2.0.0.bundle") {
				t.Errorf("outcome source %q, want the inbox file", h.Source)
			}
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("after the trial: phase %v (%v), %d files left in .installing", st.Update.Phase, err, len(left))
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
}

func TestAFailingCheckShippedInTheImageRollsTheTrialBack(t *testing.T) {
	d := newLoopDisk(t)
	dv := newDevice(t, d)
	b, _ := bundleFor(t, "2.0.0")
	stop := dv.run(t, d, bootloader.SlotA, false, "release-1.json")
	if _, err := client.Unix(dv.socket).Upload(context.Background(), bytes.NewReader(b), int64(len(b)), client.UploadOptions{}); err != nil {
		stop()
		t.Fatal(err)
	}
	<-dv.reboots
	stop()

	// The new release ships a check that fails.
	os.MkdirAll(filepath.Join(dv.dir, "os-health.d"), 0o755)
	os.WriteFile(filepath.Join(dv.dir, "os-health.d", "10-app"), []byte("#!/bin/sh\necho \"app of $BULKHEAD_VERSION on slot $BULKHEAD_SLOT is down\"\nexit 3\n"), 0o755)
	boot, trial := d.bootloaderStep(t)
	stop = dv.run(t, d, boot, trial, "release-2.json")
	defer stop()
	select {
	case <-dv.reboots:
	case <-time.After(30 * time.Second):
		t.Fatal("the unhealthy trial did not reboot")
	}
	st, err := client.Unix(dv.socket).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	o := st.Update.History[0]
	if o.Result != updater.ResultRolledBack || !strings.Contains(o.Reason, "os:10-app") || !strings.Contains(o.Reason, "app of 2.0.0 on slot b is down") {
		t.Fatalf("outcome %+v, want rolled back naming os:10-app and its output", o)
	}
	if st := d.bootState(t); st.Committed != bootloader.SlotA || st.Trial != bootloader.SlotNone {
		t.Fatalf("boot state after the rollback: %s", st)
	}
}

func TestTheEngineTheImageRunsIsChecked(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "services.json")
	os.WriteFile(p, []byte(`[{"name":"supervisor","path":"/usr/bin/supervisor"},
		{"name":"engine","path":"/usr/bin/engine","args":["--root","/data/engine","--socket","/run/bulkhead/engine.sock"]}]`), 0o644)
	cases := []struct {
		name string
		cfg  devconf.Config
		path string
		want string
	}{
		{"from the engine service of the image", devconf.Config{}, p, "/run/bulkhead/engine.sock"},
		{"device.yaml wins", devconf.Config{Update: devconf.Update{EngineSocket: "/run/other.sock"}}, p, "/run/other.sock"},
		{"no engine service, no check", devconf.Config{}, filepath.Join(dir, "missing.json"), ""},
	}
	for _, c := range cases {
		if got := engineSocket(c.cfg, c.path); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
