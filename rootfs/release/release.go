// Package release reads /etc/bulkhead/release.json, the identity the builder
// stamps into every root slot, and formats the one machine-readable line with
// which PID 1 announces a booted system.
//
// The builder owns what goes into the file; this package only reads it, and
// tolerates fields it does not know so that an older PID 1 can read a newer
// file.
package release

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// DefaultPath is where the builder puts the file in a root slot.
const DefaultPath = "/etc/bulkhead/release.json"

// Release is the contents of release.json.
type Release struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Board   string `json:"board"`
	Arch    string `json:"arch"`
	Kernel  string `json:"kernel"`
	// BuildTime is SOURCE_DATE_EPOCH of the build, in seconds since the Unix
	// epoch: the device clock is never set earlier (TLS needs a sane clock).
	BuildTime int64 `json:"build_time"`
}

// Read reads the release file at path.
func Read(path string) (*Release, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	var r Release
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("release %s: %w", path, err)
	}
	return &r, nil
}

// ReadyLine formats the line PID 1 prints once the system is up:
//
//	bulkhead: ready version=<v> slot=<a|b> board=<b> trial=<0|1>
//
// Tests and the integration harness wait for it on the serial console, so
// its shape is a contract: every value is one token (spaces and control
// characters become '_'), and a missing value is "unknown".
func ReadyLine(version, slot, board string, trial bool) string {
	t := "0"
	if trial {
		t = "1"
	}
	return fmt.Sprintf("bulkhead: ready version=%s slot=%s board=%s trial=%s",
		token(version), token(slot), token(board), t)
}

func token(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == '=' {
			return '_'
		}
		return r
	}, s)
}
