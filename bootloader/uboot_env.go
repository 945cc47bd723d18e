package bootloader

import (
	"encoding/binary"
	"hash/crc32"
	"regexp"
	"sort"
	"strconv"
)

// UBootEnvSize is the size of one U-Boot boot-state copy: eight 512-byte
// sectors, read by the boot script with `${devtype} read ${addr} <lba> 8` and
// checked with `env import -c ${addr} 0x1000`.
const UBootEnvSize = 4096

// UBootEnv is the U-Boot codec: a binary environment block exactly as
// `env export -c -s 0x1000` writes it and `env import -c` reads it (U-Boot
// cmd/nvedit.c): a little-endian CRC32 (IEEE, zlib's crc32(0, ...)) of bytes
// 4..4095, then `name=value\0` entries, an empty entry, and zero padding.
//
// There is no flags byte after the CRC: env_t only has one when
// CONFIG_SYS_REDUNDAND_ENVIRONMENT is set, which Debian's rpi and qemu U-Boot
// builds do not set (the exported block was inspected under QEMU).
//
// Entries are written in the order U-Boot's hexport_r writes them (sorted by
// name), so a copy that U-Boot saved and one that Go saved for the same state
// are byte-identical. seq and tries are hex without 0x because setexpr only
// does hex arithmetic and prints its result with "%lx" (env_set_hex), and
// itest parses its operands as hex.
type UBootEnv struct{}

// Name implements Codec.
func (UBootEnv) Name() string { return "uboot" }

// Size implements Codec.
func (UBootEnv) Size() int { return UBootEnvSize }

// uBootVars is the whitelist the script passes to `env import -c`, in the
// order hexport_r exports them (strcmp order).
var uBootVars = []string{varCommitted, varSeq, varTrial, varTries}

func init() {
	if !sort.StringsAreSorted(uBootVars) {
		panic("bootloader: uBootVars must be in hexport_r (sorted) order")
	}
}

// Encode implements Codec.
func (UBootEnv) Encode(st State) ([]byte, error) {
	if err := st.Validate(); err != nil {
		return nil, err
	}
	vals := map[string]string{
		varCommitted: string(st.Committed),
		varTrial:     string(st.Trial),
		varTries:     strconv.FormatUint(uint64(st.Tries), 16),
		varSeq:       strconv.FormatUint(uint64(st.Seq), 16),
	}
	b := make([]byte, UBootEnvSize)
	p := b[4:4]
	for _, name := range uBootVars {
		p = append(p, name...)
		p = append(p, '=')
		p = append(p, vals[name]...)
		p = append(p, 0)
	}
	// The remaining bytes are already zero: the terminating empty entry and
	// the padding that hexport_r leaves when given a fixed size (-s).
	binary.LittleEndian.PutUint32(b, crc32.ChecksumIEEE(b[4:]))
	return b, nil
}

var (
	uBootTriesRE = regexp.MustCompile(`^[0-9]$`)
	uBootSeqRE   = regexp.MustCompile(`^(0|[1-9a-f][0-9a-f]{0,7})$`)
)

// Decode implements Codec.
func (UBootEnv) Decode(b []byte) (State, error) {
	if len(b) != UBootEnvSize {
		return State{}, invalid("uboot env: %d bytes, want %d", len(b), UBootEnvSize)
	}
	stored := binary.LittleEndian.Uint32(b)
	if sum := crc32.ChecksumIEEE(b[4:]); sum != stored {
		return State{}, invalid("uboot env: crc32 0x%08x does not match stored 0x%08x", sum, stored)
	}
	vals, err := himport(b[4:], uBootVars)
	if err != nil {
		return State{}, err
	}
	for _, name := range uBootVars {
		if _, ok := vals[name]; !ok {
			return State{}, invalid("uboot env: %s missing", name)
		}
	}
	if !uBootTriesRE.MatchString(vals[varTries]) {
		return State{}, invalid("uboot env: bh_tries %q: want one digit", vals[varTries])
	}
	if !uBootSeqRE.MatchString(vals[varSeq]) {
		return State{}, invalid("uboot env: bh_seq %q: want hex without leading zeros", vals[varSeq])
	}
	tries, _ := strconv.ParseUint(vals[varTries], 16, 8)
	seq, _ := strconv.ParseUint(vals[varSeq], 16, 32)
	st := State{
		Committed: Slot(vals[varCommitted]),
		Trial:     Slot(vals[varTrial]),
		Tries:     int(tries),
		Seq:       uint32(seq),
	}
	if err := st.Validate(); err != nil {
		return State{}, invalid("uboot env: %v", err)
	}
	return st, nil
}

// himport mirrors U-Boot's himport_r (lib/hashtable.c) for a binary block
// (separator '\0') imported with a variable list, as `env import -c addr size
// var...` does: leading blanks are skipped, '#' starts a comment, "name" and
// "name=" entries delete the variable, backslash escapes the next byte, an
// entry with an empty name fails the whole import, and parsing stops at the
// first empty entry or the end of the block. With a variable list U-Boot
// drops each listed name from the list the first time it is seen
// (drop_var_from_set), so the FIRST occurrence of a name decides and later
// ones are ignored. It returns the listed variables that end up set.
func himport(data []byte, want []string) (map[string]string, error) {
	// himport_r copies the block and appends a NUL, so reads one past the
	// end see 0.
	d := make([]byte, len(data)+1)
	copy(d, data)
	at := func(i int) byte {
		if i < len(d) {
			return d[i]
		}
		return 0
	}
	pending := make(map[string]bool, len(want))
	for _, w := range want {
		pending[w] = true
	}
	take := func(name string) bool {
		if pending[name] {
			delete(pending, name)
			return true
		}
		return false
	}
	vals := map[string]string{}
	size := len(data)
	i := 0
	for {
		for at(i) == ' ' || at(i) == '\t' {
			i++
		}
		if at(i) == '#' {
			for at(i) != 0 {
				i++
			}
			i++
		} else {
			start := i
			for at(i) != '=' && at(i) != 0 {
				i++
			}
			name := string(d[start:i])
			if at(i) == 0 || at(i+1) == 0 {
				// "name" or "name=": a delete candidate.
				if at(i) == '=' {
					i++
				}
				i++
				if take(name) {
					delete(vals, name)
				}
			} else {
				i++ // '='
				var v []byte
				for at(i) != 0 {
					if at(i) == '\\' && at(i+1) != 0 {
						i++
					}
					v = append(v, at(i))
					i++
				}
				i++
				if name == "" {
					return nil, invalid("uboot env: entry with an empty name (U-Boot rejects the whole import)")
				}
				if take(name) {
					vals[name] = string(v)
				}
			}
		}
		if !(i < size && at(i) != 0) {
			break
		}
	}
	return vals, nil
}
