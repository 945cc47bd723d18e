package kernel

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// errNotELF marks a module file whose content is not an ELF object.
var errNotELF = errors.New("not an ELF object")

// moduleSuffixes are the file names of modules, uncompressed first: Debian
// 6.1 ships plain .ko, newer kernels .ko.xz or .ko.zst.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// moduleName returns the module name a file name implies (the kernel names
// a module after its object file, with "-" turned into "_"), or "" when the
// file is not a module.
func moduleName(file string) string {
	for _, s := range moduleSuffixes {
		if base, ok := strings.CutSuffix(file, s); ok && base != "" && !strings.Contains(base, "/") {
			return normalize(base)
		}
	}
	return ""
}

// normalize makes a module name canonical: modprobe treats "-" and "_" as
// the same character in names.
func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// modinfo is what dependency resolution needs from a module's .modinfo.
type modinfo struct {
	name    string
	depends []string // hard dependencies (symbols), in the order listed
	pre     []string // softdep "pre:" targets: names or aliases
	post    []string // softdep "post:" targets
	aliases []string
}

// readModinfo reads the .modinfo section of the module file at path.
func readModinfo(path string) (*modinfo, error) {
	var r io.ReaderAt
	if strings.HasSuffix(path, ".ko") {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	} else {
		data, err := decompressModule(path)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%v)", path, errNotELF, err)
	}
	defer ef.Close()
	sec := ef.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s has no .modinfo section: is it a kernel module?", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: .modinfo: %w", path, err)
	}
	return parseModinfo(data), nil
}

// parseModinfo parses NUL-separated key=value strings, the format of both a
// module's .modinfo and modules.builtin.modinfo (there prefixed "name.").
func parseModinfo(data []byte) *modinfo {
	mi := &modinfo{}
	for _, field := range bytes.Split(data, []byte{0}) {
		key, value, ok := strings.Cut(string(field), "=")
		if !ok {
			continue
		}
		switch key {
		case "name":
			mi.name = normalize(value)
		case "depends":
			for _, d := range strings.Split(value, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.depends = append(mi.depends, normalize(d))
				}
			}
		case "softdep":
			pre, post := parseSoftdep(value)
			mi.pre = append(mi.pre, pre...)
			mi.post = append(mi.post, post...)
		case "alias":
			mi.aliases = append(mi.aliases, value)
		}
	}
	return mi
}

// parseSoftdep parses MODULE_SOFTDEP's "pre: a b post: c" syntax.
func parseSoftdep(v string) (pre, post []string) {
	var cur *[]string
	for _, tok := range strings.Fields(v) {
		switch tok {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, tok)
			}
		}
	}
	return pre, post
}

func decompressModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("%s: unknown module compression", path)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}
