package kernel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/debian"
	"github.com/klauspost/compress/gzip"
	"github.com/ulikunitz/xz"
)

// This file tests against Debian bookworm's real arm64 kernel package. The
// mirror comes from $BULKHEAD_DEBIAN_MIRROR or the host's apt sources; the
// .deb (~60 MB) and its extracted tree are cached under the user cache
// directory ($XDG_CACHE_HOME), so only the first run needs the network.

// offline skips the test when err means the network is unreachable; any
// other failure is a real one.
func offline(t *testing.T, err error) {
	t.Helper()
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var urlErr *url.Error
	if errors.As(err, &dnsErr) || errors.As(err, &opErr) || (errors.As(err, &urlErr) && urlErr.Timeout()) {
		t.Skipf("no network: %v", err)
	}
}

// debianMirror returns the base URI of a Debian mirror serving bookworm main.
func debianMirror(t *testing.T) string {
	if m := os.Getenv("BULKHEAD_DEBIAN_MIRROR"); m != "" {
		return strings.TrimSuffix(m, "/")
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, stanza := range strings.Split(string(data), "\n\n") {
			fields := map[string][]string{}
			for _, line := range strings.Split(stanza, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
					fields[strings.ToLower(strings.TrimSpace(k))] = strings.Fields(v)
				}
			}
			if slices.Contains(fields["types"], "deb") && slices.Contains(fields["suites"], "bookworm") && slices.Contains(fields["components"], "main") && len(fields["uris"]) > 0 {
				return strings.TrimSuffix(fields["uris"][0], "/")
			}
		}
	}
	if data, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[0] == "deb" && !strings.HasPrefix(f[1], "[") && f[2] == "bookworm" && slices.Contains(f[3:], "main") {
				return strings.TrimSuffix(f[1], "/")
			}
		}
	}
	t.Fatal("no Debian mirror for bookworm main in /etc/apt: set BULKHEAD_DEBIAN_MIRROR to a mirror's base URI")
	return ""
}

func testCacheDir(t *testing.T) string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "bulkhead-test", "kernel")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

var httpClient = &http.Client{Timeout: 5 * time.Minute}

func download(t *testing.T, uri string, w io.Writer) {
	t.Helper()
	resp, err := httpClient.Get(uri)
	if err != nil {
		offline(t, err)
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", uri, resp.Status)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		offline(t, err)
		t.Fatalf("GET %s: %v", uri, err)
	}
}

type debPin struct{ name, filename, sha256 string }

var kernelPackage = regexp.MustCompile(`^linux-image-6\.1\.0-(\d+)-arm64$`)

// latestKernel picks the newest linux-image-6.1.0-N-arm64 from bookworm's
// arm64 Packages index.
func latestKernel(t *testing.T, mirror string) debPin {
	var buf bytes.Buffer
	download(t, mirror+"/dists/bookworm/main/binary-arm64/Packages.xz", &buf)
	r, err := xz.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var best debPin
	bestABI := -1
	var cur debPin
	flush := func() {
		if m := kernelPackage.FindStringSubmatch(cur.name); m != nil && cur.filename != "" && cur.sha256 != "" {
			if abi, _ := strconv.Atoi(m[1]); abi > bestABI {
				best, bestABI = cur, abi
			}
		}
		cur = debPin{}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			cur.name = strings.TrimPrefix(line, "Package: ")
		case strings.HasPrefix(line, "Filename: "):
			cur.filename = strings.TrimPrefix(line, "Filename: ")
		case strings.HasPrefix(line, "SHA256: "):
			cur.sha256 = strings.TrimPrefix(line, "SHA256: ")
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if bestABI < 0 {
		t.Fatal("bookworm's arm64 index lists no linux-image-6.1.0-N-arm64")
	}
	return best
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// debianArm64Tree returns the extracted tree of a bookworm arm64 kernel
// package, downloading and extracting it on the first run only.
func debianArm64Tree(t *testing.T) (string, debPin) {
	cache := testCacheDir(t)
	pinFile := filepath.Join(cache, "arm64.pin")
	var pin debPin
	if data, err := os.ReadFile(pinFile); err == nil {
		if f := strings.Fields(string(data)); len(f) == 3 {
			pin = debPin{f[0], f[1], f[2]}
		}
	}
	deb := filepath.Join(cache, filepath.Base(pin.filename))
	if pin.name == "" {
		pin = latestKernel(t, debianMirror(t))
		deb = filepath.Join(cache, filepath.Base(pin.filename))
	}
	if sum, err := fileSHA256(deb); err != nil || sum != pin.sha256 {
		f, err := os.CreateTemp(cache, ".deb-*")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(f.Name())
		h := sha256.New()
		download(t, debianMirror(t)+"/"+pin.filename, io.MultiWriter(f, h))
		f.Close()
		if got := hex.EncodeToString(h.Sum(nil)); got != pin.sha256 {
			t.Fatalf("%s: SHA-256 %s, the index says %s", pin.filename, got, pin.sha256)
		}
		if err := os.Rename(f.Name(), deb); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pinFile, []byte(fmt.Sprintf("%s %s %s\n", pin.name, pin.filename, pin.sha256)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree := filepath.Join(cache, "tree-"+pin.sha256[:16])
	if _, err := os.Stat(tree); err == nil {
		return tree, pin
	}
	partial := tree + ".partial"
	os.RemoveAll(partial)
	keep := func(p string) bool {
		return p == "boot" || strings.HasPrefix(p, "boot/") || p == "lib" || strings.HasPrefix(p, "lib/modules") ||
			p == "usr" || p == "usr/lib" || strings.HasPrefix(p, "usr/lib/linux-image-")
	}
	if _, err := debian.Extract(deb, partial, keep); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(partial, tree); err != nil {
		t.Fatal(err)
	}
	return tree, pin
}

func TestDebianBookwormArm64Kernel(t *testing.T) {
	tree, pin := debianArm64Tree(t)
	k, err := Open(tree)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(pin.name, "linux-image-"); k.Version != want {
		t.Fatalf("Version = %q, want %q", k.Version, want)
	}
	t.Logf("%s: %d modules, %d built in", pin.filename, len(k.modules), len(k.builtin))

	t.Run("the vmlinuz is an uncompressed Image and gzips to a third", func(t *testing.T) {
		format, err := k.ImageFormat()
		if err != nil || format != FormatARM64Image {
			t.Fatalf("ImageFormat = %q, %v; want %q", format, err, FormatARM64Image)
		}
		gz := filepath.Join(t.TempDir(), "vmlinuz")
		if err := k.GzipImage(gz); err != nil {
			t.Fatal(err)
		}
		orig, _ := os.ReadFile(k.Image)
		packed, _ := os.ReadFile(gz)
		zr, err := gzip.NewReader(bytes.NewReader(packed))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(plain, orig) {
			t.Fatalf("gunzip of GzipImage's output is not the Image (%v)", err)
		}
		t.Logf("Image %d bytes, gzip %d bytes", len(orig), len(packed))
		if len(packed) > len(orig)/2 {
			t.Errorf("gzip %d bytes of %d: the Image was already compressed?", len(packed), len(orig))
		}
	})

	t.Run("the initramfs modules close over their dependencies", func(t *testing.T) {
		want := []string{"bcm2835", "bcm2835_wdt", "virtio_blk", "virtio_pci", "ext4", "vfat", "nls_cp437", "nls_ascii", "i6300esb", "overlay"}
		mods, err := k.Closure(want)
		if err != nil {
			t.Fatal(err)
		}
		pos := map[string]int{}
		for i, m := range mods {
			pos[m.Name] = i
			if _, err := os.Stat(filepath.Join(k.ModulesDir, m.Path)); err != nil {
				t.Error(err)
			}
		}
		t.Logf("%d requested, %d in the closure: %v", len(want), len(mods), names(mods))
		for _, w := range want {
			if _, ok := pos[w]; !ok {
				t.Errorf("%s missing from the closure", w)
			}
		}
		for _, order := range [][2]string{
			{"jbd2", "ext4"}, {"mbcache", "ext4"}, {"crc16", "ext4"}, {"crc32c_generic", "ext4"}, {"crc32c_generic", "jbd2"},
			{"fat", "vfat"}, {"virtio_pci_modern_dev", "virtio_pci"},
		} {
			a, okA := pos[order[0]]
			b, okB := pos[order[1]]
			if !okA || !okB || a >= b {
				t.Errorf("%s must come before %s: %v", order[0], order[1], names(mods))
			}
		}
		var dep bytes.Buffer
		if err := k.WriteModulesDep(&dep, mods); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(dep.String(), "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n") {
			t.Errorf("modules.dep lacks ext4's line:\n%s", dep.String())
		}
	})

	t.Run("the Raspberry Pi device trees are there", func(t *testing.T) {
		got, err := k.DTBs([]string{"broadcom/bcm2837-rpi-3-b.dtb", "broadcom/bcm2711-rpi-4-*.dtb"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(got, "broadcom/bcm2837-rpi-3-b.dtb") || !slices.Contains(got, "broadcom/bcm2711-rpi-4-b.dtb") {
			t.Fatalf("DTBs = %v", got)
		}
	})
}
