package service

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/rootfs/reaper"
)

func TestBackoff(t *testing.T) {
	b := DefaultBackoff
	var got []time.Duration
	var d time.Duration
	for i := 0; i < 9; i++ {
		d = b.Next(d, 3*time.Second)
		got = append(got, d)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		want[i] *= time.Second
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("crash loop delays = %v, want %v", got, want)
	}
	if d := b.Next(60*time.Second, 61*time.Second); d != time.Second {
		t.Errorf("after a minute of uptime the delay is %v, want it reset to 1s", d)
	}
	if d := b.Next(8*time.Second, 59*time.Second); d != 16*time.Second {
		t.Errorf("after 59s of uptime the delay is %v, want 16s", d)
	}
}

// fakeClock never sleeps: After fires at once and moves time forward by the
// delay, and each Now call moves it by step, which is how long a run seems
// to last.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- now
	return ch
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newSupervisor(t *testing.T, clock Clock) (*Supervisor, *lockedBuffer) {
	t.Helper()
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Run(ctx)
	console := &lockedBuffer{}
	return &Supervisor{Reaper: r, Console: console, Clock: clock, LogDir: t.TempDir()}, console
}

func waitStatus(t *testing.T, s *Supervisor, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.Statuses()[0]
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAnExitingServiceIsRestartedWithGrowingBackoff(t *testing.T) {
	s, console := newSupervisor(t, &fakeClock{step: time.Millisecond})
	s.Start([]Spec{{Name: "crashy", Path: "/bin/sh", Args: []string{"-c", "echo starting; echo oops >&2; exit 7"}}})
	st := waitStatus(t, s, "five starts", func(st Status) bool { return st.Starts >= 5 })
	s.Stop(5 * time.Second)

	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	if len(st.Delays) < 4 || !reflect.DeepEqual(st.Delays[:4], want) {
		t.Errorf("back-off delays = %v, want them to start %v", st.Delays, want)
	}
	if st.LastExit != "exit status 7" {
		t.Errorf("last exit = %q", st.LastExit)
	}
	out := console.String()
	if !strings.Contains(out, "crashy: starting\n") || !strings.Contains(out, "crashy: oops\n") {
		t.Errorf("console lacks the prefixed stdout and stderr lines:\n%s", out)
	}
	log, err := os.ReadFile(filepath.Join(s.LogDir, "crashy.log"))
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(string(log), "\n", 2)[0]
	if !strings.HasSuffix(first, "Z starting") && !strings.HasSuffix(first, "Z oops") {
		t.Errorf("log file line %q lacks the timestamp and text", first)
	}
}

func TestBackoffResetsAfterAMinuteOfUptime(t *testing.T) {
	// Every run appears to last 61 s.
	s, _ := newSupervisor(t, &fakeClock{step: 61 * time.Second})
	s.Start([]Spec{{Name: "steady", Path: "/bin/true"}})
	st := waitStatus(t, s, "four starts", func(st Status) bool { return st.Starts >= 4 })
	s.Stop(5 * time.Second)
	for i, d := range st.Delays {
		if d != time.Second {
			t.Fatalf("delay %d = %v after a long run, want 1s (delays %v)", i, d, st.Delays)
		}
	}
}

func TestAMissingProgramIsRetriedNotFatal(t *testing.T) {
	s, _ := newSupervisor(t, &fakeClock{step: time.Millisecond})
	s.Start([]Spec{{Name: "ghost", Path: "/nonexistent/ghost"}})
	st := waitStatus(t, s, "three retries", func(st Status) bool { return len(st.Delays) >= 3 })
	s.Stop(time.Second)
	if st.Starts != 0 || !strings.Contains(st.LastExit, "no such file") {
		t.Errorf("status = %+v, want no starts and the exec error", st)
	}
}

func TestLogFileRotatesAtTheSizeLimit(t *testing.T) {
	s, _ := newSupervisor(t, nil)
	s.LogSize, s.LogFiles = 1000, 3
	s.Start([]Spec{{Name: "chatty", Path: "/bin/sh", Args: []string{"-c",
		"i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; exec sleep 60"}}})
	log := filepath.Join(s.LogDir, "chatty.log")
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), "line 199\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("last line never reached %s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Stop(5 * time.Second)
	for _, name := range []string{log, log + ".1", log + ".2"} {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the limit", name, st.Size())
		}
	}
	if _, err := os.Stat(log + ".3"); !os.IsNotExist(err) {
		t.Errorf("more than 3 files kept: %v", err)
	}
}

func TestStopTerminatesThenKills(t *testing.T) {
	s, _ := newSupervisor(t, nil)
	s.Start([]Spec{
		{Name: "polite", Path: "/bin/sleep", Args: []string{"60"}},
		// Ignores SIGTERM (and so does the sleep it starts): only SIGKILL works.
		{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; sleep 60; sleep 60"}},
	})
	for _, name := range []string{"polite", "stubborn"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			var pid int
			for _, st := range s.Statuses() {
				if st.Name == name {
					pid = st.Pid
				}
			}
			if pid != 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never started", name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond) // let sh install its trap
	s.Stop(300 * time.Millisecond)
	got := map[string]string{}
	for _, st := range s.Statuses() {
		got[st.Name] = st.LastExit
	}
	if got["polite"] != "killed by terminated" || got["stubborn"] != "killed by killed" {
		t.Errorf("exits = %v, want polite terminated and stubborn killed", got)
	}
}

func TestParseSpecs(t *testing.T) {
	tests := []struct {
		name, json string
		want       []Spec
		wantErr    string
	}{
		{name: "the documented example", json: `[{"name":"supervisor","path":"/usr/bin/supervisor","args":[]}]`,
			want: []Spec{{Name: "supervisor", Path: "/usr/bin/supervisor", Args: []string{}}}},
		{name: "an empty file means no services", json: " \n", want: nil},
		{name: "an empty list means no services", json: `[]`, want: []Spec{}},
		{name: "a relative path is refused", json: `[{"name":"a","path":"usr/bin/a"}]`, wantErr: "absolute"},
		{name: "a name that is not a file name is refused", json: `[{"name":"../x","path":"/x"}]`, wantErr: "name"},
		{name: "duplicate names are refused", json: `[{"name":"a","path":"/a"},{"name":"a","path":"/b"}]`, wantErr: "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpecs([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseSpecs = %#v, want %#v", got, tt.want)
			}
		})
	}
	if specs, err := LoadSpecs(filepath.Join(t.TempDir(), "missing.json")); specs != nil || err != nil {
		t.Errorf("missing services.json = %v, %v; want no services and no error", specs, err)
	}
}

func FuzzParseSpecs(f *testing.F) {
	f.Add([]byte(`[{"name":"supervisor","path":"/usr/bin/supervisor","args":["-v"]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		specs, err := ParseSpecs(b)
		if err != nil {
			return
		}
		for _, s := range specs {
			if strings.ContainsAny(s.Name, "/\x00") || s.Name == "." || s.Name == ".." || !filepath.IsAbs(s.Path) {
				t.Fatalf("accepted unsafe spec %+v", s)
			}
		}
	})
}
