package tests

import (
	"testing"
	"time"
)

func TestScratchEngineConsole(t *testing.T) {
	for _, name := range []string{"qemu-aarch64", "x86_64"} {
		t.Run(name, func(t *testing.T) {
			res := buildOnce(t, name)
			t.Parallel()
			b := loadBoard(t, name)
			vm, _ := boot(t, b, res.Image, "", 6*time.Minute)
			time.Sleep(40 * time.Second)
			t.Logf("console:\n%s", vm.Log())
		})
	}
}
