package tests

import (
	"regexp"
	"testing"
	"time"
)

func TestTmpResetAfterNeither(t *testing.T) {
	for _, name := range []string{"qemu-aarch64", "x86_64"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := buildOnce(t, name)
			v := newBootVM(t, loadBoard(t, name), res.Image, false)
			d := v.disk
			d.writeSlot(t, slotA, "/dev/null")
			d.writeSlot(t, slotB, "/dev/null")
			before := d.snapshot(t)
			v.start()
			v.wait(neitherRE, 3*time.Minute)
			v.wait(regexp.MustCompile(`(resetting|rebooting) in 10 seconds`), time.Minute)
			v.wait(scriptRE, 3*time.Minute)
			v.wait(neitherRE, 3*time.Minute)
			v.stop()
			t.Logf("changed: %v", before.changed(d.snapshot(t)))
		})
	}
}
