package powercut

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestRegressionFixtures checks again every crash state that once failed
// (testdata/*.json, written by the power-cut tests of package tests; see
// Fixture). Each one is a bug that was found: it must stay fixed.
func TestRegressionFixtures(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".json"), func(t *testing.T) {
			f, err := LoadFixture(p)
			if err != nil {
				t.Fatal(err)
			}
			r, err := f.Run(context.Background(), "testdata", t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range r.Findings {
				t.Errorf("%s board %s, phase %q, boots %s trial=%v (%s): %s: %s", f.Name, f.Board, f.Phase, r.Boot, r.Trial, r.BootState, x.Check, x.Detail)
			}
		})
	}
}
