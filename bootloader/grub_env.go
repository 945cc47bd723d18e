package bootloader

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

// GrubEnvSize is the size of one GRUB boot-state copy: the size of the
// preallocated files EFI/bulkhead/state-a.env and state-b.env, and the size
// grub-editenv gives a new environment block.
const GrubEnvSize = 1024

// grubSignature starts every GRUB environment block (include/grub/lib/envblk.h
// GRUB_ENVBLK_SIGNATURE); load_env and save_env refuse a block without it.
const grubSignature = "# GRUB Environment Block\n"

// GrubEnv is the GRUB codec: a 1024-byte GRUB environment block as
// load_env/save_env read and write it (grub-core/lib/envblk.c): the
// signature line, `name=value\n` lines, and '#' padding to the end.
//
// GRUB's block has no CRC, so each copy carries bh_check, the line written
// after the others, holding "<committed>:<trial>:<tries>:<seq>". A copy is
// valid only when bh_check has that shape and equals the joined values of
// the four variables; seq is decimal because GRUB's `[ a -gt b ]` compares
// decimal numbers. grub.cfg applies exactly these rules (GrubConfig).
//
// Why a corrupted or torn copy is detected or harmless: every accepted copy
// decodes to the state its own bh_check spells, so a copy can only be
// accepted as a state some writer wrote in full. A single changed byte
// either changes one of the five values (the check no longer matches),
// breaks the signature (GRUB refuses the block), merges or splits lines (a
// variable goes missing or changes), or falls into the '#' padding or after
// the data (ignored, the state is unchanged). A torn write of the copy
// (new bytes up to some point, the copy's old bytes after it) yields lines
// from the new state followed by lines of the old one; GRUB and this decoder
// take the last assignment of each variable, so the result is the new state,
// the copy's old state (older than the other copy, so it loses), or a mix
// that fails the check. The tests check every single-byte corruption and
// every tear point.
//
// One double fault remains, inherent to a format whose first 25 bytes are
// the same in every block: if outside corruption damaged the newest copy
// (say its signature line, so the other copy took over) and a later write
// into that copy is torn right after the damaged bytes, the write repairs
// the damage and the copy's earlier, fully written state returns. It is a
// state some writer completed, never older than the one it replaces, and a
// trial it may revive is bounded like any other. U-Boot's block starts with
// its CRC, which differs between states, so it has no such case.
type GrubEnv struct{}

// Name implements Codec.
func (GrubEnv) Name() string { return "grub" }

// Size implements Codec.
func (GrubEnv) Size() int { return GrubEnvSize }

// grubVars is the order of the lines in a copy and the whitelist grub.cfg
// passes to load_env. bh_check comes last so that a writer that fills the
// block front to back completes the check only after the values.
var grubVars = []string{varCommitted, varTrial, varTries, varSeq, varCheck}

// Encode implements Codec. The layout is what `grub-editenv FILE create`
// followed by `grub-editenv FILE set` of the five variables in order
// produces, and what save_env leaves after it rewrites those variables in
// place (grub_envblk_set keeps a variable's position), so Go's and GRUB's
// copies of one state are byte-identical. The exception is a damaged copy
// that GRUB overwrites: a line it no longer recognises stays, and the
// variable that line hid is appended; the copy still decodes to the saved
// state (tests/bootstate_test.go checks it).
func (GrubEnv) Encode(st State) ([]byte, error) {
	if err := st.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, GrubEnvSize)
	b = append(b, grubSignature...)
	for _, kv := range grubValues(st) {
		b = append(b, kv[0]...)
		b = append(b, '=')
		b = append(b, kv[1]...)
		b = append(b, '\n')
	}
	for len(b) < GrubEnvSize {
		b = append(b, '#')
	}
	return b, nil
}

func grubValues(st State) [][2]string {
	tries := strconv.Itoa(st.Tries)
	seq := strconv.FormatUint(uint64(st.Seq), 10)
	return [][2]string{
		{varCommitted, string(st.Committed)},
		{varTrial, string(st.Trial)},
		{varTries, tries},
		{varSeq, seq},
		{varCheck, grubCheck(string(st.Committed), string(st.Trial), tries, seq)},
	}
}

func grubCheck(committed, trial, tries, seq string) string {
	return committed + ":" + trial + ":" + tries + ":" + seq
}

// grubCheckPattern is the regular expression grub.cfg matches bh_check
// against (POSIX ERE, GRUB's regexp command). It fixes the shape of each
// field: together with the equality test it forces each of the four
// variables into its domain, because the check has exactly three colons.
const grubCheckPattern = `^(a|b):(none|a|b):[0-9]:(0|[1-9][0-9]{0,9})$`

var grubCheckRE = regexp.MustCompile(grubCheckPattern)

// Decode implements Codec.
func (GrubEnv) Decode(b []byte) (State, error) {
	if len(b) != GrubEnvSize {
		return State{}, invalid("grub env: %d bytes, want %d", len(b), GrubEnvSize)
	}
	vals, err := grubLoadEnv(b, grubVars)
	if err != nil {
		return State{}, err
	}
	for _, name := range grubVars {
		if _, ok := vals[name]; !ok {
			return State{}, invalid("grub env: %s missing", name)
		}
	}
	check := vals[varCheck]
	if !grubCheckRE.MatchString(check) {
		return State{}, invalid("grub env: bh_check %q is malformed", check)
	}
	if want := grubCheck(vals[varCommitted], vals[varTrial], vals[varTries], vals[varSeq]); check != want {
		return State{}, invalid("grub env: bh_check %q does not match the values %q", check, want)
	}
	f := strings.Split(check, ":")
	tries, _ := strconv.Atoi(f[2])
	// The pattern allows ten digits; grub.cfg compares with -le against
	// MaxSeq (a 64-bit long in x86_64 GRUB), and so does this.
	seq, err := strconv.ParseUint(f[3], 10, 64)
	if err != nil || seq > MaxSeq {
		return State{}, invalid("grub env: bh_seq %s: larger than %d", f[3], MaxSeq)
	}
	st := State{Committed: Slot(f[0]), Trial: Slot(f[1]), Tries: tries, Seq: uint32(seq)}
	if err := st.Validate(); err != nil {
		return State{}, invalid("grub env: %v", err)
	}
	return st, nil
}

// grubLoadEnv mirrors `load_env -f FILE var...` (grub-core/commands/loadenv.c
// and grub_envblk_iterate in grub-core/lib/envblk.c): the block must start
// with the signature; from there a line starting with '#' is skipped; any
// other line's name runs to the next '=' (even across a newline), its value
// to the next unescaped newline with backslash escaping one byte; a name
// without '=' or a value without a newline before the end stops the scan
// (variables already read stay set). Every assignment of a whitelisted name
// is applied in order, so the LAST occurrence decides.
func grubLoadEnv(b []byte, want []string) (map[string]string, error) {
	// grub_envblk_open wants size >= sizeof(GRUB_ENVBLK_SIGNATURE), which
	// counts the terminating NUL.
	if len(b) < len(grubSignature)+1 || !bytes.HasPrefix(b, []byte(grubSignature)) {
		return nil, invalid("grub env: no %q signature", strings.TrimSpace(grubSignature))
	}
	listed := map[string]bool{}
	for _, w := range want {
		listed[w] = true
	}
	vals := map[string]string{}
	p, end := len(grubSignature), len(b)
	for p < end {
		if b[p] != '#' {
			nameStart := p
			for p < end && b[p] != '=' {
				p++
			}
			if p == end {
				return vals, nil
			}
			nameEnd := p
			p++
			valueStart := p
			for p < end {
				if b[p] == '\n' {
					break
				} else if b[p] == '\\' {
					p += 2
				} else {
					p++
				}
			}
			if p >= end {
				return vals, nil
			}
			var v []byte
			for q := valueStart; b[q] != '\n'; q++ {
				if b[q] == '\\' {
					q++
				}
				v = append(v, b[q])
			}
			// GRUB copies name and value into C strings, so an embedded
			// NUL cuts either short.
			name := cString(b[nameStart:nameEnd])
			if listed[name] {
				vals[name] = cString(v)
			}
		}
		p = grubNextLine(b, p)
	}
	return vals, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// grubNextLine is envblk.c's find_next_line.
func grubNextLine(b []byte, p int) int {
	for p < len(b) {
		if b[p] == '\\' {
			p += 2
		} else if b[p] == '\n' {
			break
		} else {
			p++
		}
	}
	return p + 1
}
