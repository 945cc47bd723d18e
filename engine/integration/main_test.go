package integration

import (
	"os"
	"testing"

	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
)

func TestMain(m *testing.M) {
	enginetest.RunInPrivateNetns()
	code := m.Run()
	enginetest.CleanupBuilds()
	os.Exit(code)
}
