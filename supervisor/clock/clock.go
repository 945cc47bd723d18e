// Package clock keeps the system clock from running before the image's
// build time. Boards without a battery-backed clock (every Raspberry Pi)
// start in 1970, where every TLS certificate is "not yet valid" and an
// HTTPS update could never be fetched; the build time is a lower bound the
// image can vouch for. The clock is only ever moved forward.
//
// Network time is not this package's job.
package clock

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// SetFunc sets the system clock; tests pass a recorder.
type SetFunc func(time.Time) error

// SetSystem sets the system clock (CAP_SYS_TIME).
func SetSystem(t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		return fmt.Errorf("set clock to %s: %w", t.UTC().Format(time.RFC3339), err)
	}
	return nil
}

// NotBefore moves the clock to floor if now is earlier, and reports
// whether it did.
func NotBefore(floor, now time.Time, set SetFunc) (bool, error) {
	if floor.IsZero() || !now.Before(floor) {
		return false, nil
	}
	if err := set(floor); err != nil {
		return false, err
	}
	return true, nil
}

// BuildTime reads "build_time" from release.json at path: seconds since
// the epoch as the builder writes it, or an RFC 3339 string.
func BuildTime(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, fmt.Errorf("build time: %w", err)
	}
	var r struct {
		BuildTime json.RawMessage `json:"build_time"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return time.Time{}, fmt.Errorf("build time: %s: %w", path, err)
	}
	return ParseBuildTime(string(r.BuildTime))
}

// ParseBuildTime accepts a JSON number of seconds or a JSON string holding
// seconds or RFC 3339.
func ParseBuildTime(raw string) (time.Time, error) {
	if s, err := strconv.Unquote(raw); err == nil {
		raw = s
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			return t, nil
		}
	}
	secs, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || secs <= 0 {
		return time.Time{}, fmt.Errorf("build time %q: want seconds since 1970 or RFC 3339", raw)
	}
	return time.Unix(secs, 0).UTC(), nil
}
