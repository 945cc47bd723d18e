package image

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Release is /etc/bulkhead/release.json: who this slot is.
type Release struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Board     string `json:"board"`
	Arch      string `json:"arch"`
	Kernel    string `json:"kernel"`
	BuildTime int64  `json:"build_time"`
}

// Service is one entry of /etc/bulkhead/services.json, supervised by PID 1.
type Service struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Args []string `json:"args,omitempty"`
}

// services PID 1 starts and restarts (docs/update-protocol.md, docs/engine.md).
var services = []Service{
	{Name: "supervisor", Path: "/usr/bin/supervisor"},
	{Name: "engine", Path: "/usr/bin/engine", Args: []string{
		"--root", "/data/engine", "--exec-root", "/run/bulkhead", "--socket", "/run/bulkhead/engine.sock", "--runc", "/usr/sbin/runc"}},
}

// rootfs stages the root slot's tree in the work directory.
func (b *Build) rootfs(ctx context.Context) error {
	root := b.work("rootfs")
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("clean %s: %w", root, err)
	}
	for _, d := range []string{"boot/dtbs", "boot/firmware", "data", "dev", "etc/bulkhead", "proc", "run", "sys", "tmp", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "mnt", "var"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	// Debian bookworm's merged /usr: the dynamic loader and runc's
	// libraries are found through these links.
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	for _, p := range programs {
		if p.dest == "" {
			continue
		}
		if err := copyFile(filepath.Join(b.binDir, p.name), filepath.Join(root, mergedUsr(strings.TrimPrefix(p.dest, "/"))), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(b.kernelImage, filepath.Join(root, "boot/vmlinuz"), 0o644); err != nil {
		return err
	}
	if err := copyFile(b.initrd, filepath.Join(root, "boot/initrd.img"), 0o644); err != nil {
		return err
	}
	for _, d := range b.dtbs {
		if err := copyFile(d.src, filepath.Join(root, "boot/dtbs", d.rel), 0o644); err != nil {
			return err
		}
	}
	rel := Release{
		Name: b.cfg.Name, Version: b.cfg.Version, Board: b.cfg.Board.Name, Arch: b.cfg.Board.Arch,
		Kernel: b.kernelVersion, BuildTime: b.cfg.Epoch.Unix(),
	}
	if err := writeJSON(filepath.Join(root, "etc/bulkhead/release.json"), rel); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(root, "etc/bulkhead/services.json"), services); err != nil {
		return err
	}
	if err := b.installPackages(root); err != nil {
		return err
	}
	if err := b.installModules(root); err != nil {
		return err
	}
	if err := b.installKeys(root); err != nil {
		return err
	}
	// The supervisor writes the resolver configuration it learns by DHCP
	// under /run: the root filesystem is read-only.
	if err := os.Symlink("../run/bulkhead/resolv.conf", filepath.Join(root, "etc/resolv.conf")); err != nil {
		return err
	}
	osRelease := fmt.Sprintf("NAME=%q\nID=%s\nPRETTY_NAME=%q\nVERSION_ID=%q\nVARIANT_ID=%s\nHOME_URL=%q\n",
		"Bulkhead", b.cfg.Name, "Bulkhead "+b.cfg.Version+" ("+b.cfg.Board.Name+")", b.cfg.Version, b.cfg.Board.Name,
		"https://github.com/bulkhead-os/bulkhead")
	if err := os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(osRelease), 0o644); err != nil {
		return err
	}
	for _, o := range b.cfg.Overlay {
		rel := strings.TrimPrefix(filepath.Clean("/"+o.Path), "/")
		dst := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		os.Remove(dst)
		mode := o.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(dst, o.Data, mode); err != nil {
			return fmt.Errorf("overlay %s: %w", o.Path, err)
		}
		if err := os.Chmod(dst, mode); err != nil {
			return err
		}
	}
	b.rootDir = root
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", strings.TrimPrefix(src, "/"), err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}
