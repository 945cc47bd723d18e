// Package service runs the long-lived programs PID 1 supervises (the
// supervisor and the engine, later more): it starts each one, copies its
// output to the console and to a rotated log file, restarts it with
// exponential back-off when it exits, and stops them all at shutdown.
//
// Services come from /etc/bulkhead/services.json in the root slot. The
// package does not decide whether the system is healthy and never reboots;
// that is PID 1's and the supervisor's business.
package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
)

// DefaultSpecPath is where the builder writes the service list.
const DefaultSpecPath = "/etc/bulkhead/services.json"

// Spec is one entry of services.json.
type Spec struct {
	// Name prefixes the service's console lines and names its log file, so
	// it is limited to [a-z0-9._-], starting with a letter or digit.
	Name string `json:"name"`
	// Path is the absolute path of the program.
	Path string `json:"path"`
	// Args are the arguments after the program name.
	Args []string `json:"args"`
}

// LoadSpecs reads the service list at p. A missing file is an empty list: an
// image may run no services at all.
func LoadSpecs(p string) ([]Spec, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	specs, err := ParseSpecs(b)
	if err != nil {
		return nil, fmt.Errorf("services %s: %w", p, err)
	}
	return specs, nil
}

// ParseSpecs decodes and validates a service list. An empty file or "null"
// is an empty list.
func ParseSpecs(b []byte) ([]Spec, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var specs []Spec
	if err := dec.Decode(&specs); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	seen := map[string]bool{}
	for i, s := range specs {
		if !validName(s.Name) {
			return nil, fmt.Errorf("service %d: name %q: want 1-64 of [a-z0-9._-], starting with a letter or digit", i, s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("service %q is listed twice", s.Name)
		}
		seen[s.Name] = true
		if !path.IsAbs(s.Path) || path.Clean(s.Path) != s.Path {
			return nil, fmt.Errorf("service %q: path %q is not a clean absolute path", s.Name, s.Path)
		}
	}
	return specs, nil
}

func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}
