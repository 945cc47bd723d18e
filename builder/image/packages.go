package image

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bulkhead-os/bulkhead/builder/resolve"
	"github.com/bulkhead-os/bulkhead/supervisor/keys"
)

// dropped are paths of Debian packages the device never uses: documentation
// and the hooks of a package manager that is not there. The copyright files
// go into the SBOM instead.
var dropped = []string{"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/bug", "etc/ca-certificates", "usr/sbin/update-ca-certificates", "etc/ssl/certs"}

// installPackages copies the unpacked root filesystem packages (role rootfs)
// into the tree. Debian's maintainer scripts never run; what they would
// generate is made here (the CA bundle).
func (b *Build) installPackages(root string) error {
	var names []string
	for _, in := range b.pins {
		if in.role == resolve.RoleRootfs {
			names = append(names, in.pin.Name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if err := copyTree(b.trees[name], root); err != nil {
			return fmt.Errorf("install %s: %w", name, err)
		}
	}
	if tree, ok := b.trees["ca-certificates"]; ok {
		if err := writeCABundle(tree, filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); err != nil {
			return err
		}
	}
	return nil
}

func isDropped(rel string) bool {
	for _, d := range dropped {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	return false
}

// copyTree merges an unpacked package into the root. Debian's merged /usr
// (bookworm's base-files makes /lib -> usr/lib) is respected: a package's
// top-level lib/ or sbin/ lands under usr/.
func copyTree(src, root string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if isDropped(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(root, mergedUsr(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case info.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			os.Remove(dst)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			return os.Symlink(target, dst)
		case info.Mode().IsRegular():
			return copyFile(p, dst, info.Mode().Perm()|info.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky))
		}
		return nil
	})
}

func mergedUsr(rel string) string {
	for _, top := range []string{"lib", "lib64", "bin", "sbin"} {
		if rel == top || strings.HasPrefix(rel, top+"/") {
			return path.Join("usr", rel)
		}
	}
	return rel
}

// writeCABundle concatenates the Mozilla trust anchors in name order, as
// update-ca-certificates would.
func writeCABundle(tree, out string) error {
	certs, err := filepath.Glob(filepath.Join(tree, "usr/share/ca-certificates/mozilla/*.crt"))
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("ca-certificates: no certificates under usr/share/ca-certificates/mozilla (%v)", err)
	}
	sort.Strings(certs)
	var buf bytes.Buffer
	for _, c := range certs {
		data, err := os.ReadFile(c)
		if err != nil {
			return err
		}
		buf.Write(bytes.TrimSpace(data))
		buf.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// installModules copies the root filesystem's kernel modules and writes
// their load order for PID 1 and a modules.dep for anything else.
func (b *Build) installModules(root string) error {
	dir := filepath.Join(root, "lib/modules", b.kernelVersion)
	var list []string
	for _, m := range b.rootModules {
		if err := copyFile(m.src, filepath.Join(dir, m.rel), 0o644); err != nil {
			return err
		}
		list = append(list, m.rel)
	}
	return writeJSON(filepath.Join(root, "etc/bulkhead/modules.json"), map[string]any{"kernel": b.kernelVersion, "modules": list})
}

// installKeys bakes the public half of the signing key into the image: the
// supervisor trusts bundles signed by these keys only.
func (b *Build) installKeys(root string) error {
	if b.cfg.SigningKey == "" {
		return nil
	}
	pubs, err := keys.LoadPublic(b.cfg.SigningKey + ".pub")
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	dir := filepath.Join(root, "etc/bulkhead/keys")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, pub := range pubs {
		data, err := keys.MarshalPublic(pub, "Bulkhead update signing key")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, keys.IDString(pub)+".pub"), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
