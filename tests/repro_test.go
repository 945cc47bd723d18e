package tests

import (
	"context"
	"os"
	"testing"

	"github.com/bulkhead-os/bulkhead/builder/image"
)

// TestTwoBuildsAreByteIdentical builds raspberrypi3 again, in another
// directory, and compares every output with the shared build.
func TestTwoBuildsAreByteIdentical(t *testing.T) {
	first := buildOnce(t, "raspberrypi3")
	dir := t.TempDir()
	second, err := image.Run(context.Background(), buildConfig(t, loadBoard(t, "raspberrypi3"), dir, testVersion))
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{
		{first.Image, second.Image},
		{first.XZ, second.XZ},
		{first.Bmap, second.Bmap},
		{first.SBOM, second.SBOM},
		{first.Sums, second.Sums},
	} {
		a, b := fileSum(t, pair[0]), fileSum(t, pair[1])
		if a != b {
			t.Errorf("%s differs between two builds: %s vs %s", pair[0], a, b)
		}
	}
	if _, err := os.Stat(second.Image); err != nil {
		t.Fatal(err)
	}
}
