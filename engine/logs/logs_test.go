package logs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func collect(t *testing.T, dir string, o Options) []string {
	t.Helper()
	var got []string
	err := Read(context.Background(), dir, o, func(e Entry) error {
		got = append(got, e.Stream+":"+strings.TrimSuffix(e.Log, "\n"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestLogsRotateBySizeAndReadBackInOrder(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&in, "line %d\n", i)
	}
	if err := w.Copy("stdout", strings.NewReader(in.String())); err != nil {
		t.Fatal(err)
	}
	w.Close()
	matches, _ := filepath.Glob(filepath.Join(dir, "container.log*"))
	if len(matches) != 3 {
		t.Errorf("files after rotation = %v, want 3", matches)
	}
	for _, m := range matches {
		if fi, _ := os.Stat(m); fi.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the 1000 limit", m, fi.Size())
		}
	}
	got := collect(t, dir, Options{Stdout: true, Stderr: true, Tail: -1})
	if len(got) == 0 || got[len(got)-1] != "stdout:line 99" {
		t.Fatalf("last entry = %v", got[len(got)-1:])
	}
	for i := 1; i < len(got); i++ {
		var a, b int
		fmt.Sscanf(got[i-1], "stdout:line %d", &a)
		fmt.Sscanf(got[i], "stdout:line %d", &b)
		if b != a+1 {
			t.Fatalf("entries out of order at %d: %s then %s", i, got[i-1], got[i])
		}
	}
	if tail := collect(t, dir, Options{Stdout: true, Tail: 2}); strings.Join(tail, ",") != "stdout:line 98,stdout:line 99" {
		t.Errorf("tail 2 = %v", tail)
	}
}

func TestLogsFollowSeesNewLinesUntilTheContainerStops(t *testing.T) {
	dir := t.TempDir()
	w, _ := NewWriter(dir, 300, 2)
	w.Write(Entry{Log: "before\n", Stream: "stdout", Time: time.Now()})
	done := make(chan struct{})
	got := make(chan string, 100)
	go func() {
		Read(context.Background(), dir, Options{Stdout: true, Stderr: true, Tail: -1, Follow: true, Done: done, Poll: 10 * time.Millisecond}, func(e Entry) error {
			got <- e.Stream + ":" + strings.TrimSuffix(e.Log, "\n")
			return nil
		})
		close(got)
	}()
	time.Sleep(30 * time.Millisecond)
	for i := 0; i < 20; i++ { // enough to rotate several times while following
		w.Write(Entry{Log: fmt.Sprintf("after %d\n", i), Stream: "stderr", Time: time.Now()})
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(done)
	var all []string
	for s := range got {
		all = append(all, s)
	}
	if all[0] != "stdout:before" || all[len(all)-1] != "stderr:after 19" {
		t.Errorf("followed %v", all)
	}
}

func TestLogsFilterByStreamAndSince(t *testing.T) {
	dir := t.TempDir()
	w, _ := NewWriter(dir, 0, 1)
	t0 := time.Now()
	w.Write(Entry{Log: "old\n", Stream: "stdout", Time: t0})
	w.Write(Entry{Log: "err\n", Stream: "stderr", Time: t0.Add(time.Second)})
	w.Write(Entry{Log: "new\n", Stream: "stdout", Time: t0.Add(2 * time.Second)})
	if got := collect(t, dir, Options{Stdout: true, Tail: -1, Since: t0}); strings.Join(got, ",") != "stdout:new" {
		t.Errorf("stdout since t0 = %v", got)
	}
}
