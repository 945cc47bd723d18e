package tests

// Images and bundles of the power-cut tests (powercut_test.go).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/compile"
	"github.com/bulkhead-os/bulkhead/rootfs/parttable"
	"github.com/bulkhead-os/bulkhead/rootfs/service"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle"
	"github.com/bulkhead-os/bulkhead/supervisor/bundle/bundletest"
	"github.com/bulkhead-os/bulkhead/tests/powercut"
)

// Versions of the power-cut tests' slot images: the factory slot is the
// built one plus the workload; the updates differ from it only in their
// release.json, which is all an update needs to be a different version.
const (
	pcVersion2 = "2.0.0-powercut"
	pcVersion3 = "3.0.0-powercut"
	// pcToken is the device API token of the test device.yaml.
	pcToken = "powercut-test-token-0123456789abcdef"
	// pcGrow is how much larger than the image the test medium is, so
	// that the first boot grows the data partition (a phase to cut too).
	pcGrow = 64 << 20
)

// pcImage is a board's torture image: the built image with the workload in
// slot a, a device.yaml that opens the API, a medium larger than the image,
// and bundles of two further versions.
type pcImage struct {
	board *board.Board
	dir   string
	// Disk is the factory disk image (do not write it; Prepare copies it).
	Disk string
	// Slots are the slot images by version; Manifests their manifests as
	// the bundles sign them (the factory slot's is computed alike).
	Slots     map[string]string
	Manifests map[string]bundle.Manifest
	// Bundles are the bundle files of pcVersion2 and pcVersion3.
	Bundles map[string]string
	// Factory is the version of the factory slot.
	Factory string
}

var (
	pcMu     sync.Mutex
	pcImages = map[string]*pcImageOnce{}
)

type pcImageOnce struct {
	once sync.Once
	img  *pcImage
	err  error
}

// pcImageFor prepares a board's torture image once per test binary.
func pcImageFor(t *testing.T, name string) *pcImage {
	t.Helper()
	res := buildOnce(t, name)
	pcMu.Lock()
	o := pcImages[name]
	if o == nil {
		o = &pcImageOnce{}
		pcImages[name] = o
	}
	pcMu.Unlock()
	o.once.Do(func() {
		// Inside the build's directory, which TestMain removes.
		builtMu.Lock()
		dir := filepath.Join(built[name].dir, "powercut")
		builtMu.Unlock()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			o.err = err
			return
		}
		o.img, o.err = pcPrepare(t, loadBoard(t, name), res.Image, res.Slot, res.Bundle, dir)
	})
	if o.err != nil {
		t.Fatalf("prepare the power-cut image of %s: %v", name, o.err)
	}
	return o.img
}

func pcPrepare(t *testing.T, b *board.Board, image, slotImg, builtBundle, dir string) (*pcImage, error) {
	ctx := context.Background()
	p := &pcImage{board: b, dir: dir, Slots: map[string]string{}, Manifests: map[string]bundle.Manifest{}, Bundles: map[string]string{}}

	// The workload, cross-compiled for the board.
	bin := filepath.Join(dir, "bin")
	if err := compile.Build(ctx, srcDir(t), bin, compile.Target{GOARCH: b.Go.Arch, GOARM: b.GOARM()},
		[]compile.Program{{Package: "./tests/powercut/cmd/bh-workload", Name: "bh-workload"}}); err != nil {
		return nil, err
	}

	f, err := os.Open(builtBundle)
	if err != nil {
		return nil, err
	}
	built, _, err := bundle.Inspect(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("built bundle: %w", err)
	}
	p.Factory = built.Version

	// The factory slot: the built one with the workload as a service.
	factory := filepath.Join(dir, "slot-"+built.Version+".ext4")
	if err := pcCopy(slotImg, factory); err != nil {
		return nil, err
	}
	specs, err := debugfsCat(ctx, factory, "/etc/bulkhead/services.json")
	if err != nil {
		return nil, err
	}
	svcs, err := service.ParseSpecs(specs)
	if err != nil {
		return nil, err
	}
	svcs = append(svcs, service.Spec{Name: "workload", Path: "/usr/bin/bh-workload", Args: []string{"-interval", "10ms"}})
	js, _ := json.MarshalIndent(svcs, "", "  ")
	if err := debugfsWrite(ctx, factory, "/etc/bulkhead/services.json", append(js, '\n'), 0o644); err != nil {
		return nil, err
	}
	wl, err := os.ReadFile(filepath.Join(bin, "bh-workload"))
	if err != nil {
		return nil, err
	}
	if err := debugfsWrite(ctx, factory, "/usr/bin/bh-workload", wl, 0o755); err != nil {
		return nil, err
	}
	p.Slots[built.Version] = factory
	m := built
	m.Image, m.Payload = bundle.Image{}, bundle.Payload{}
	if m.Image.SHA256, err = powercut.SHA256File(factory, built.Image.Size); err != nil {
		return nil, err
	}
	m.Image.Size = built.Image.Size
	p.Manifests[built.Version] = m

	// The updates: the factory slot with another version in release.json.
	_, key := bundletest.DevKey(t)
	rel, err := debugfsCat(ctx, factory, "/etc/bulkhead/release.json")
	if err != nil {
		return nil, err
	}
	for _, v := range []string{pcVersion2, pcVersion3} {
		s := filepath.Join(dir, "slot-"+v+".ext4")
		if err := pcCopy(factory, s); err != nil {
			return nil, err
		}
		var r map[string]any
		if err := json.Unmarshal(rel, &r); err != nil {
			return nil, fmt.Errorf("release.json: %w", err)
		}
		r["version"] = v
		rb, _ := json.MarshalIndent(r, "", "  ")
		if err := debugfsWrite(ctx, s, "/etc/bulkhead/release.json", append(rb, '\n'), 0o644); err != nil {
			return nil, err
		}
		nm := built
		nm.Version = v
		nm.Image, nm.Payload = bundle.Image{}, bundle.Payload{}
		path := filepath.Join(dir, "bulkhead-"+b.Name+"-"+v+".bundle")
		signed, err := bundle.WriteFile(path, nm, s, key, &bundle.WriteOptions{TempDir: dir})
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", v, err)
		}
		p.Slots[v], p.Manifests[v], p.Bundles[v] = s, signed, path
	}
	for v, s := range p.Slots {
		if out, err := exec.Command("e2fsck", "-fn", s).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("slot image %s after adding the test files: e2fsck -fn: %v\n%s", v, err, out)
		}
	}

	// The factory disk: the factory slot in slot a, device.yaml, and a
	// larger medium.
	p.Disk = filepath.Join(dir, "factory.img")
	if err := pcCopy(image, p.Disk); err != nil {
		return nil, err
	}
	if err := pcWriteSlot(p.Disk, factory, 2); err != nil {
		return nil, err
	}
	yaml := fmt.Sprintf("api:\n  listen: \":7070\"\n  token: %q\nupdate:\n  health_deadline: 3m\n", pcToken)
	if err := pcMcopy(ctx, p.Disk, "::bulkhead", "device.yaml", []byte(yaml)); err != nil {
		return nil, err
	}
	fi, err := os.Stat(p.Disk)
	if err != nil {
		return nil, err
	}
	if err := os.Truncate(p.Disk, fi.Size()+pcGrow); err != nil {
		return nil, err
	}
	return p, nil
}

// Images returns the slot images of the checker: the factory slot may be
// in slot a, every update in either slot.
func (p *pcImage) Images() []powercut.SlotImage {
	var out []powercut.SlotImage
	for v, s := range p.Slots {
		m := p.Manifests[v]
		out = append(out, powercut.SlotImage{Slot: "a", Path: s, Size: m.Image.Size, SHA256: m.Image.SHA256, Version: v})
		if v != p.Factory {
			out = append(out, powercut.SlotImage{Slot: "b", Path: s, Size: m.Image.Size, SHA256: m.Image.SHA256, Version: v})
		}
	}
	return out
}

func pcCopy(src, dst string) error {
	out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %v: %s", src, err, out)
	}
	return nil
}

// pcWriteSlot writes a slot image into partition n of a disk image,
// only where they differ (the image already holds the built slot).
func pcWriteSlot(disk, slotImg string, n int) error {
	d, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	fi, err := d.Stat()
	if err != nil {
		return err
	}
	t, err := parttable.Read(d, fi.Size())
	if err != nil {
		return err
	}
	var part *parttable.Partition
	for i := range t.Partitions {
		if t.Partitions[i].Number == n {
			part = &t.Partitions[i]
		}
	}
	if part == nil {
		return fmt.Errorf("%s has no partition %d", disk, n)
	}
	s, err := os.Open(slotImg)
	if err != nil {
		return err
	}
	defer s.Close()
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(a)) {
		k, err := io.ReadFull(s, a)
		if k == 0 {
			break
		}
		if off+int64(k) > part.Size {
			return fmt.Errorf("slot image %s is larger than partition %d", slotImg, n)
		}
		if _, rerr := d.ReadAt(b[:k], part.Start+off); rerr != nil && rerr != io.EOF {
			return rerr
		}
		if !bytes.Equal(a[:k], b[:k]) {
			if _, err := d.WriteAt(a[:k], part.Start+off); err != nil {
				return err
			}
		}
		if err != nil {
			break
		}
	}
	return d.Sync()
}

func debugfsCat(ctx context.Context, img, path string) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "cat "+path, img)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("debugfs cat %s: %v: %s", path, err, errb.String())
	}
	if out.Len() == 0 {
		return nil, fmt.Errorf("debugfs cat %s in %s: empty or missing: %s", path, img, errb.String())
	}
	return out.Bytes(), nil
}

// debugfsWrite replaces a file of an ext4 image (no journal: the slots
// have none).
func debugfsWrite(ctx context.Context, img, path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp("", "pc-file-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tmp.Write(data)
	tmp.Close()
	script := fmt.Sprintf("cd %s\nrm %s\nwrite %s %s\nsif %s mode 0%o\nsif %s uid 0\nsif %s gid 0\n",
		filepath.Dir(path), filepath.Base(path), tmp.Name(), filepath.Base(path),
		filepath.Base(path), 0o100000|uint32(mode), filepath.Base(path), filepath.Base(path))
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", img)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs write %s: %v: %s", path, err, out)
	}
	got, err := debugfsCat(ctx, img, path)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("debugfs write %s into %s: reads back differently:\n%s", path, img, out)
	}
	return nil
}

// pcMcopy writes a file into the boot partition (FAT) of a disk image.
func pcMcopy(ctx context.Context, disk, dir, name string, data []byte) error {
	d, err := os.Open(disk)
	if err != nil {
		return err
	}
	fi, _ := d.Stat()
	t, err := parttable.Read(d, fi.Size())
	d.Close()
	if err != nil {
		return err
	}
	img := fmt.Sprintf("%s@@%d", disk, t.Partitions[0].Start)
	tmp, err := os.CreateTemp("", "pc-fat-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tmp.Write(data)
	tmp.Close()
	exec.CommandContext(ctx, "mmd", "-i", img, dir).Run() // fails when it exists
	if out, err := exec.CommandContext(ctx, "mcopy", "-o", "-i", img, tmp.Name(), dir+"/"+name).CombinedOutput(); err != nil {
		return fmt.Errorf("mcopy %s: %v: %s", name, err, out)
	}
	return nil
}
