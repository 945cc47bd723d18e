package lock

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func sample() *File {
	return &File{
		Board:   "raspberrypi3",
		Release: "bookworm",
		Inputs: []string{
			Input("rootfs", "runc", "arm64"),
			Input("kernel", "linux-image-arm64", "arm64"),
			Input("artifact", "raspi-firmware", "arm64"),
		},
		Packages: []Pin{
			{Name: "runc", Version: "1.1.5+ds1-1+deb12u1", Arch: "arm64", SHA256: strings.Repeat("a", 64), Size: 2000,
				Filename: "pool/main/r/runc/runc_1.1.5+ds1-1+deb12u1_arm64.deb", Suite: "bookworm", Component: "main", Source: "runc"},
			{Name: "libc6", Version: "2.36-9+deb12u10", Arch: "arm64", SHA256: strings.Repeat("b", 64), Size: 3000,
				Filename: "pool/main/g/glibc/libc6_2.36-9+deb12u10_arm64.deb", Suite: "bookworm", Component: "main", Source: "glibc"},
			{Name: "raspi-firmware", Version: "1:1.20230405+ds-1", Arch: "all", SHA256: strings.Repeat("c", 64), Size: 4000,
				Filename: "pool/non-free-firmware/r/raspi-firmware/raspi-firmware_1.20230405+ds-1_all.deb", Suite: "bookworm", Component: "non-free-firmware", Source: "raspi-firmware"},
		},
	}
}

func TestWriteThenReadRoundTrips(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "raspberrypi3.lock")
	f := sample()
	if err := f.Write(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), Header+"\n") {
		t.Fatalf("lock does not start with the header:\n%s", data)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Release != "bookworm" || got.Board != "raspberrypi3" {
		t.Fatalf("got %+v", got)
	}
	// Written sorted: inputs lexically, packages by name.
	wantInputs := []string{"artifact=raspi-firmware:arm64", "kernel=linux-image-arm64:arm64", "rootfs=runc:arm64"}
	if !reflect.DeepEqual(got.Inputs, wantInputs) {
		t.Fatalf("inputs = %v, want %v", got.Inputs, wantInputs)
	}
	var names []string
	for _, p := range got.Packages {
		names = append(names, p.Name)
	}
	if !reflect.DeepEqual(names, []string{"libc6", "raspi-firmware", "runc"}) {
		t.Fatalf("packages in order %v", names)
	}
	want := map[string]Pin{}
	for _, p := range f.Packages {
		want[p.Name] = p
	}
	for _, p := range got.Packages {
		if want[p.Name] != p {
			t.Errorf("pin changed in the round trip:\n got %+v\nwant %+v", p, want[p.Name])
		}
	}
	p, ok := got.Find("runc", "arm64")
	if !ok || p != f.Packages[0] {
		t.Fatalf("Find(runc) = %+v, %v; want %+v", p, ok, f.Packages[0])
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left next to the lock: %v", entries)
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	a, b := sample(), sample()
	// Same content, different order in memory.
	b.Inputs[0], b.Inputs[2] = b.Inputs[2], b.Inputs[0]
	b.Packages[0], b.Packages[1] = b.Packages[1], b.Packages[0]
	pa, pb := filepath.Join(dir, "a.lock"), filepath.Join(dir, "b.lock")
	a.Board, b.Board = "x", "x"
	if err := a.Write(pa); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(pb); err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(pa)
	db, _ := os.ReadFile(pb)
	if string(da) != string(db) {
		t.Fatalf("same lock content encoded differently:\n%s\n---\n%s", da, db)
	}
}

func TestReadOfAMissingLockSaysHowToCreateIt(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "qemu-aarch64.lock"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), `run "make lock BOARD=qemu-aarch64"`) {
		t.Fatalf("error does not say how to create the lock: %v", err)
	}
}

func TestReadRejectsBrokenLocks(t *testing.T) {
	good := sample()
	data, err := good.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, from, to, want string
	}{
		{"a short sha256 is refused", strings.Repeat("a", 64), "abc", "sha256"},
		{"a filename leaving the archive is refused", "pool/main/r/runc/", "../../", "filename"},
		{"an unknown field is refused", "release: bookworm", "release: bookworm\nmirror: x", "mirror"},
		{"a missing release is refused", "release: bookworm", "release: \"\"", "no release"},
		{"a duplicated input is refused", "- kernel=linux-image-arm64:arm64", "- kernel=linux-image-arm64:arm64\n  - kernel=linux-image-arm64:arm64", "twice"},
		{"a malformed input is refused", "rootfs=runc:arm64", "rootfs-runc", "kind=name:arch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(string(data), tc.from, tc.to, 1)
			if bad == string(data) {
				t.Fatalf("test did not change the lock (no %q)", tc.from)
			}
			_, err := Parse("boards/raspberrypi3.lock", []byte(bad))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "make lock BOARD=raspberrypi3") {
				t.Fatalf("err = %v; want it to mention %q and the refresh command", err, tc.want)
			}
		})
	}
}

func TestCheckNamesEachChangedInput(t *testing.T) {
	f := sample()
	if err := f.Check([]string{"rootfs=runc:arm64", "kernel=linux-image-arm64:arm64", "artifact=raspi-firmware:arm64"}); err != nil {
		t.Fatalf("same inputs in another order: %v", err)
	}
	err := f.Check([]string{"rootfs=runc:arm64", "kernel=linux-image-arm64:arm64", "rootfs=curl:arm64"})
	if !errors.Is(err, ErrStale) {
		t.Fatalf("err = %v, want ErrStale", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`input "rootfs=curl:arm64" was added`,
		`input "artifact=raspi-firmware:arm64" is in the lock but no longer in the board`,
		`run "make lock BOARD=raspberrypi3"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("stale error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "runc:arm64\" was") {
		t.Errorf("unchanged input reported: %q", msg)
	}
}

func TestFindFallsBackToArchitectureIndependentPackages(t *testing.T) {
	f := sample()
	if p, ok := f.Find("raspi-firmware", "arm64"); !ok || p.Arch != "all" {
		t.Fatalf("Find(raspi-firmware, arm64) = %+v, %v", p, ok)
	}
	if _, ok := f.Find("runc", "armhf"); ok {
		t.Fatal("an arm64 pin was returned for armhf")
	}
	if _, ok := f.Find("nonexistent", "arm64"); ok {
		t.Fatal("found a package that is not pinned")
	}
}

func TestParseInputSplitsKindNameArch(t *testing.T) {
	k, n, a, err := ParseInput("kernel=linux-image-arm64:arm64")
	if err != nil || k != "kernel" || n != "linux-image-arm64" || a != "arm64" {
		t.Fatalf("got %q %q %q %v", k, n, a, err)
	}
	for _, bad := range []string{"", "kernel", "kernel=", "=x:y", "kernel=x", "kernel=x:", "kernel=:y"} {
		if _, _, _, err := ParseInput(bad); err == nil {
			t.Errorf("ParseInput(%q) succeeded", bad)
		}
	}
}
