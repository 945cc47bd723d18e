// Command webapp is the application the QEMU engine tests run on a device:
// a static HTTP server (standard library only, so the tests cross-compile
// it for every board in seconds) that answers with what identifies its
// run: the container's hostname (its ID unless set), the kernel's boot ID,
// its architecture, how many times it started (counted durably in a file
// on a volume) and the resource limits its cgroup shows.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Answer is the body of GET /.
type Answer struct {
	Hostname string `json:"hostname"`
	BootID   string `json:"boot_id"`
	Arch     string `json:"arch"`
	Starts   int    `json:"starts"`
	Greeting string `json:"greeting"`
	// Cgroup is /proc/self/cgroup; the limits are the cgroup v2 files
	// of the container's own cgroup (its cgroup namespace's root).
	Cgroup    string `json:"cgroup"`
	MemoryMax string `json:"memory_max"`
	CPUMax    string `json:"cpu_max"`
	PidsMax   string `json:"pids_max"`
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

func main() {
	listen := flag.String("listen", ":80", "address to serve HTTP on")
	state := flag.String("state", "", "file counting the starts (on a volume)")
	flag.Parse()
	starts, err := countStart(*state)
	if err != nil {
		log.Fatalf("webapp: %v", err)
	}
	host, _ := os.Hostname()
	a := Answer{Hostname: host, BootID: readTrim("/proc/sys/kernel/random/boot_id"), Arch: runtime.GOARCH, Starts: starts, Greeting: os.Getenv("GREETING"),
		Cgroup: readTrim("/proc/self/cgroup"), MemoryMax: readTrim("/sys/fs/cgroup/memory.max"),
		CPUMax: readTrim("/sys/fs/cgroup/cpu.max"), PidsMax: readTrim("/sys/fs/cgroup/pids.max")}
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a)
	})
	fmt.Printf("webapp: start %d on %s, listening on %s\n", starts, host, *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}

// countStart increments the counter in path and makes it durable: the
// tests cut the power right after a start.
func countStart(path string) (int, error) {
	if path == "" {
		return 1, nil
	}
	n := 0
	if b, err := os.ReadFile(path); err == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	n++
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, err
	}
	fmt.Fprintln(f, n)
	if err := f.Sync(); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return n, d.Sync()
}
