package mounts

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	in := "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n" +
		"36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 propagate_from:2 - ext4 /dev/mmcblk0p4 rw,errors=continue\n" +
		"40 1 0:5 / /dev rw - devtmpfs devtmpfs rw,size=1k\n"
	got, err := ParseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Info{
		{ID: 22, Parent: 1, MountPoint: "/proc", Options: "rw,nosuid,nodev,noexec,relatime", FSType: "proc", Source: "proc"},
		{ID: 36, Parent: 35, MountPoint: "/mnt two", Options: "rw,noatime", FSType: "ext4", Source: "/dev/mmcblk0p4"},
		{ID: 40, Parent: 1, MountPoint: "/dev", Options: "rw", FSType: "devtmpfs", Source: "devtmpfs"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseMountinfo =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := ParseMountinfo(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("a truncated line parsed")
	}
}

func TestTableReadsThisProcess(t *testing.T) {
	infos, err := Table()
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := IsMounted("/proc"); !ok {
		t.Errorf("/proc is not in the mount table of %d entries", len(infos))
	}
}

func TestEnsureMountsOnlyWhatIsMissingAndMoveMoves(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "moved")
	ms := []Mount{{Source: "tmpfs", Target: a, FSType: "tmpfs", Flags: unix.MS_NOSUID, Data: "mode=0700,size=1m"}}
	t.Cleanup(func() { unix.Unmount(a, unix.MNT_DETACH); unix.Unmount(b, unix.MNT_DETACH) })

	done, err := Ensure(ms)
	if err != nil || !reflect.DeepEqual(done, []string{a}) {
		t.Fatalf("first Ensure = %v, %v; want [%s]", done, err, a)
	}
	done, err = Ensure(ms)
	if err != nil || len(done) != 0 {
		t.Fatalf("second Ensure = %v, %v; want nothing mounted twice", done, err)
	}
	if err := os.WriteFile(filepath.Join(a, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Move(a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(b, "marker")); err != nil {
		t.Errorf("marker did not move with the mount: %v", err)
	}
	if ok, _ := IsMounted(a); ok {
		t.Error("the old mount point is still mounted after Move")
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("22 1 0:21 / /proc rw shared:12 - proc proc rw\n")
	f.Add("36 35 98:0 / /a\\040b rw - ext4 /dev/x rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		infos, err := ParseMountinfo(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, in := range infos {
			if in.FSType == "" {
				t.Fatalf("empty fstype from %q", s)
			}
		}
	})
}
