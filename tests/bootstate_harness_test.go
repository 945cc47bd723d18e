package tests

// Helpers of the boot-state tests (bootstate_test.go, trial_test.go;
// docs/safety.md): a machine's disk whose boot state, root slots, data
// partition and device configuration a test edits between boots, broken
// slot variants, the console lines of the boot scripts, and sector
// snapshots that show which bytes a boot wrote. Set BULKHEAD_TEST_CONSOLE=1
// to watch the serial consoles while debugging one test.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/qemu"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
	"github.com/bulkhead-os/bulkhead/supervisor/source"
	"github.com/bulkhead-os/bulkhead/supervisor/updater"
)

// Console lines of the boot scripts (bootloader/uboot.hush.tmpl and
// grub.cfg.tmpl). U-Boot prints seq as 0x<hex>, GRUB in decimal. Every
// pattern ends in text that follows the last value on its line: the console
// arrives a few bytes at a time, and "seq=0x2" must not match while "710"
// is still on its way. GRUB ends its lines with "\n\r", so a line may start
// with a carriage return.
var (
	decisionRE  = regexp.MustCompile(`(?m)^\r?bulkhead: boot slot=([ab]) trial=([01]) seq=(0x[0-9a-f]+|[0-9]+) from `)
	neitherRE   = regexp.MustCompile(`(?m)^\r?bulkhead: neither slot booted`)
	scriptRE    = regexp.MustCompile(`bulkhead: (boot script on|grub\.cfg on) `)
	panicRE     = regexp.MustCompile(`Kernel panic - not syncing`)
	badExitRE   = regexp.MustCompile(`(?m)^bulkhead-test: bad init: exiting`)
	badHangRE   = regexp.MustCompile(`(?m)^bulkhead-test: bad init: hanging`)
	bootstateRE = regexp.MustCompile(`bulkhead\.bootstate=((?:uboot|grub):[0-9]+:[0-9]+:[0-9]+)`)
)

// parseSeq parses seq as a boot script prints it.
func parseSeq(s string) (uint32, error) {
	base := 10
	if strings.HasPrefix(s, "0x") {
		s, base = s[2:], 16
	}
	n, err := strconv.ParseUint(s, base, 32)
	return uint32(n), err
}

// stateDisk is a machine's private copy of a built image.
type stateDisk struct {
	path  string
	board *board.Board
	table *parttable.Table
	bs    bootloader.Bootstate
	codec bootloader.Codec
}

func openStateDisk(t *testing.T, path string, b *board.Board) *stateDisk {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := parttable.Read(f, fi.Size())
	if err != nil {
		t.Fatalf("%s: partition table: %v", path, err)
	}
	d := &stateDisk{path: path, board: b, table: tab}
	// The boot-state layout is on the kernel command line the bootloader
	// configuration builds: read it from there, as Linux does.
	cfgFile := "boot.scr"
	if b.Bootloader.Kind == "grub" {
		cfgFile = bootloader.GrubConfigFile
	}
	m := bootstateRE.FindSubmatch(d.readBootFile(t, cfgFile))
	if m == nil {
		t.Fatalf("%s on the boot partition has no bulkhead.bootstate=", cfgFile)
	}
	if d.bs, err = bootloader.ParseBootstateArg(string(m[1])); err != nil {
		t.Fatal(err)
	}
	if d.codec, err = d.bs.Codec(); err != nil {
		t.Fatal(err)
	}
	return d
}

// part returns partition n (1 boot, 2 root-a, 3 root-b, 4 data).
func (d *stateDisk) part(t *testing.T, n int) parttable.Partition {
	t.Helper()
	for _, p := range d.table.Partitions {
		if p.Number == n {
			return p
		}
	}
	t.Fatalf("%s has no partition %d", d.path, n)
	return parttable.Partition{}
}

func slotPart(s bootloader.Slot) int {
	if s == bootloader.SlotB {
		return 3
	}
	return 2
}

// mtoolsImage is the boot partition in mtools' file@@offset syntax.
func (d *stateDisk) mtoolsImage(t *testing.T) string {
	return fmt.Sprintf("%s@@%d", d.path, d.part(t, 1).Start)
}

func (d *stateDisk) readBootFile(t *testing.T, name string) []byte {
	t.Helper()
	out, err := exec.Command("mcopy", "-n", "-i", d.mtoolsImage(t), "::"+name, "-").Output()
	if err != nil {
		t.Fatalf("read %s from the boot partition of %s (mtools): %v", name, d.path, err)
	}
	return out
}

// writeBootFile writes a file into the boot partition the way a user edits
// the device configuration on their PC (a FAT write, before the boot).
func (d *stateDisk) writeBootFile(t *testing.T, name string, data []byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), filepath.Base(name))
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	img := d.mtoolsImage(t)
	dir := filepath.Dir(name)
	if dir != "." {
		exec.Command("mmd", "-i", img, "::"+dir).Run() // fails if it exists
	}
	if out, err := exec.Command("mcopy", "-o", "-i", img, src, "::"+name).CombinedOutput(); err != nil {
		t.Fatalf("write %s into the boot partition (mtools): %v: %s", name, err, out)
	}
}

// withStore runs fn with a Store on the disk file, the Store the supervisor
// and bulkhead-boot use on the device.
func (d *stateDisk) withStore(t *testing.T, fn func(*bootloader.Store)) {
	t.Helper()
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fn(bootloader.NewStore(f, d.codec, d.bs.OffA, d.bs.OffB))
}

func (d *stateDisk) read(t *testing.T) (bootloader.State, bootloader.Info) {
	t.Helper()
	var (
		st   bootloader.State
		info bootloader.Info
		err  error
	)
	d.withStore(t, func(s *bootloader.Store) { st, info, err = s.Read() })
	if err != nil {
		t.Fatal(err)
	}
	return st, info
}

// copyOffset is the byte offset of copy "a" or "b".
func (d *stateDisk) copyOffset(name string) int64 {
	if name == bootloader.CopyB {
		return d.bs.OffB
	}
	return d.bs.OffA
}

func (d *stateDisk) readAt(t *testing.T, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func (d *stateDisk) writeAt(t *testing.T, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func (d *stateDisk) readCopy(t *testing.T, name string) []byte {
	return d.readAt(t, d.copyOffset(name), d.codec.Size())
}

// corrupt returns a copy with one changed byte that the codec (and so the
// bootloader) rejects: for U-Boot a byte under the CRC, for GRUB a byte of
// the first variable's name.
func corruptCopy(t *testing.T, c bootloader.Codec, b []byte) []byte {
	t.Helper()
	out := bytes.Clone(b)
	out[30] ^= 0x20
	if _, err := c.Decode(out); err == nil {
		t.Fatalf("the corrupted %s copy still decodes", c.Name())
	}
	return out
}

// writeSlot copies a root slot image into slot s, keeping the disk file
// sparse: all-zero blocks become holes, so a variant written over another
// leaves nothing of it behind.
func (d *stateDisk) writeSlot(t *testing.T, s bootloader.Slot, image string) {
	t.Helper()
	p := d.part(t, slotPart(s))
	src, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > p.Size {
		t.Fatalf("slot image %s (%d bytes) is larger than partition %d", image, fi.Size(), p.Number)
	}
	dst, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	zero := make([]byte, chunk)
	for off := int64(0); off < p.Size; off += chunk {
		n := 0
		if off < fi.Size() {
			if n, err = io.ReadFull(src, buf); err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
				t.Fatal(err)
			}
		}
		data := buf[:n]
		if bytes.Equal(data, zero[:n]) {
			data = nil
		}
		if len(data) > 0 {
			if _, err := dst.WriteAt(data, p.Start+off); err != nil {
				t.Fatal(err)
			}
		}
		if rest := int64(chunk - len(data)); rest > 0 {
			if err := unix.Fallocate(int(dst.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, p.Start+off+int64(len(data)), rest); err != nil {
				t.Fatalf("punch a hole into %s: %v", d.path, err)
			}
		}
	}
}

// replaceInSlot replaces one file of the ext4 filesystem in slot s with
// debugfs (e2fsprogs) and checks the result with e2fsck.
func (d *stateDisk) replaceInSlot(t *testing.T, s bootloader.Slot, path string, data []byte, mode os.FileMode) {
	t.Helper()
	p := d.part(t, slotPart(s))
	local := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(local, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(local, mode); err != nil {
		t.Fatal(err)
	}
	fs := fmt.Sprintf("%s?offset=%d", d.path, p.Start)
	script := fmt.Sprintf("cd %s\nrm %s\nwrite %s %s\n", filepath.Dir(path), filepath.Base(path), local, filepath.Base(path))
	cmd := exec.Command("debugfs", "-w", "-f", "-", fs)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debugfs: replace %s in slot %s: %v\n%s", path, s, err, out)
	}
	back := filepath.Join(t.TempDir(), "back")
	if out, err := exec.Command("debugfs", "-R", "dump "+path+" "+back, fs).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: read back %s: %v\n%s", path, err, out)
	}
	if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("slot %s: %s was not replaced (%v)", s, path, err)
	}
	if out, err := exec.Command("e2fsck", "-fn", fs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck of slot %s after replacing %s: %v\n%s", s, path, err, out)
	}
}

// writeData writes a file into the data partition's ext4 filesystem (it
// must be clean: before the first boot).
func (d *stateDisk) writeData(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	p := d.part(t, 4)
	local := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(local, data, mode); err != nil {
		t.Fatal(err)
	}
	fs := fmt.Sprintf("%s?offset=%d", d.path, p.Start)
	var script strings.Builder
	dir := ""
	for _, elem := range strings.Split(strings.Trim(filepath.Dir(path), "/"), "/") {
		dir += "/" + elem
		fmt.Fprintf(&script, "mkdir %s\nsif %s mode 040700\n", dir, dir)
	}
	fmt.Fprintf(&script, "cd %s\nwrite %s %s\n", filepath.Dir(path), local, filepath.Base(path))
	cmd := exec.Command("debugfs", "-w", "-f", "-", fs)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debugfs: write %s into the data partition: %v\n%s", path, err, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", fs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck of the data partition after writing %s: %v\n%s", path, err, out)
	}
}

// seedSupervisorTrial leaves the supervisor's update state as an install
// of slot target leaves it just before its reboot (phase ready-to-reboot).
// On the trial boot the real supervisor then runs its health checks and
// commits or rolls back exactly as after an OTA install
// (docs/update-protocol.md, section 3), without the minutes an emulated
// CPU needs to stream and verify a 1 GiB slot.
func (d *stateDisk) seedSupervisorTrial(t *testing.T, from, target bootloader.Slot) {
	t.Helper()
	st := updater.State{Version: 1, Phase: updater.PhaseReady, Update: &updater.Update{
		ID:          "bootstate-test",
		Source:      source.Spec{Kind: source.KindUpload},
		Started:     epoch,
		FromVersion: testVersion,
		FromSlot:    from,
		Target:      target,
		BootID:      "the boot that armed the trial (seeded by the test)",
	}}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	d.writeData(t, "/supervisor/state.json", data, 0o600)
}

// sectorSnapshot is a hash per 512-byte sector of the start of the disk, up to
// root slot a: the partition table, the U-Boot state sectors and the boot
// partition (with the GRUB state files). Comparing two shows every sector a
// boot wrote there.
type sectorSnapshot []uint64

var snapSeed = maphash.MakeSeed()

func (d *stateDisk) snapshot(t *testing.T) sectorSnapshot {
	t.Helper()
	end := d.part(t, 2).Start
	f, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := make(sectorSnapshot, 0, end/512)
	buf := make([]byte, 1<<20)
	for off := int64(0); off < end; off += int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(buf); i += 512 {
			s = append(s, maphash.Bytes(snapSeed, buf[i:i+512]))
		}
	}
	return s
}

// lbaRange is a run of sectors, first to last inclusive.
type lbaRange struct{ first, last int64 }

func (r lbaRange) String() string { return fmt.Sprintf("LBA %d-%d", r.first, r.last) }

func (r lbaRange) within(o lbaRange) bool { return r.first >= o.first && r.last <= o.last }

// changed lists the runs of sectors that differ.
func (s sectorSnapshot) changed(o sectorSnapshot) []lbaRange {
	var out []lbaRange
	for i := 0; i < len(s) && i < len(o); i++ {
		if s[i] == o[i] {
			continue
		}
		j := i
		for j+1 < len(s) && j+1 < len(o) && s[j+1] != o[j+1] {
			j++
		}
		out = append(out, lbaRange{int64(i), int64(j)})
		i = j
	}
	return out
}

// copyRange is the sectors of boot-state copy "a" or "b".
func (d *stateDisk) copyRange(name string) lbaRange {
	off := d.copyOffset(name)
	return lbaRange{off / 512, (off+int64(d.codec.Size()))/512 - 1}
}

// badInit builds tests/testdata/badinit for a board once per mode.
var (
	badInitMu    sync.Mutex
	badInitBuilt = map[string][]byte{}
)

func badInit(t *testing.T, b *board.Board, mode string) []byte {
	t.Helper()
	key := b.Go.Arch + b.GOARM() + "/" + mode
	badInitMu.Lock()
	defer badInitMu.Unlock()
	if data, ok := badInitBuilt[key]; ok {
		return data
	}
	out := filepath.Join(t.TempDir(), "badinit")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.mode="+mode, "-o", out, "./tests/testdata/badinit")
	cmd.Dir = srcDir(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+b.Go.Arch, "GOARM="+b.GOARM())
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build badinit: %v\n%s", err, o)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	badInitBuilt[key] = data
	return data
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// bootVM is one QEMU machine with a cursor into its console. Its methods
// report failures on t: a subtest that uses the machine sets t to itself
// first.
type bootVM struct {
	t    *testing.T
	name string
	m    *qemu.Machine
	disk *stateDisk
	ctx  context.Context
	pos  int
	// started is when the machine was last started.
	started time.Time
	// api is the supervisor's TCP address on the host ("" without network).
	api string
}

const apiToken = "bulkhead-boot-state-test-token"

// newBootVM prepares a machine on a private copy of img. With api set it also
// gives the device a device.yaml that serves the supervisor's API on TCP
// and forwards a host port to it.
func newBootVM(t *testing.T, b *board.Board, img string, api bool) *bootVM {
	t.Helper()
	cfg := qemu.Config{
		Board:    b,
		Image:    img,
		Cache:    userCache(t),
		LockFile: filepath.Join(srcDir(t), "boards", b.Name+".lock"),
		WorkDir:  t.TempDir(),
	}
	if os.Getenv("BULKHEAD_TEST_CONSOLE") != "" {
		// Debugging one test: watch its serial console as it happens.
		cfg.Console = os.Stderr
	}
	port := 0
	if api {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		cfg.HostForward = []string{fmt.Sprintf("tcp:127.0.0.1:%d-:7070", port)}
	}
	m, err := qemu.Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v := &bootVM{t: t, name: b.Name, m: m, ctx: ctx}
	v.disk = openStateDisk(t, m.Disk, b)
	if api {
		v.api = fmt.Sprintf("127.0.0.1:%d", port)
		v.disk.writeBootFile(t, "bulkhead/device.yaml", []byte(fmt.Sprintf("api:\n  listen: \":7070\"\n  token: %q\n", apiToken)))
	}
	t.Cleanup(func() {
		m.PowerCut()
		if t.Failed() {
			t.Logf("%s: serial console of the last start:\n%s\n--- end ---", b.Name, m.Log())
		}
	})
	return v
}

func (v *bootVM) start() {
	v.t.Helper()
	if err := v.m.Start(v.ctx); err != nil {
		v.t.Fatal(err)
	}
	v.pos = 0
	v.started = time.Now()
}

// stop cuts the power.
func (v *bootVM) stop() { v.m.PowerCut() }

// wait waits for re after the cursor and moves the cursor past it.
func (v *bootVM) wait(re *regexp.Regexp, timeout time.Duration) []string {
	v.t.Helper()
	line, next, err := v.m.Wait(v.ctx, re, v.pos, timeout)
	if err != nil {
		v.t.Fatalf("%s: %v\n--- console since the last match ---\n%s\n--- end ---", v.name, err, consoleTail(v.m.Log(), v.pos))
	}
	v.pos = next
	if testing.Verbose() {
		v.t.Logf("%s: %q at %s", v.name, strings.TrimSpace(line), time.Since(v.started).Round(100*time.Millisecond))
	}
	return re.FindStringSubmatch(line)
}

// waitNot waits for re and fails if bad appears before it.
func (v *bootVM) waitNot(re, bad *regexp.Regexp, timeout time.Duration) []string {
	v.t.Helper()
	from := v.pos
	m := v.wait(re, timeout)
	if loc := bad.FindStringIndex(v.m.Log()[from:v.pos]); loc != nil {
		v.t.Fatalf("%s: %q appeared before %q\n--- console ---\n%s\n--- end ---", v.name, bad, re, consoleTail(v.m.Log(), from))
	}
	return m
}

func consoleTail(log string, from int) string {
	if from > len(log) {
		from = len(log)
	}
	s := log[from:]
	if len(s) > 12000 {
		s = "...\n" + s[len(s)-12000:]
	}
	return s
}

// decision waits for the boot script's "bulkhead: boot slot=..." line.
func (v *bootVM) decision(timeout time.Duration) (bootloader.Slot, bool, uint32) {
	v.t.Helper()
	m := v.wait(decisionRE, timeout)
	seq, err := parseSeq(m[3])
	if err != nil {
		v.t.Fatalf("%s: seq in %q: %v", v.name, m[0], err)
	}
	return bootloader.Slot(m[1]), m[2] == "1", seq
}

// ready waits for PID 1's ready line and checks the slot and trial flag.
func (v *bootVM) ready(slot bootloader.Slot, trial bool, timeout time.Duration) {
	v.t.Helper()
	m := v.wait(readyRE, timeout)
	if m[2] != string(slot) || (m[4] == "1") != trial {
		v.t.Fatalf("%s: %q: want slot=%s trial=%v", v.name, m[0], slot, trial)
	}
}
