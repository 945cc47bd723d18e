package boottest

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-os/bulkhead/rootfs/internal/looptest"
)

// The test binary re-executes itself as the PID 1 of a new PID and mount
// namespace ("the kernel"): it builds a tmpfs initramfs, fakes
// /proc/cmdline, chroots and executes the real initramfs /init.
const (
	envRole    = "BOOTTEST_ROLE"
	envRamfs   = "BOOTTEST_RAMFS"
	envInit    = "BOOTTEST_INITRAMFS_BIN"
	envCmdline = "BOOTTEST_CMDLINE"
)

func TestMain(m *testing.M) {
	if os.Getenv(envRole) == "kernel" {
		err := actAsKernel()
		fmt.Println("boottest kernel:", err)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func actAsKernel() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	ramfs := os.Getenv(envRamfs)
	if err := unix.Mount("rootfs", ramfs, "tmpfs", 0, "size=64m"); err != nil {
		return err
	}
	files := map[string]string{
		"etc/bulkhead/initramfs.json": `{"kernel":"test","board":"testboard","modules":[]}`,
		"etc/cmdline":                 os.Getenv(envCmdline) + "\n",
		"proc/.keep":                  "",
	}
	for name, content := range files {
		p := filepath.Join(ramfs, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(ramfs, "proc/.keep"))
	bin, err := os.ReadFile(os.Getenv(envInit))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ramfs, "init"), bin, 0o755); err != nil {
		return err
	}
	// /proc/cmdline of this host has no bulkhead keys; lay a file over it.
	if err := unix.Mount("proc", filepath.Join(ramfs, "proc"), "proc", 0, ""); err != nil {
		return err
	}
	if err := unix.Mount(filepath.Join(ramfs, "etc/cmdline"), filepath.Join(ramfs, "proc/cmdline"), "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if err := unix.Chroot(ramfs); err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	return unix.Exec("/init", []string{"/init"}, []string{"HOME=/", "TERM=linux"})
}

func TestInitramfsAndInitBootTheSlotAndShutDown(t *testing.T) {
	looptest.Require(t, "mkfs.ext4", "e2fsck")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		t.Skipf("needs the go tool to build the mains: %v", err)
	}
	bins := t.TempDir()
	build(t, gobin, bins, "initramfs", "github.com/bulkhead-os/bulkhead/rootfs/cmd/initramfs")
	build(t, gobin, bins, "init", "github.com/bulkhead-os/bulkhead/rootfs/cmd/init")
	build(t, gobin, bins, "hello", "./testdata/hello")

	// The root slot's tree, with every mount point the architecture lists.
	slot := t.TempDir()
	for _, d := range []string{"sbin", "usr/bin", "etc/bulkhead", "data", "proc", "sys", "dev", "run", "tmp", "boot/firmware"} {
		os.MkdirAll(filepath.Join(slot, d), 0o755)
	}
	copyFile(t, filepath.Join(bins, "init"), filepath.Join(slot, "sbin/init"))
	copyFile(t, filepath.Join(bins, "hello"), filepath.Join(slot, "usr/bin/hello"))
	os.WriteFile(filepath.Join(slot, "etc/bulkhead/release.json"),
		[]byte(`{"name":"bulkhead","version":"1.2.3","board":"testboard","arch":"amd64"}`), 0o644)
	os.WriteFile(filepath.Join(slot, "etc/bulkhead/services.json"),
		[]byte(`[{"name":"hello","path":"/usr/bin/hello","args":["from","slot","a"]}]`), 0o644)

	// A Bulkhead disk in miniature, with a random signature so that no
	// other test's loop device can match.
	sig := fmt.Sprintf("0x%08x", rand.Uint32()|1)
	l := looptest.New(t, (51200+131072)*512, "label: dos\nlabel-id: "+sig+"\n"+
		"start=2048, size=16384, type=c\n"+
		"start=18432, size=131072, type=83\n"+
		"start=149504, size=16384, type=83\n"+
		"start=165888, size=16384, type=83\n")
	looptest.Run(t, "", "mkfs.ext4", "-q", "-F", "-d", slot, "-L", "root-a", l.PartDev(2))
	looptest.Run(t, "", "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "data", l.PartDev(4))
	l.Grow(t, 256*looptest.MiB) // a bigger card than the image

	// First boot: the data partition grows, the system comes up and
	// reboots on SIGTERM.
	c := boot(t, bins, "bulkhead.slot=a bulkhead.trial=0 bulkhead.disk=mbr:"+sig)
	c.expect("bulkhead: initramfs: mounted /dev /proc /sys")
	c.expect("bulkhead: initramfs: boot disk dev=" + l.Dev)
	c.expect("bulkhead: initramfs: data partition grown size=175MiB")
	c.expect("bulkhead: initramfs: mounted root slot slot=a dev=" + l.PartDev(2))
	c.expect("bulkhead: initramfs: switching root")
	c.expect("bulkhead: ready version=1.2.3 slot=a board=testboard trial=0")
	c.expect("hello: hello from slot a")
	c.signal(unix.SIGTERM)
	c.expect("bulkhead: init: shutting down action=reboot")
	c.expect("hello: goodbye")
	c.expect("bulkhead: init: reboot")
	c.wait()

	// The data partition was remounted read-only and so is clean, and the
	// service's log reached it.
	looptest.Run(t, "", "e2fsck", "-fn", l.PartDev(4))
	dump := looptest.Run(t, "", "debugfs", "-R", "cat /log/hello.log", l.PartDev(4))
	if !strings.Contains(dump, "hello from slot a") {
		t.Errorf("/data/log/hello.log lacks the service's output: %q", dump)
	}
	// The slot was mounted read-only and noload: not one block written.
	looptest.Run(t, "", "e2fsck", "-fn", l.PartDev(2))

	// Second boot, a trial: nothing left to grow; SIGUSR2 powers off.
	c = boot(t, bins, "bulkhead.slot=a bulkhead.trial=1 bulkhead.disk=mbr:"+sig)
	before := c.expect("bulkhead: ready version=1.2.3 slot=a board=testboard trial=1")
	if strings.Contains(before, "data partition grown") {
		t.Errorf("second boot grew something again:\n%s", before)
	}
	c.signal(unix.SIGUSR2)
	c.expect("bulkhead: init: power off")
	c.wait()

	// Slot b is empty in a factory image: booting it must fail loudly and
	// reboot, so that the bootloader counts the failed trial.
	c = boot(t, bins, "bulkhead.slot=b bulkhead.trial=1 bulkhead.disk=mbr:"+sig)
	c.expect("bulkhead: initramfs: root slot b: mount " + l.PartDev(3))
	c.expect("bulkhead: initramfs: rebooting in 10s")
	c.wait()
}

// console is a booting system's serial console.
type console struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	log   strings.Builder
}

// boot starts the initramfs as PID 1 of new namespaces with the given
// Bulkhead keys on its command line.
func boot(t *testing.T, bins, keys string) *console {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=kernel", envRamfs+"="+t.TempDir(),
		envInit+"="+filepath.Join(bins, "initramfs"),
		envCmdline+"=console=ttyS0 "+keys+" bulkhead.watchdog=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &console{t: t, cmd: cmd, lines: make(chan string)}
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() || testing.Verbose() {
			t.Logf("console of %s:\n%s", keys, c.log.String())
		}
	})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	return c
}

// expect reads the console until a line contains want and returns what
// came before it.
func (c *console) expect(want string) string {
	c.t.Helper()
	var before strings.Builder
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("console closed before %q", want)
			}
			c.log.WriteString(line + "\n")
			if strings.Contains(line, want) {
				return before.String()
			}
			before.WriteString(line + "\n")
		case <-timeout:
			c.t.Fatalf("no %q on the console within 60s", want)
		}
	}
}

func (c *console) signal(sig unix.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// wait drains the console until the namespace ends: the kernel ends it
// when its init reboots.
func (c *console) wait() {
	for line := range c.lines {
		c.log.WriteString(line + "\n")
	}
	c.cmd.Wait()
}

func build(t *testing.T, gobin, dir, name, pkg string) {
	t.Helper()
	cmd := exec.Command(gobin, "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
