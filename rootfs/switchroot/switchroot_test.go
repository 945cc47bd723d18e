package switchroot

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The full switch runs in a child process with its own mount namespace:
// the test binary re-executes itself as "fake initramfs", and the new root
// executes the test binary again as "new init", which reports what it sees.
const (
	envRole   = "SWITCHROOT_TEST_ROLE"
	roleRamfs = "initramfs"
	roleInit  = "init"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case roleRamfs:
		if err := fakeInitramfs(); err != nil {
			fmt.Println("initramfs error:", err)
			os.Exit(3)
		}
		os.Exit(4) // Switch returned nil without exec: impossible
	case roleInit:
		entries, _ := os.ReadDir("/")
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		// The fake initramfs left its root directory open for us.
		var oldFD int
		fmt.Sscan(os.Getenv("SWITCHROOT_TEST_OLDFD"), &oldFD)
		old, err := os.NewFile(uintptr(oldFD), "old").Readdirnames(-1)
		if err != nil {
			fmt.Println("read old root:", err)
		}
		sort.Strings(old)
		fmt.Printf("root=%s old=%s args=%s\n", strings.Join(names, ","), strings.Join(old, ","), strings.Join(os.Args[1:], ","))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSwitchExecsInitInTheNewRootAndEmptiesTheOld(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if dynamic(t, self) {
		t.Skip("test binary is dynamically linked; the new root has no libc (build with CGO_ENABLED=0)")
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"="+roleRamfs, "SWITCHROOT_TEST_SELF="+self,
		"SWITCHROOT_TEST_DIR="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fake initramfs: %v\n%s", err, out)
	}
	// The old initramfs held init and etc/; the new root holds sbin and a
	// marker. Only the new root may be visible, and the args must arrive.
	// The old initramfs must be empty but for the mount point of the new root.
	if got, want := strings.TrimSpace(string(out)), "root=marker,sbin old=newroot args=--from-test,x"; got != want {
		t.Errorf("new init saw %q, want %q", got, want)
	}
}

// fakeInitramfs builds a tmpfs that looks like an initramfs with a mounted
// new root inside, chroots into it and calls Switch.
func fakeInitramfs() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	ramfs := os.Getenv("SWITCHROOT_TEST_DIR")
	if err := unix.Mount("tmpfs", ramfs, "tmpfs", 0, "size=64m"); err != nil {
		return err
	}
	for _, p := range []string{"init", "etc/bulkhead/initramfs.json", "lib/modules/k/a.ko"} {
		if err := os.MkdirAll(filepath.Join(ramfs, filepath.Dir(p)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(ramfs, p), []byte("x"), 0o644); err != nil {
			return err
		}
	}
	newRoot := filepath.Join(ramfs, "newroot")
	os.Mkdir(newRoot, 0o755)
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", 0, "size=64m"); err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(newRoot, "sbin"), 0o755)
	os.WriteFile(filepath.Join(newRoot, "marker"), nil, 0o644)
	if err := copyFile(os.Getenv("SWITCHROOT_TEST_SELF"), filepath.Join(newRoot, "sbin/init")); err != nil {
		return err
	}
	if err := unix.Chroot(ramfs); err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// Without O_CLOEXEC: the new init inspects the old root through it.
	oldFD, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	return Switch("/newroot", "/sbin/init", []string{"/sbin/init", "--from-test", "x"},
		[]string{envRole + "=" + roleInit, fmt.Sprintf("SWITCHROOT_TEST_OLDFD=%d", oldFD)})
}

func TestSwitchRefusesWhenRootIsNotAnInitramfs(t *testing.T) {
	dir := t.TempDir()
	err := Switch(dir, "/sbin/init", nil, nil)
	if err == nil {
		t.Fatal("Switch on the test host succeeded")
	}
	// The host's / is a disk filesystem and dir is no mount point: nothing
	// may have been deleted.
	if _, serr := os.Stat(dir); serr != nil {
		t.Fatalf("Switch deleted %s: %v", dir, serr)
	}
}

func TestDeleteContentsStaysOnItsFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	outside := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(outside, []byte("keep"), 0o644)

	os.MkdirAll(filepath.Join(root, "a/b/c"), 0o755)
	os.WriteFile(filepath.Join(root, "a/b/c/file"), nil, 0o644)
	os.Symlink(outside, filepath.Join(root, "a/link"))
	os.Mkdir(filepath.Join(root, "mnt"), 0o755)
	if err := unix.Mount("tmpfs", filepath.Join(root, "mnt"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(root, "mnt"), unix.MNT_DETACH) })
	os.WriteFile(filepath.Join(root, "mnt/kept"), nil, 0o644)

	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		t.Fatal(err)
	}
	if err := DeleteContents(root, uint64(st.Dev)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Errorf("a/ survived: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "mnt/kept")); err != nil {
		t.Errorf("deleted into another mount: %v", err)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
		t.Errorf("followed a symlink out of the tree: %q, %v", b, err)
	}
}

func dynamic(t *testing.T, path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
