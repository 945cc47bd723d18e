// Command initramfs is /init of Bulkhead's initramfs, the first program the
// kernel runs. It loads the modules the builder listed, arms the hardware
// watchdog, finds the boot disk by its partition-table identity, grows the
// data partition on first boot, mounts the chosen root slot read-only and the
// data partition read-write, and hands over to /sbin/init of the slot with
// switch_root.
//
// It prints one short line per step on the console and nothing else. Any
// fatal error is printed as "bulkhead: initramfs: <error>" and the board
// reboots ten seconds later: the bootloader counts failed trial boots, so a
// broken slot falls back to the committed one with nobody present. It never
// hangs and never starts a shell.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/rootfs/blockdev"
	"github.com/bulkhead-os/bulkhead/rootfs/cmdline"
	"github.com/bulkhead-os/bulkhead/rootfs/console"
	"github.com/bulkhead-os/bulkhead/rootfs/growfs"
	"github.com/bulkhead-os/bulkhead/rootfs/initconfig"
	"github.com/bulkhead-os/bulkhead/rootfs/jbd2"
	"github.com/bulkhead-os/bulkhead/rootfs/kmod"
	"github.com/bulkhead-os/bulkhead/rootfs/mounts"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
	"github.com/bulkhead-os/bulkhead/rootfs/switchroot"
	"github.com/bulkhead-os/bulkhead/rootfs/watchdog"
)

const (
	prefix   = "bulkhead: initramfs: "
	newRoot  = "/newroot"
	nextInit = "/sbin/init"

	// Fixed partition numbers (docs/architecture.md, "Disk layout").
	partBoot = 1
	partData = 4

	// diskWait bounds the search for the boot disk: SD cards and USB
	// disks are probed asynchronously and can take seconds to appear.
	diskWait = 30 * time.Second
	// resizeWait bounds how long the watchdog is fed on our behalf while
	// ext4 grows the data filesystem, which takes a while on a large, slow
	// card; a resize that takes longer is treated as a hang.
	resizeWait = 10 * time.Minute
	// rebootDelay leaves the error on screen before the reboot.
	rebootDelay = 10 * time.Second
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, prefix+"must run as PID 1 (it is the initramfs /init); refusing to touch this system")
		os.Exit(2)
	}
	defer func() {
		if r := recover(); r != nil {
			fatal(fmt.Errorf("panic: %v", r))
		}
	}()
	b := &boot{log: slog.New(console.NewHandler(os.Stdout, prefix, slog.LevelInfo))}
	fatal(b.run()) // run returns only on error
}

// fatal reports err and reboots; the bootloader counts the failed boot.
func fatal(err error) {
	fmt.Fprintf(os.Stdout, "%s%v\n", prefix, err)
	fmt.Fprintf(os.Stdout, "%srebooting in %v\n", prefix, rebootDelay)
	unix.Sync()
	time.Sleep(rebootDelay)
	rerr := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	// Exiting PID 1 panics the kernel, which reboots with panic=N on the
	// command line; the armed watchdog resets the board otherwise.
	fmt.Fprintf(os.Stdout, "%sreboot failed: %v\n", prefix, rerr)
	os.Exit(1)
}

type boot struct {
	log    *slog.Logger
	params cmdline.Params
	cfg    *initconfig.Config
	wd     *watchdog.Device
}

func (b *boot) run() error {
	if err := b.mountEarly(); err != nil {
		return err
	}
	if err := b.readConfig(); err != nil {
		return err
	}
	b.loadModules()
	disk, err := b.findDisk()
	if err != nil {
		return err
	}
	b.growPartition(disk)
	parts, err := b.waitPartitions(disk)
	if err != nil {
		return err
	}
	if err := b.mountRoot(parts); err != nil {
		return err
	}
	return b.switchRoot()
}

// mountEarly mounts /dev, /proc and /sys. Debian's kernels have devtmpfs
// built in but mount it automatically only without an initramfs.
func (b *boot) mountEarly() error {
	early := []mounts.Mount{
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	}
	if _, err := mounts.Ensure(early); err != nil {
		return err
	}
	// An error here has nowhere to be printed; boot on regardless.
	console.Ensure(console.DefaultPath)
	b.log.Info("mounted /dev /proc /sys")
	return nil
}

func (b *boot) readConfig() error {
	p, perr := cmdline.ReadFile("/proc/cmdline")
	b.params = p
	if p.Debug {
		b.log = slog.New(console.NewHandler(os.Stdout, prefix, slog.LevelDebug))
	}
	if p.Slot == "" || p.Disk.IsZero() {
		return fmt.Errorf("kernel command line lacks bulkhead.slot or bulkhead.disk (%v): the bootloader script must set both", perr)
	}
	if perr != nil {
		b.log.Warn("kernel command line", "err", perr)
	}
	trial := "0"
	if p.Trial {
		trial = "1"
	}
	b.log.Info("boot", "slot", p.Slot, "trial", trial, "disk", p.Disk.String())

	cfg, err := initconfig.Load(initconfig.DefaultPath)
	if err != nil {
		return err
	}
	b.cfg = cfg
	return nil
}

// loadModules loads the listed modules in order and arms the watchdog as
// soon as its driver is there. A module that fails is reported and skipped:
// some fail harmlessly (hardware absent), and if a storage driver is missing
// the disk search fails with a message naming what was seen.
func (b *boot) loadModules() {
	wdModule := ""
	switch {
	case b.cfg.Watchdog == nil:
		b.log.Info("watchdog: none on this board")
	case !b.params.Watchdog:
		b.log.Info("watchdog: left unarmed (bulkhead.watchdog=0)")
	default:
		wdModule = strings.ReplaceAll(b.cfg.Watchdog.Module, "-", "_")
		if wdModule == "" || !b.listed(wdModule) {
			b.armWatchdog() // built into the kernel: arm before anything else
		}
	}
	var failed []string
	for _, m := range b.cfg.Modules {
		b.ping()
		path := b.cfg.ModulePath("/", m)
		if err := kmod.Load(path, ""); err != nil {
			b.log.Warn("module not loaded", "err", err)
			failed = append(failed, kmod.Name(m))
			continue
		}
		b.log.Debug("module loaded", "module", kmod.Name(m))
		if wdModule != "" && b.wd == nil && kmod.Name(m) == wdModule {
			b.armWatchdog()
		}
	}
	if len(failed) > 0 {
		b.log.Info("loaded modules", "count", len(b.cfg.Modules)-len(failed), "failed", strings.Join(failed, ","))
	} else {
		b.log.Info("loaded modules", "count", len(b.cfg.Modules))
	}
}

func (b *boot) listed(name string) bool {
	for _, m := range b.cfg.Modules {
		if kmod.Name(m) == name {
			return true
		}
	}
	return false
}

// armWatchdog opens the watchdog, which starts it, and sets its timeout. A
// board whose watchdog cannot be armed still boots: refusing would turn a
// missing driver into a boot loop that no fallback slot can fix.
func (b *boot) armWatchdog() {
	w := b.cfg.Watchdog
	var dev *watchdog.Device
	var err error
	// The driver registers the device node while its module initialises;
	// a PCI driver's probe may lag a little behind.
	for i := 0; i < 20; i++ {
		if dev, err = watchdog.Open(w.Device); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		b.log.Warn("watchdog: running unarmed", "err", err)
		return
	}
	timeout, err := dev.SetTimeout(w.Timeout)
	if err != nil {
		b.log.Warn("watchdog: keeping the driver's timeout", "err", err)
		timeout, _ = dev.Timeout()
	}
	if err := dev.Ping(); err != nil {
		b.log.Warn("watchdog", "err", err)
	}
	b.wd = dev
	b.log.Info("watchdog armed", "device", w.Device, "timeout", time.Duration(timeout)*time.Second)
}

func (b *boot) ping() {
	if b.wd != nil {
		b.wd.Ping()
	}
}

func (b *boot) findDisk() (blockdev.Found, error) {
	ctx, cancel := context.WithTimeout(context.Background(), diskWait)
	defer cancel()
	f := &blockdev.Finder{Read: blockdev.ReadParttable, Tick: b.ping}
	want := blockdev.Identity{Kind: b.params.Disk.Kind, ID: b.params.Disk.ID}
	found, err := f.Find(ctx, want)
	if err != nil {
		return found, fmt.Errorf("boot disk: %w", err)
	}
	b.log.Info("boot disk", "dev", found.Disk.Path, "size", fmt.Sprintf("%dMiB", found.Disk.Size>>20))
	return found, nil
}

// growPartition grows the data partition to the end of the medium; on every
// boot after the first it finds nothing to do. It runs before anything on
// the disk is mounted (see growfs.GrowPartition). Failure is not fatal: the
// system works with the factory-sized data partition, and the next boot
// tries again.
func (b *boot) growPartition(disk blockdev.Found) {
	data := disk.Partitions[partData] // zero when the kernel shows none
	res, err := growfs.GrowPartition(growfs.Partition{
		Disk: disk.Disk.Path, DiskSize: disk.Disk.Size, Number: partData,
		Start: data.Start, Size: data.Size,
	}, parttable.GrowLast)
	switch {
	case err != nil:
		b.log.Warn("data partition not grown", "err", err)
	case res.TableChanged || res.KernelResized || res.Reread:
		b.log.Info("data partition grown", "size", fmt.Sprintf("%dMiB", res.Size>>20))
	}
}

func (b *boot) waitPartitions(disk blockdev.Found) (map[int]blockdev.Partition, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &blockdev.Finder{Tick: b.ping}
	parts, err := f.WaitPartitions(ctx, disk.Disk.Name, partBoot, b.slotPartition(), partData)
	if err != nil {
		return nil, fmt.Errorf("boot disk: %w", err)
	}
	return parts, nil
}

func (b *boot) slotPartition() int {
	if b.params.Slot == "b" {
		return 3
	}
	return 2
}

// mountRoot mounts the slot, the data partition and the boot partition
// under /newroot, and moves /dev, /proc and /sys there.
func (b *boot) mountRoot(parts map[int]blockdev.Partition) error {
	b.ping()
	slot := parts[b.slotPartition()]
	// noload: never replay a journal on the slot, so that mounting it can
	// not write a single block (a slot is never mounted read-write, so its
	// journal is always clean).
	root := mounts.Mount{Source: slot.Path, Target: newRoot, FSType: "ext4", Flags: unix.MS_RDONLY, Data: "noload"}
	if err := root.Do(); err != nil {
		return fmt.Errorf("root slot %s: %w", b.params.Slot, err)
	}
	b.log.Info("mounted root slot", "slot", b.params.Slot, "dev", slot.Path)

	// noatime: nothing on the device reads access times, and recording
	// them would turn reads into metadata writes on flash.
	dataDev := parts[partData].Path
	dataDir := filepath.Join(newRoot, "data")
	data := mounts.Mount{Source: dataDev, Target: dataDir, FSType: "ext4", Flags: unix.MS_NOATIME}
	if err := data.Do(); err != nil {
		if !b.repairJournal(dataDev) {
			return fmt.Errorf("data partition: %w", err)
		}
		if err := data.Do(); err != nil {
			return fmt.Errorf("data partition, after dropping a torn journal commit: %w", err)
		}
	}
	b.log.Info("mounted data", "dev", dataDev)
	b.growFilesystem(dataDir, dataDev)

	boot := mounts.Mount{Source: parts[partBoot].Path, Target: filepath.Join(newRoot, "boot/firmware"), FSType: "vfat",
		Flags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC}
	if err := boot.Do(); err != nil {
		// The OS runs without it; the supervisor reports the missing
		// device configuration.
		b.log.Warn("boot partition not mounted", "err", err)
	}

	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := mounts.Move(d, filepath.Join(newRoot, d)); err != nil {
			return err
		}
	}
	return nil
}

// repairJournal drops a journal commit block torn by a power cut, which
// Debian's Linux 6.1 refuses to mount (see rootfs/jbd2), and reports
// whether it did: the mount is then worth another try.
func (b *boot) repairJournal(dev string) bool {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		b.log.Error("data journal: open", "dev", dev, "err", err)
		return false
	}
	defer f.Close()
	v, wrote, err := jbd2.Repair(f)
	switch {
	case err != nil:
		b.log.Error("data journal: repair", "dev", dev, "err", err)
	case wrote:
		b.log.Warn("data journal: dropped the torn commit of a transaction a power cut interrupted", "transaction", v.Seq, "dev", dev)
	case v.Refusal != "":
		b.log.Error("data journal: the kernel refuses it and it is not a torn commit", "why", v.Refusal)
	}
	return wrote
}

// growFilesystem grows the data filesystem to fill its partition. ext4's
// online resize journals each step, so a power cut leaves a smaller but
// consistent filesystem and the next boot finishes the job.
func (b *boot) growFilesystem(dir, dev string) {
	stop := make(chan struct{})
	if b.wd != nil {
		// Feed the watchdog while the kernel works, but only for so long.
		go func() {
			deadline := time.After(resizeWait)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-deadline:
					return
				case <-t.C:
					b.wd.Ping()
				}
			}
		}()
	}
	res, err := growfs.GrowFilesystem(dir, dev)
	close(stop)
	switch {
	case err != nil:
		b.log.Warn("data filesystem not grown", "err", err)
	case res.Grew():
		b.log.Info("data filesystem grown", "size", fmt.Sprintf("%dMiB", int64(res.To)*res.BlockSize>>20))
	}
}

// switchRoot hands the watchdog and the system over to /sbin/init.
func (b *boot) switchRoot() error {
	env := os.Environ()
	if b.wd != nil {
		wdEnv, err := b.wd.Handover()
		if err != nil {
			return err
		}
		env = append(env, wdEnv...)
	}
	argv := append([]string{nextInit}, os.Args[1:]...)
	b.log.Info("switching root", "init", nextInit)
	err := switchroot.Switch(newRoot, nextInit, argv, env)
	if err == nil {
		err = errors.New("switch root returned")
	}
	return err
}
