package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotationKeepsTheNewestLinesWithinTheBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log", "supervisor.log")
	w, err := Open(path, 100, 3)
	if err != nil {
		t.Fatal(err)
	}
	// 30 lines of 10 bytes: 300 bytes through a 3 x 100-byte budget.
	for i := 0; i < 30; i++ {
		if _, err := fmt.Fprintf(w, "line %04d\n", i); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()

	for _, name := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 100 {
			t.Errorf("%s is %d bytes, over the 100-byte limit", name, st.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("a fourth file exists: %v", err)
	}
	cur := read(t, path)
	if !strings.HasSuffix(cur, "line 0029\n") {
		t.Errorf("current file does not end with the newest line: %q", cur)
	}
	if got := read(t, path+".1"); !strings.HasPrefix(got, "line 0010\n") || !strings.HasSuffix(got, "line 0019\n") {
		t.Errorf("first rotated file holds %q, want lines 10-19", got)
	}
	// Whole lines only: every file starts at a line boundary.
	for _, name := range []string{path, path + ".1", path + ".2"} {
		if s := read(t, name); !strings.HasPrefix(s, "line ") {
			t.Errorf("%s starts mid-line: %q", name, s)
		}
	}
}

func TestReopeningAppendsAndCountsTheExistingSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	os.WriteFile(path, []byte(strings.Repeat("x", 95)+"\n"), 0o644)
	w, err := Open(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("new line\n"))
	w.Close()
	if got := read(t, path); got != "new line\n" {
		t.Errorf("after reopen the current file is %q, want a rotation before the new line", got)
	}
	if got := read(t, path+".1"); len(got) != 96 {
		t.Errorf("old content is %d bytes in .1", len(got))
	}
}

func TestALineLongerThanTheLimitGetsAFileOfItsOwn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	w, _ := Open(path, 10, 2)
	w.Write([]byte("short\n"))
	w.Write([]byte(strings.Repeat("y", 50) + "\n"))
	w.Close()
	if got := read(t, path); len(got) != 51 {
		t.Errorf("long line was split or lost: %q", got)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
