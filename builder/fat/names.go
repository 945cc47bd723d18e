package fat

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// shortSpecial are the punctuation characters an 8.3 name may contain
// besides A-Z and 0-9.
const shortSpecial = "$%'-_@~`!(){}^#&"

// longForbidden are the characters VFAT long names may not contain.
const longForbidden = "\"*/:<>?\\|"

func validShortChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(shortSpecial, c) >= 0
}

// checkLongName validates one path component as a VFAT long name.
func checkLongName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty path component")
	case name == "." || name == "..":
		return fmt.Errorf("path component %q is not a file name", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("name %q is not valid UTF-8", name)
	case strings.HasSuffix(name, ".") || strings.HasSuffix(name, " "):
		// Windows and Linux strip trailing dots and spaces, so such a
		// name could never be opened by the name it was given.
		return fmt.Errorf("name %q ends in a dot or space", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(longForbidden, r) {
			return fmt.Errorf("name %q contains %q, which FAT does not allow", name, r)
		}
	}
	if n := len(utf16.Encode([]rune(name))); n > 255 {
		return fmt.Errorf("name %q is %d UTF-16 units long, FAT allows 255", name, n)
	}
	return nil
}

// packShort lays out base and ext in the 11-byte directory entry form.
func packShort(base, ext string) [11]byte {
	var s [11]byte
	for i := range s {
		s[i] = ' '
	}
	copy(s[:8], base)
	copy(s[8:], ext)
	return s
}

// exactShort returns the 8.3 form of name when name already is a valid
// upper-case 8.3 name; such names are stored without a long name entry.
func exactShort(name string) ([11]byte, bool) {
	base, ext, hasDot := strings.Cut(name, ".")
	if len(base) < 1 || len(base) > 8 || len(ext) > 3 || hasDot && len(ext) == 0 || strings.Contains(ext, ".") {
		return [11]byte{}, false
	}
	for i := 0; i < len(name); i++ {
		if name[i] != '.' && !validShortChar(name[i]) {
			return [11]byte{}, false
		}
	}
	return packShort(base, ext), true
}

// shortBasis derives the 8.3 basis of a long name the way Windows does:
// upper-case it, drop spaces and leading dots, turn characters 8.3 cannot
// hold into '_', take the part after the last dot as the extension and
// truncate to 8 + 3. lossy reports that the basis does not spell the long
// name (beyond letter case), in which case a numeric tail is mandatory.
func shortBasis(name string) (base, ext string, lossy bool) {
	trimmed := strings.TrimLeft(name, ". ")
	lossy = trimmed != name
	main, extPart := trimmed, ""
	if i := strings.LastIndexByte(trimmed, '.'); i >= 0 {
		main, extPart = trimmed[:i], trimmed[i+1:]
	}
	conv := func(s string, limit int) string {
		var b strings.Builder
		for _, r := range strings.ToUpper(s) {
			switch {
			case r == ' ' || r == '.':
				lossy = true
				continue
			case r < utf8.RuneSelf && validShortChar(byte(r)):
				b.WriteByte(byte(r))
			default:
				lossy = true
				b.WriteByte('_')
			}
		}
		out := b.String()
		if len(out) > limit {
			lossy = true
			out = out[:limit]
		}
		return out
	}
	base, ext = conv(main, 8), conv(extPart, 3)
	if base == "" {
		base, lossy = "_", true
	}
	return base, ext, lossy
}

// assignShortNames gives every entry of one directory a unique 8.3 name.
// Names that are already valid upper-case 8.3 names keep themselves (they
// are claimed first, so a generated name can never take them); the others
// get their basis, or the basis with the first free "~n" tail, in the
// directory's sorted order, which makes the result independent of the order
// the caller listed files in.
func assignShortNames(children []*node) error {
	used := map[[11]byte]bool{}
	for _, c := range children {
		if s, ok := exactShort(c.name); ok {
			c.short, c.long = s, false
			used[s] = true
		}
	}
	for _, c := range children {
		if _, ok := exactShort(c.name); ok {
			continue
		}
		c.long = true
		base, ext, lossy := shortBasis(c.name)
		if s := packShort(base, ext); !lossy && !used[s] {
			c.short = s
			used[s] = true
			continue
		}
		found := false
		for n := 1; n <= 999999 && !found; n++ {
			tail := "~" + strconv.Itoa(n)
			b := base
			if len(b) > 8-len(tail) {
				b = b[:8-len(tail)]
			}
			if s := packShort(b+tail, ext); !used[s] {
				c.short = s
				used[s] = true
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no free 8.3 name for %q", c.name)
		}
	}
	return nil
}

// lfnChecksum is the checksum of an 8.3 name stored in each of its long
// name entries, which is how readers tie them together.
func lfnChecksum(s [11]byte) byte {
	var sum byte
	for _, c := range s {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// lfnEntryCount is the number of 32-byte long name entries name needs.
func lfnEntryCount(name string) int {
	return (len(utf16.Encode([]rune(name))) + 12) / 13
}

// putLFN writes the long name entries for name, last part first as the
// format requires, into b, which has room for lfnEntryCount(name) entries.
func putLFN(b []byte, name string, short [11]byte) {
	units := utf16.Encode([]rune(name))
	n := (len(units) + 12) / 13
	// Pad: one NUL terminator if there is room, then 0xffff.
	padded := make([]uint16, n*13)
	for i := range padded {
		switch {
		case i < len(units):
			padded[i] = units[i]
		case i == len(units):
			padded[i] = 0
		default:
			padded[i] = 0xffff
		}
	}
	sum := lfnChecksum(short)
	// Character positions inside an entry: 5 at 1, 6 at 14, 2 at 28.
	pos := [13]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}
	for seq := n; seq >= 1; seq-- {
		e := b[(n-seq)*32:][:32]
		ord := byte(seq)
		if seq == n {
			ord |= 0x40
		}
		e[0] = ord
		e[11] = attrLongName
		e[12] = 0
		e[13] = sum
		e[26], e[27] = 0, 0
		for i, p := range pos {
			u := padded[(seq-1)*13+i]
			e[p], e[p+1] = byte(u), byte(u>>8)
		}
	}
}
