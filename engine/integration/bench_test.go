package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/bulkhead-os/bulkhead/engine/internal/enginetest"
	"github.com/bulkhead-os/bulkhead/engine/pull"
	"github.com/bulkhead-os/bulkhead/engine/store"
)

// Run with: go test -run '^$' -bench . -benchtime 1x ./engine/integration/
// Figures are printed as benchmark metrics; nothing here asserts a time.

func rssKB(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// pssKB is the proportional set size: shared pages (the engine binary
// mapped by every shim) are divided among the processes sharing them.
func pssKB(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func shimPids(bin string) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if bytes.HasPrefix(cmdline, []byte(bin+"\x00shim\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

// BenchmarkEngineIdleMemory reports the daemon's resident memory idle with
// 0 and with 5 containers, and the memory of one shim.
func BenchmarkEngineIdleMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		reg := enginetest.NewRegistry(b, nil)
		ref := reg.Push(b, "test/app:1", enginetest.AppImage(b, enginetest.Amd64))
		e := enginetest.NewEngine(b, "")
		e.Start(b)
		time.Sleep(2 * time.Second)
		idle0 := rssKB(e.Pid())
		e.MustDocker(b, "pull", ref)
		for j := 0; j < 5; j++ {
			e.MustDocker(b, "run", "-d", "--name", "c"+strconv.Itoa(j), "-p", strconv.Itoa(19000+j)+":80", ref, "serve", "80")
		}
		// Let the collector return the pull's buffers, as on a device
		// that pulled once and then runs.
		time.Sleep(3 * time.Second)
		idle5 := rssKB(e.Pid())
		var shimKB, shimPss int64
		pids := shimPids(e.Bin)
		for _, p := range pids {
			shimKB += rssKB(p)
			shimPss += pssKB(p)
		}
		b.ReportMetric(float64(idle0)/1024, "MB-rss-idle-0")
		b.ReportMetric(float64(idle5)/1024, "MB-rss-idle-5")
		if len(pids) > 0 {
			b.ReportMetric(float64(shimKB)/float64(len(pids))/1024, "MB-rss-per-shim")
			b.ReportMetric(float64(shimPss)/float64(len(pids))/1024, "MB-pss-per-shim")
		}
	}
}

func writeBytes() int64 {
	data, _ := os.ReadFile("/proc/self/io")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkPullExtractVersusDownload pulls a 64 MiB image (16 layers of
// 4 MiB, gzip) into a store on this machine's disk and compares it with
// downloading the same blobs to nowhere; it also reports the bytes written
// to disk per byte of layer content (no temporary tarball: ~1).
func BenchmarkPullExtractVersusDownload(b *testing.B) {
	reg := enginetest.NewRegistry(b, nil)
	var layers []v1.Layer
	for i := 0; i < 16; i++ {
		l, err := random.Layer(4<<20, types.OCILayer)
		if err != nil {
			b.Fatal(err)
		}
		layers = append(layers, l)
	}
	ref := reg.Push(b, "bench/big:1", enginetest.ImageOf(b, enginetest.Amd64, v1.Config{Cmd: []string{"/x"}}, layers...))
	var compressed int64
	for _, l := range layers {
		n, _ := l.Size()
		compressed += n
	}
	for i := 0; i < b.N; i++ {
		// Plain download of the same blobs.
		start := time.Now()
		r, _ := name.ParseReference(ref, name.Insecure)
		img, err := remote.Image(r)
		if err != nil {
			b.Fatal(err)
		}
		ls, _ := img.Layers()
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, rc)
			rc.Close()
		}
		download := time.Since(start)

		s, err := store.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		p := pull.New(s, pull.Options{Platform: enginetest.Amd64})
		w0 := writeBytes()
		start = time.Now()
		im, err := p.Pull(context.Background(), ref, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		pullTime := time.Since(start)
		written := writeBytes() - w0
		mb := float64(compressed) / (1 << 20)
		b.ReportMetric(mb/download.Seconds(), "MB/s-download")
		b.ReportMetric(mb/pullTime.Seconds(), "MB/s-pull+extract")
		b.ReportMetric(float64(written)/float64(im.Size()), "disk-bytes/layer-byte")
		b.ReportMetric(float64(im.Size())/(1<<20), "MB-extracted")
	}
}

// BenchmarkContainerStart times POST /containers/{id}/start (overlay mount,
// bridge attach, runc create + start, shim handshake) for 10 containers.
func BenchmarkContainerStart(b *testing.B) {
	for i := 0; i < b.N; i++ {
		reg := enginetest.NewRegistry(b, nil)
		ref := reg.Push(b, "test/app:1", enginetest.AppImage(b, enginetest.Amd64))
		e := enginetest.NewEngine(b, "")
		e.Start(b)
		e.MustDocker(b, "pull", ref)
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", e.Socket)
		}}}
		for _, mode := range []string{"bridge", "none"} {
			var total time.Duration
			const n = 10
			for j := 0; j < n; j++ {
				id := strings.TrimSpace(e.MustDocker(b, "create", "--network", mode, ref))
				start := time.Now()
				resp, err := client.Post("http://engine/v1.47/containers/"+id+"/start", "application/json", nil)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				total += time.Since(start)
				if resp.StatusCode != http.StatusNoContent {
					b.Fatalf("start: %s", resp.Status)
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/n, fmt.Sprintf("ms/start-%s", mode))
		}
	}
}
