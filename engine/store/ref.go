package store

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// ParseRef parses a user's image reference the way the docker CLI means it:
// "alpine" is docker.io/library/alpine:latest.
func ParseRef(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w (expected e.g. registry.example.com/app:1.0)", s, err)
	}
	return ref, nil
}

// Familiar is the short form of a fully qualified name, as docker prints
// it: index.docker.io/library/alpine:latest -> alpine:latest.
func Familiar(full string) string {
	for _, p := range []string{"index.docker.io/library/", "index.docker.io/", "docker.io/library/", "docker.io/"} {
		if s, ok := strings.CutPrefix(full, p); ok {
			return s
		}
	}
	return full
}
