package clock

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNotBeforeOnlyMovesForward(t *testing.T) {
	floor := time.Unix(1_750_000_000, 0)
	var set []time.Time
	rec := func(t time.Time) error { set = append(set, t); return nil }
	if moved, _ := NotBefore(floor, time.Unix(0, 0), rec); !moved || len(set) != 1 || !set[0].Equal(floor) {
		t.Fatalf("a 1970 clock was not moved to the build time: %v", set)
	}
	if moved, _ := NotBefore(floor, floor.Add(time.Hour), rec); moved || len(set) != 1 {
		t.Fatal("a clock after the build time was moved")
	}
}

func TestBuildTimeFormats(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"number":  `{"version":"1","build_time":1750000000}`,
		"string":  `{"build_time":"1750000000"}`,
		"rfc3339": `{"build_time":"2025-06-15T15:06:40Z"}`,
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		got, err := BuildTime(p)
		if err != nil || got.Unix() != 1_750_000_000 {
			t.Errorf("%s: %v, %v", name, got, err)
		}
	}
}
