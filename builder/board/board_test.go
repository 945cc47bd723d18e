package board

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEveryShippedBoardIsValid(t *testing.T) {
	names, err := List("../../boards")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"qemu-aarch64", "raspberrypi0", "raspberrypi2", "raspberrypi3", "raspberrypi4", "x86_64"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("boards = %v, want %v", names, want)
	}
	for _, n := range names {
		b, err := Load("../../boards", n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if b.Name != n {
			t.Errorf("%s: name %q", n, b.Name)
		}
	}
}

func TestUnknownBoardListsTheBoards(t *testing.T) {
	_, err := Load("../../boards", "nonesuch")
	if err == nil || !strings.Contains(err.Error(), "raspberrypi3") || !strings.Contains(err.Error(), `unknown board "nonesuch"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load("../../boards", "../etc/passwd"); err == nil || !strings.Contains(err.Error(), "unknown board") {
		t.Fatalf("path traversal: err = %v", err)
	}
}

func TestInvalidBoardsNameTheField(t *testing.T) {
	valid, err := os.ReadFile("../../boards/raspberrypi3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, from, to, field string
	}{
		{"an unknown architecture", "arch: arm64", "arch: sparc", "field arch"},
		{"a Go target that does not match the architecture", "go: {arch: arm64}", "go: {arch: amd64}", "field go.arch"},
		{"a bad partition table", "table: mbr", "table: apm", "field table"},
		{"a misspelt field", "console:", "consol:", "consol"},
		{"a boot file from an unlisted package", "{package: u-boot-rpi, src", "{package: u-boot-foo, src", "boot_files[3].package"},
		{"a bad boot command", "boot: booti", "boot: bootm", "bootloader.boot"},
		{"a gzip kernel without a decompression address", `kernel_comp: "0x04000000", `, "", "kernel_comp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := strings.Replace(string(valid), tc.from, tc.to, 1)
			if data == string(valid) {
				t.Fatalf("test edit %q did not apply", tc.from)
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "raspberrypi3.yaml")
			_, err := Parse(path, []byte(data))
			if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want it to name %q and the file", err, tc.field)
			}
		})
	}
}
