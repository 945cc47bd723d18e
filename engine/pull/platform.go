package pull

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultPlatform is the platform this binary was compiled for: the board's
// platform once the builder has cross-compiled the engine. GOARM is read
// from the build settings because the runtime does not expose it.
func DefaultPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = "v7"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" && s.Value != "" {
					p.Variant = "v" + strings.SplitN(s.Value, ",", 2)[0]
				}
			}
		}
	}
	return p
}

// ParsePlatform parses "os/arch[/variant]".
func ParsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant], e.g. linux/arm/v7", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// FormatPlatform is the inverse of ParsePlatform.
func FormatPlatform(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// normalVariant gives the variant registries leave out: an "arm" image
// without one is v7 and an arm64 image is v8 (the containerd convention).
func normalVariant(p v1.Platform) string {
	if p.Variant != "" {
		return p.Variant
	}
	switch p.Architecture {
	case "arm":
		return "v7"
	case "arm64":
		return "v8"
	}
	return ""
}

// compatibleVariants lists, best first, the variants a CPU of variant v can
// run: an armv7 board runs armv6 and armv5 binaries, not the reverse.
func compatibleVariants(p v1.Platform) []string {
	v := normalVariant(p)
	if p.Architecture != "arm" {
		return []string{v}
	}
	all := []string{"v8", "v7", "v6", "v5"}
	for i, x := range all {
		if x == v {
			return all[i:]
		}
	}
	return []string{v}
}

// rank returns the position of have in want's compatibility list, or -1.
func rank(want, have v1.Platform) int {
	if want.OS != have.OS || want.Architecture != have.Architecture {
		return -1
	}
	hv := normalVariant(have)
	for i, v := range compatibleVariants(want) {
		if v == hv {
			return i
		}
	}
	return -1
}

// selectManifest picks the manifest of an index that best fits want.
func selectManifest(want v1.Platform, manifests []v1.Descriptor) (v1.Descriptor, error) {
	best, bestRank := -1, 1<<30
	var have []string
	for i, m := range manifests {
		if m.Platform == nil {
			continue
		}
		have = append(have, FormatPlatform(*m.Platform))
		if r := rank(want, *m.Platform); r >= 0 && r < bestRank {
			best, bestRank = i, r
		}
	}
	if best < 0 {
		return v1.Descriptor{}, fmt.Errorf("%w: image offers %s, this device needs %s: publish a %s variant of the image (docker buildx --platform %s)",
			ErrNoPlatform, strings.Join(have, ", "), FormatPlatform(want), FormatPlatform(want), FormatPlatform(want))
	}
	return manifests[best], nil
}
