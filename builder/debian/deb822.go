package debian

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Stanza is one paragraph of a deb822 file (a Packages entry, a Release file,
// a .deb's control file, a .sources entry). Keys are stored as written;
// Get looks them up case-insensitively, as deb822 field names are.
type Stanza map[string]string

// Get returns the value of field key, matching the name case-insensitively.
func (s Stanza) Get(key string) string {
	if v, ok := s[key]; ok {
		return v
	}
	for k, v := range s {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// maxLine bounds one physical line. Real Packages files have lines of a few
// hundred KiB (the Provides of Rust library packages); anything beyond this is
// a broken or hostile file, not data worth holding in memory.
const maxLine = 16 << 20

// parseDeb822 calls fn for every stanza read from r, in order. A stanza ends
// at a blank line or at the end of the input. Continuation lines (starting
// with a space or tab) are appended to the previous field with a newline;
// the first line's value and each continuation line are kept with leading
// and trailing blanks removed, which is what every consumer here wants
// (Description's " ." paragraph markers stay as ".").
//
// With comments set, lines starting with '#' are skipped (.sources files
// allow them; Packages and Release files do not have them, and there a '#'
// would be an error worth reporting).
//
// The map passed to fn is fresh for every stanza; fn may keep it.
func parseDeb822(r io.Reader, comments bool, fn func(Stanza) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var (
		cur     Stanza
		lastKey string
		lineNo  int
		start   int
	)
	flush := func() error {
		if cur == nil {
			return nil
		}
		s := cur
		cur, lastKey = nil, ""
		if err := fn(s); err != nil {
			return fmt.Errorf("stanza at line %d: %w", start, err)
		}
		return nil
	}
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if comments && len(line) > 0 && line[0] == '#' {
			continue
		}
		if len(bytes.TrimSpace(line)) == 0 {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if lastKey == "" {
				return fmt.Errorf("line %d: continuation line outside a field", lineNo)
			}
			cont := string(bytes.TrimSpace(line))
			if v := cur[lastKey]; v == "" {
				cur[lastKey] = cont
			} else {
				cur[lastKey] = v + "\n" + cont
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("line %d: %q is neither a field nor a continuation line", lineNo, truncate(line))
		}
		key := string(line[:colon])
		if strings.ContainsAny(key, " \t") {
			return fmt.Errorf("line %d: field name %q contains a blank", lineNo, key)
		}
		if cur == nil {
			cur = Stanza{}
			start = lineNo
		}
		if _, dup := cur[key]; dup {
			return fmt.Errorf("line %d: field %s appears twice in one stanza", lineNo, key)
		}
		cur[key] = string(bytes.TrimSpace(line[colon+1:]))
		lastKey = key
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: longer than %d bytes", lineNo+1, maxLine)
		}
		return err
	}
	return flush()
}

func truncate(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}

// ParseStanzas reads every stanza of a deb822 document (no comments).
func ParseStanzas(r io.Reader) ([]Stanza, error) {
	var out []Stanza
	err := parseDeb822(r, false, func(s Stanza) error {
		out = append(out, s)
		return nil
	})
	return out, err
}
