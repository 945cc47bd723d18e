// Package qemu boots a built image under QEMU, for `make qemu` and for the
// integration tests in tests/.
//
// It owns the QEMU command lines of the boards (board.QEMU) and the
// QEMU-only quirks the DESIGN lists (a legacy-uImage wrapper around 32-bit
// U-Boot, a device-tree fix for the armel kernel, the unarmed watchdog on
// raspi machines, power-of-two SD card sizes). Quirks are applied to a private
// copy of the image, never to the image users flash.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-os/bulkhead/builder/board"
	"github.com/bulkhead-os/bulkhead/builder/cache"
	"github.com/bulkhead-os/bulkhead/builder/lock"
)

// Config describes one machine.
type Config struct {
	Board *board.Board
	// Image is the disk image; Prepare copies it unless InPlace is set.
	Image    string
	InPlace  bool
	Cache    *cache.Cache
	LockFile string
	// WorkDir holds the machine's private files (image copy, firmware vars).
	WorkDir string
	// Bootargs are extra kernel arguments written into the copy's boot
	// partition (bulkhead/bootargs.env), added to the board's qemu.bootargs.
	Bootargs string
	// HostForward adds user-mode network forwards, e.g. "tcp::18080-:8080".
	HostForward []string
	// ExtraArgs are appended to the QEMU command line (e.g. a blklogwrites drive).
	ExtraArgs []string
	// Console receives the serial console as it arrives (optional).
	Console io.Writer
}

// Machine is a prepared (and possibly running) QEMU instance.
type Machine struct {
	cfg   Config
	Disk  string
	args  []string
	bin   string
	cmd   *exec.Cmd
	mu    sync.Mutex
	log   bytes.Buffer
	cond  *sync.Cond
	done  chan struct{}
	exitE error
}

// Prepare copies the image, applies the board's test-only quirks and
// computes the QEMU command line.
func Prepare(ctx context.Context, cfg Config) (*Machine, error) {
	b := cfg.Board
	q := b.QEMU
	if q == nil {
		return nil, fmt.Errorf("board %s has no qemu section: it cannot be booted under QEMU (see %s)", b.Name, b.File)
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(q.Binary)
	if err != nil {
		return nil, fmt.Errorf("%s not found: run \"make test\" as root to install QEMU, or apt-get install qemu-system-arm qemu-system-x86", q.Binary)
	}
	m := &Machine{cfg: cfg, bin: bin, Disk: cfg.Image}
	m.cond = sync.NewCond(&m.mu)
	if !cfg.InPlace {
		m.Disk = filepath.Join(cfg.WorkDir, "disk.img")
		if err := copySparse(cfg.Image, m.Disk); err != nil {
			return nil, err
		}
	}
	if q.Drive == "sd" {
		// QEMU's SD card model only accepts power-of-two sizes.
		if err := growToPowerOfTwo(m.Disk); err != nil {
			return nil, err
		}
	}
	bootargs := strings.TrimSpace(q.Bootargs + " " + cfg.Bootargs)
	if bootargs != "" {
		if err := writeBootargs(ctx, m.Disk, b, bootargs); err != nil {
			return nil, err
		}
	}
	for _, fix := range q.DTBFixups {
		if err := applyDTBFixup(ctx, m.Disk, cfg.WorkDir, b, fix); err != nil {
			return nil, err
		}
	}
	args := []string{"-M", q.Machine, "-accel", "tcg,thread=single", "-display", "none", "-monitor", "none", "-nodefaults"}
	if q.Memory != "" {
		args = append(args, "-m", q.Memory)
	} else if q.Machine == "virt" || q.Machine == "q35" {
		args = append(args, "-m", "1024")
	}
	switch q.Loader.Flag {
	case "ovmf":
		code, vars, err := ovmf(cfg.WorkDir)
		if err != nil {
			return nil, err
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	default:
		path, err := loaderPath(cfg, q.Loader)
		if err != nil {
			return nil, err
		}
		if q.Loader.WrapUImage {
			wrapped := filepath.Join(cfg.WorkDir, "u-boot.uimg")
			// QEMU cannot start Debian's raw 32-bit u-boot.bin reliably;
			// as a legacy uImage it loads it at the address U-Boot expects.
			out, err := exec.CommandContext(ctx, "mkimage", "-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none",
				"-a", "0x8000", "-e", "0x8000", "-d", path, wrapped).CombinedOutput()
			if err != nil {
				return nil, fmt.Errorf("wrap u-boot for QEMU (mkimage from u-boot-tools): %v: %s", err, out)
			}
			path = wrapped
		}
		args = append(args, q.Loader.Flag, path)
	}
	switch q.Drive {
	case "sd":
		args = append(args, "-drive", "if=sd,format=raw,file="+m.Disk)
	case "virtio":
		args = append(args, "-drive", "if=none,id=disk0,format=raw,file="+m.Disk, "-device", "virtio-blk-pci,drive=disk0")
	}
	if q.Machine == "virt" || q.Machine == "q35" {
		netdev := "user,id=net0"
		for _, f := range cfg.HostForward {
			netdev += ",hostfwd=" + f
		}
		args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0")
	}
	args = append(args, q.Serial...)
	args = append(args, q.Args...)
	args = append(args, cfg.ExtraArgs...)
	m.args = args
	return m, nil
}

// Command returns the QEMU command line.
func (m *Machine) Command() []string {
	return append([]string{m.bin}, m.args...)
}

// Start boots the machine in the background.
func (m *Machine) Start(ctx context.Context) error {
	m.mu.Lock()
	m.log.Reset()
	m.mu.Unlock()
	cmd := exec.CommandContext(ctx, m.bin, m.args...)
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.bin, err)
	}
	m.cmd = cmd
	m.done = make(chan struct{})
	go func() {
		r := bufio.NewReader(pr)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				m.mu.Lock()
				m.log.Write(buf[:n])
				m.cond.Broadcast()
				m.mu.Unlock()
				if m.cfg.Console != nil {
					m.cfg.Console.Write(buf[:n])
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		m.mu.Lock()
		m.exitE = err
		close(m.done)
		m.cond.Broadcast()
		m.mu.Unlock()
	}()
	return nil
}

// ErrExited is returned by Wait when QEMU ends before the line appears.
var ErrExited = errors.New("qemu exited")

// Wait waits until the console output after offset `from` matches re and
// returns the match and the offset after it.
func (m *Machine) Wait(ctx context.Context, re *regexp.Regexp, from int, timeout time.Duration) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		data := m.log.Bytes()
		if from > len(data) {
			from = len(data)
		}
		if loc := re.FindIndex(data[from:]); loc != nil {
			return string(data[from+loc[0] : from+loc[1]]), from + loc[1], nil
		}
		select {
		case <-m.done:
			return "", len(data), fmt.Errorf("%w before %q appeared: %v", ErrExited, re, m.exitE)
		default:
		}
		if ctx.Err() != nil {
			return "", len(data), fmt.Errorf("timed out after %s waiting for %q", timeout, re)
		}
		m.cond.Wait()
	}
}

// Log returns the console output so far.
func (m *Machine) Log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// Offset is the current length of the console log.
func (m *Machine) Offset() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.Len()
}

// PowerCut kills QEMU at once: the guest gets no chance to flush anything.
func (m *Machine) PowerCut() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		<-m.done
	}
}

// Interactive boots the image with the serial console on this terminal.
func Interactive(ctx context.Context, cfg Config) error {
	if cfg.WorkDir == "" {
		dir, err := os.MkdirTemp("", "bulkhead-qemu-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.WorkDir = dir
	}
	m, err := Prepare(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "qemu: %s\nqemu: quit with Ctrl-A X\n", strings.Join(m.Command(), " "))
	args := m.args
	for i, a := range args {
		if a == "stdio" {
			args[i] = "mon:stdio"
		}
	}
	cmd := exec.CommandContext(ctx, m.bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}

func loaderPath(cfg Config, l board.Loader) (string, error) {
	lf, err := lock.Read(cfg.LockFile)
	if err != nil {
		return "", err
	}
	for _, p := range lf.Packages {
		if p.Name != l.Package {
			continue
		}
		tree, ok := cfg.Cache.Dir("deb", p.SHA256)
		if !ok {
			return "", fmt.Errorf("%s is not unpacked in the cache: build the image first (make image BOARD=%s)", l.Package, cfg.Board.Name)
		}
		path := filepath.Join(tree, l.Path)
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("QEMU loader: %w", err)
		}
		return path, nil
	}
	return "", fmt.Errorf("QEMU loader package %s is not pinned in %s", l.Package, cfg.LockFile)
}

func ovmf(workDir string) (code, vars string, err error) {
	for _, dir := range []string{"/usr/share/OVMF", "/usr/share/ovmf"} {
		c := filepath.Join(dir, "OVMF_CODE_4M.fd")
		v := filepath.Join(dir, "OVMF_VARS_4M.fd")
		if _, err := os.Stat(c); err == nil {
			vars = filepath.Join(workDir, "OVMF_VARS.fd")
			if _, err := os.Stat(vars); err != nil {
				if err := copySparse(v, vars); err != nil {
					return "", "", err
				}
			}
			return c, vars, nil
		}
	}
	return "", "", errors.New("OVMF firmware not found: apt-get install ovmf")
}
