package console

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestHandlerWritesOneShortLinePerRecord(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(&buf, "bulkhead: initramfs: ", slog.LevelInfo))

	log.Debug("hidden at info level")
	log.Info("mounted slot", "slot", "a", "dev", "/dev/mmcblk0p2")
	log.With("disk", "vda").Warn("module failed", "err", errors.New("no such device"))
	log.WithGroup("wd").Info("armed", "timeout", 15*time.Second, "empty", "")
	log.Error("boom", slog.Group("g", "k", 1))

	want := "bulkhead: initramfs: mounted slot slot=a dev=/dev/mmcblk0p2\n" +
		"bulkhead: initramfs: warning: module failed disk=vda err=\"no such device\"\n" +
		"bulkhead: initramfs: armed wd.timeout=15s wd.empty=\"\"\n" +
		"bulkhead: initramfs: error: boom g.k=1\n"
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestEnsureLeavesOpenDescriptorsAlone(t *testing.T) {
	// The test process has 0, 1 and 2 open, so Ensure must not even try to
	// open the (possibly absent) console.
	if err := Ensure("/nonexistent/console"); err != nil {
		t.Fatal(err)
	}
}
