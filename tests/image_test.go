package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var allBoards = []string{"raspberrypi3", "raspberrypi4", "raspberrypi2", "raspberrypi0", "x86_64", "qemu-aarch64"}

type sfdiskDump struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// extract copies one partition out of the image, keeping holes, so the
// reference tools can check it without root.
func extract(t *testing.T, img string, start, size int64) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), fmt.Sprintf("part-%d.img", start))
	run(t, "dd", "if="+img, "of="+out, "bs=1M", "iflag=skip_bytes,count_bytes", fmt.Sprintf("skip=%d", start),
		fmt.Sprintf("count=%d", size), "conv=sparse", "status=none")
	return out
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestImagesPassTheReferenceTools builds every board and checks its image
// the way a user's tools would see it.
func TestImagesPassTheReferenceTools(t *testing.T) {
	for _, name := range allBoards {
		t.Run(name, func(t *testing.T) {
			res := buildOnce(t, name)
			b := loadBoard(t, name)

			out, err := exec.Command("sfdisk", "--verify", res.Image).CombinedOutput()
			if err != nil || strings.Contains(strings.ToLower(string(out)), "error:") {
				t.Fatalf("sfdisk --verify: %v\n%s", err, out)
			}
			var d sfdiskDump
			if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", res.Image)), &d); err != nil {
				t.Fatal(err)
			}
			pt := d.PartitionTable
			wantLabel := map[string]string{"mbr": "dos", "gpt": "gpt"}[b.Table]
			if pt.Label != wantLabel || len(pt.Partitions) != 4 {
				t.Fatalf("table %s with %d partitions, want %s with 4", pt.Label, len(pt.Partitions), wantLabel)
			}
			for i, p := range pt.Partitions {
				if p.Start*512%(4<<20) != 0 {
					t.Errorf("partition %d starts at sector %d: not 4 MiB aligned", i+1, p.Start)
				}
			}
			part := func(i int) string {
				p := pt.Partitions[i]
				return extract(t, res.Image, p.Start*512, p.Size*512)
			}
			if out, err := exec.Command("fsck.vfat", "-n", part(0)).CombinedOutput(); err != nil {
				t.Errorf("fsck.vfat -n boot: %v\n%s", err, out)
			}
			for _, i := range []int{1, 3} {
				if out, err := exec.Command("e2fsck", "-fn", part(i)).CombinedOutput(); err != nil {
					t.Errorf("e2fsck -fn partition %d: %v\n%s", i+1, err, out)
				}
			}

			// Etcher-style: bmaptool copy of the .img.xz with its .bmap gives the .img back.
			copyOut := filepath.Join(t.TempDir(), "copy.img")
			run(t, "bmaptool", "-q", "copy", "--bmap", res.Bmap, res.XZ, copyOut)
			if a, b := fileSum(t, res.Image), fileSum(t, copyOut); a != b {
				t.Fatalf("bmaptool copy of the .img.xz differs from the .img: %s != %s", b, a)
			}

			// SHA256SUMS covers every published output and is right.
			sums, err := os.ReadFile(res.Sums)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
				f := strings.Fields(line)
				if len(f) != 2 {
					t.Fatalf("SHA256SUMS line %q", line)
				}
				if got := fileSum(t, filepath.Join(filepath.Dir(res.Sums), f[1])); got != f[0] {
					t.Errorf("SHA256SUMS: %s is %s, listed %s", f[1], got, f[0])
				}
			}
			checkSBOM(t, res.SBOM)
		})
	}
}

func checkSBOM(t *testing.T, path string) {
	t.Helper()
	var doc struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name         string `json:"name"`
			VersionInfo  string `json:"versionInfo"`
			LicenseDecl  string `json:"licenseDeclared"`
			ExternalRefs []struct {
				Locator string `json:"referenceLocator"`
			} `json:"externalRefs"`
		} `json:"packages"`
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("SBOM is not JSON: %v", err)
	}
	if doc.SPDXVersion != "SPDX-2.3" {
		t.Errorf("SBOM spdxVersion %q", doc.SPDXVersion)
	}
	var deb, gomod bool
	for _, p := range doc.Packages {
		for _, r := range p.ExternalRefs {
			if strings.HasPrefix(r.Locator, "pkg:deb/debian/linux-image-") {
				deb = true
			}
			if strings.HasPrefix(r.Locator, "pkg:golang/golang.org/x/sys@") {
				gomod = true
			}
		}
	}
	if !deb || !gomod {
		t.Errorf("SBOM lacks the kernel package (%v) or the Go modules (%v)", deb, gomod)
	}
}
