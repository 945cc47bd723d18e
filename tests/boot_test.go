package tests

import (
	"testing"
	"time"
)

// TestBootToReady boots every QEMU-capable board from its image file through
// the real firmware and bootloader, to PID 1's ready line on slot a.
func TestBootToReady(t *testing.T) {
	for _, name := range []string{"qemu-aarch64", "x86_64", "raspberrypi3", "raspberrypi2", "raspberrypi0"} {
		t.Run(name, func(t *testing.T) {
			res := buildOnce(t, name)
			t.Parallel()
			b := loadBoard(t, name)
			vm, m := boot(t, b, res.Image, "", 6*time.Minute)
			if m[1] != testVersion || m[2] != "a" || m[3] != name {
				t.Logf("console:\n%s", vm.Log())
				t.Fatalf("ready line says version=%s slot=%s board=%s, want %s a %s", m[1], m[2], m[3], testVersion, name)
			}
		})
	}
}
