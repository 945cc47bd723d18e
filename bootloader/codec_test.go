package bootloader

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var codecs = []Codec{UBootEnv{}, GrubEnv{}}

// sampleStates covers every slot combination, every tries value and the seq
// values where hex and decimal encodings change length.
func sampleStates() []State {
	var out []State
	seqs := []uint32{0, 1, 9, 10, 15, 16, 99, 100, 255, 256, 4095, 4096, 1<<24 - 1, MaxSeq - 1, MaxSeq}
	for _, c := range []Slot{SlotA, SlotB} {
		for _, tr := range []Slot{SlotNone, c.Other()} {
			for tries := 0; tries <= MaxTries; tries++ {
				for _, seq := range seqs {
					out = append(out, State{Committed: c, Trial: tr, Tries: tries, Seq: seq})
				}
			}
		}
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			for _, st := range sampleStates() {
				b, err := c.Encode(st)
				if err != nil {
					t.Fatalf("Encode(%v): %v", st, err)
				}
				if len(b) != c.Size() {
					t.Fatalf("Encode(%v) is %d bytes, want %d", st, len(b), c.Size())
				}
				got, err := c.Decode(b)
				if err != nil {
					t.Fatalf("Decode(Encode(%v)): %v", st, err)
				}
				if got != st {
					t.Fatalf("Decode(Encode(%v)) = %v", st, got)
				}
			}
		})
	}
}

func TestCodecEncodeRejectsInvalidStates(t *testing.T) {
	for _, c := range codecs {
		for _, st := range []State{
			{Committed: SlotA, Trial: SlotA, Tries: 1},
			{Committed: SlotNone, Trial: SlotNone},
			{Committed: SlotA, Trial: SlotB, Tries: 10},
			{Committed: SlotA, Trial: SlotNone, Seq: MaxSeq + 1},
		} {
			if _, err := c.Encode(st); !errors.Is(err, ErrInvalidState) {
				t.Errorf("%s: Encode(%+v) = %v, want ErrInvalidState", c.Name(), st, err)
			}
		}
	}
}

func TestCodecDecodeRejectsBlankAndWrongSize(t *testing.T) {
	for _, c := range codecs {
		for name, b := range map[string][]byte{
			"zeros":      make([]byte, c.Size()),
			"erased":     bytes.Repeat([]byte{0xff}, c.Size()),
			"short":      make([]byte, c.Size()-1),
			"long":       make([]byte, c.Size()+1),
			"nil":        nil,
			"grub blank": []byte(grubSignature + strings.Repeat("#", c.Size()-len(grubSignature))),
		} {
			if _, err := c.Decode(b); !errors.Is(err, ErrInvalidCopy) {
				t.Errorf("%s: Decode(%s) = %v, want ErrInvalidCopy", c.Name(), name, err)
			}
		}
	}
}

// corruptionStates are the states whose every single-byte corruption is
// tried: short and long values, with and without a trial.
var corruptionStates = []State{
	{Committed: SlotA, Trial: SlotNone, Tries: 0, Seq: 1},
	{Committed: SlotB, Trial: SlotA, Tries: 3, Seq: 1234567},
	{Committed: SlotA, Trial: SlotB, Tries: 9, Seq: MaxSeq},
}

// TestUBootEveryByteCorruptionRejected changes every byte of a U-Boot copy
// to every other value: CRC32 detects every error burst of 32 bits or less,
// so each must be rejected.
func TestUBootEveryByteCorruptionRejected(t *testing.T) {
	for _, st := range corruptionStates {
		b, err := UBootEnv{}.Encode(st)
		if err != nil {
			t.Fatal(err)
		}
		for i := range b {
			orig := b[i]
			for v := 0; v < 256; v++ {
				if byte(v) == orig {
					continue
				}
				b[i] = byte(v)
				if got, err := (UBootEnv{}).Decode(b); err == nil {
					t.Fatalf("%v: byte %d = %#02x accepted as %v", st, i, v, got)
				}
			}
			b[i] = orig
		}
	}
}

// TestGrubEveryByteCorruptionDetectedOrHarmless changes every byte of a
// GRUB copy to every other value: the check must reject the copy or the
// copy must still decode to the original state.
func TestGrubEveryByteCorruptionDetectedOrHarmless(t *testing.T) {
	for _, st := range corruptionStates {
		b, err := GrubEnv{}.Encode(st)
		if err != nil {
			t.Fatal(err)
		}
		harmless := 0
		for i := range b {
			orig := b[i]
			for v := 0; v < 256; v++ {
				if byte(v) == orig {
					continue
				}
				b[i] = byte(v)
				got, err := GrubEnv{}.Decode(b)
				if err == nil {
					if got != st {
						t.Fatalf("%v: byte %d = %#02x accepted as a different state %v", st, i, v, got)
					}
					harmless++
				}
			}
			b[i] = orig
		}
		// Almost all of the block is '#' padding, where a change is harmless.
		if harmless == 0 {
			t.Errorf("%v: no corruption was harmless: the padding should be", st)
		}
	}
}

// TestGrubDecodeMirrorsLoadEnv pins the parts of GRUB's parser the decoder
// must copy, because the boot script sees the block through GRUB's eyes.
func TestGrubDecodeMirrorsLoadEnv(t *testing.T) {
	block := func(lines string) []byte {
		b := []byte(grubSignature + lines)
		for len(b) < GrubEnvSize {
			b = append(b, '#')
		}
		return b[:GrubEnvSize]
	}
	for _, tc := range []struct {
		name  string
		lines string
		want  *State
	}{
		{"a complete block decodes", "bh_committed=a\nbh_trial=none\nbh_tries=0\nbh_seq=5\nbh_check=a:none:0:5\n",
			&State{Committed: SlotA, Trial: SlotNone, Seq: 5}},
		{"the order of the lines does not matter", "bh_check=b:a:2:7\nbh_seq=7\nbh_tries=2\nbh_trial=a\nbh_committed=b\n",
			&State{Committed: SlotB, Trial: SlotA, Tries: 2, Seq: 7}},
		{"the last assignment wins", "bh_committed=a\nbh_trial=none\nbh_tries=0\nbh_seq=5\nbh_check=a:none:0:5\nbh_seq=6\nbh_check=a:none:0:6\n",
			&State{Committed: SlotA, Trial: SlotNone, Seq: 6}},
		{"a later stale line breaks the check", "bh_committed=a\nbh_trial=none\nbh_tries=0\nbh_seq=5\nbh_check=a:none:0:5\nbh_seq=4\n", nil},
		{"other variables and comments are ignored", "# note\nfoo=bar\nbh_committed=a\nbh_trial=none\nbh_tries=0\nbh_seq=5\nbh_check=a:none:0:5\n",
			&State{Committed: SlotA, Trial: SlotNone, Seq: 5}},
		{"escapes are undone", "bh_committed=\\a\nbh_trial=none\nbh_tries=0\nbh_seq=5\nbh_check=a:none:0:5\n",
			&State{Committed: SlotA, Trial: SlotNone, Seq: 5}},
		{"a name without '=' runs into the next line", "bh_committed=a\nbh_trial=none\nbh_tries=0\nxx\nbh_seq=5\nbh_check=a:none:0:5\n", nil},
		{"a line without newline at the end stops the scan", "bh_committed=a\nbh_trial=none\nbh_tries=0\nbh_seq=5\nbh_check=a:none:0:5", nil},
		{"a seq with a leading zero is rejected", "bh_committed=a\nbh_trial=none\nbh_tries=0\nbh_seq=05\nbh_check=a:none:0:05\n", nil},
		{"a seq past MaxSeq is rejected", "bh_committed=a\nbh_trial=none\nbh_tries=0\nbh_seq=2147483648\nbh_check=a:none:0:2147483648\n", nil},
		{"a trial of the committed slot is rejected", "bh_committed=a\nbh_trial=a\nbh_tries=1\nbh_seq=5\nbh_check=a:a:1:5\n", nil},
		{"a missing variable is rejected", "bh_committed=a\nbh_trial=none\nbh_seq=5\nbh_check=a:none::5\n", nil},
		{"a colon inside a value cannot fake the check", "bh_committed=a:none\nbh_trial=0\nbh_tries=5\nbh_seq=\nbh_check=a:none:0:5\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GrubEnv{}.Decode(block(tc.lines))
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted as %v", got)
				}
				return
			}
			if err != nil || got != *tc.want {
				t.Fatalf("Decode = %v, %v; want %v", got, err, *tc.want)
			}
		})
	}
}

// TestUBootDecodeMirrorsHimport pins the parts of U-Boot's himport_r the
// decoder copies for CRC-valid blocks.
func TestUBootDecodeMirrorsHimport(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries string
		want    *State
	}{
		{"sorted entries decode", "bh_committed=a\x00bh_seq=1f\x00bh_trial=b\x00bh_tries=3\x00",
			&State{Committed: SlotA, Trial: SlotB, Tries: 3, Seq: 31}},
		{"the first occurrence wins with a variable list", "bh_committed=a\x00bh_seq=1f\x00bh_seq=20\x00bh_trial=b\x00bh_tries=3\x00",
			&State{Committed: SlotA, Trial: SlotB, Tries: 3, Seq: 31}},
		{"an empty value deletes and consumes the name", "bh_committed=a\x00bh_seq=\x00bh_seq=20\x00bh_trial=b\x00bh_tries=3\x00", nil},
		{"leading blanks, comments and other names are skipped", " bh_committed=b\x00#x\x00other=1\x00bh_seq=0\x00bh_trial=none\x00bh_tries=0\x00",
			&State{Committed: SlotB, Trial: SlotNone}},
		{"parsing stops at the first empty entry", "bh_committed=a\x00bh_seq=1\x00\x00bh_trial=none\x00bh_tries=0\x00", nil},
		{"an empty name fails the whole import", "=x\x00bh_committed=a\x00bh_seq=1\x00bh_trial=none\x00bh_tries=0\x00", nil},
		{"uppercase hex is not what setexpr writes", "bh_committed=a\x00bh_seq=1F\x00bh_trial=none\x00bh_tries=0\x00", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := make([]byte, UBootEnvSize)
			copy(b[4:], tc.entries)
			putCRC(b)
			got, err := UBootEnv{}.Decode(b)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted as %v", got)
				}
				return
			}
			if err != nil || got != *tc.want {
				t.Fatalf("Decode = %v, %v; want %v", got, err, *tc.want)
			}
		})
	}
}

func TestInitial(t *testing.T) {
	for _, c := range codecs {
		a, b, err := Initial(c, SlotA)
		if err != nil {
			t.Fatal(err)
		}
		dev := newMemDevice(c, a, b)
		st, info, err := NewStore(dev, c, offA, offB).Read()
		if err != nil {
			t.Fatal(err)
		}
		if want := (State{Committed: SlotA, Trial: SlotNone, Seq: 1}); st != want || info.Source != CopyA || info.Target != CopyB {
			t.Errorf("%s: factory state %v from %s (target %s), want %v from a (target b)", c.Name(), st, info.Source, info.Target, want)
		}
		if !info.Copies[0].Valid || !info.Copies[1].Valid {
			t.Errorf("%s: both factory copies must be valid: %+v", c.Name(), info.Copies)
		}
	}
	if _, _, err := Initial(UBootEnv{}, SlotNone); err == nil {
		t.Error("Initial(SlotNone) succeeded")
	}
}

// TestUBootEnvMatchesMkenvimage compares the encoder with U-Boot's own
// mkenvimage (u-boot-tools), which writes the same format that env import -c
// reads. -p 0 pads with zeros like env export -s does.
func TestUBootEnvMatchesMkenvimage(t *testing.T) {
	tool, err := exec.LookPath("mkenvimage")
	if err != nil {
		t.Skip("mkenvimage not installed (apt-get install u-boot-tools)")
	}
	dir := t.TempDir()
	for i, st := range corruptionStates {
		want, err := UBootEnv{}.Encode(st)
		if err != nil {
			t.Fatal(err)
		}
		in := filepath.Join(dir, "env"+strconv.Itoa(i)+".txt")
		out := filepath.Join(dir, "env"+strconv.Itoa(i)+".bin")
		if err := os.WriteFile(in, []byte(uBootEnvText(want)), 0o644); err != nil {
			t.Fatal(err)
		}
		if msg, err := exec.Command(tool, "-s", "4096", "-p", "0", "-o", out, in).CombinedOutput(); err != nil {
			t.Fatalf("mkenvimage: %v\n%s", err, msg)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v: mkenvimage wrote\n%q\nGo encoded\n%q", st, got[:64], want[:64])
		}
	}
}

// TestGrubEnvMatchesGrubEditenv compares the encoder with grub-editenv
// (grub-common), which uses GRUB's own envblk.c.
func TestGrubEnvMatchesGrubEditenv(t *testing.T) {
	tool, err := exec.LookPath("grub-editenv")
	if err != nil {
		t.Skip("grub-editenv not installed (apt-get install grub-common)")
	}
	dir := t.TempDir()
	for i, st := range corruptionStates {
		want, err := GrubEnv{}.Encode(st)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "state"+strconv.Itoa(i)+".env")
		args := []string{f, "set"}
		for _, kv := range grubValues(st) {
			args = append(args, kv[0]+"="+kv[1])
		}
		for _, a := range [][]string{{f, "create"}, args} {
			if msg, err := exec.Command(tool, a...).CombinedOutput(); err != nil {
				t.Fatalf("grub-editenv %v: %v\n%s", a, err, msg)
			}
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// GRUB 2.06's grub-editenv starts a new block with a comment line
		// warning against other editors; Go leaves it out (Linux is such an
		// editor), which only shifts the lines. Compare without it.
		if rest, ok := bytes.CutPrefix(got[len(grubSignature):], []byte("# WARNING:")); ok {
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				n := len("# WARNING:") + i + 1
				got = append(append([]byte(grubSignature), rest[i+1:]...), bytes.Repeat([]byte("#"), n)...)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v: grub-editenv wrote\n%q\nGo encoded\n%q", st, got[:128], want[:128])
		}
		// And GRUB reading Go's block lists the same variables.
		if msg, err := exec.Command(tool, f, "list").CombinedOutput(); err != nil || !strings.Contains(string(msg), "bh_check="+grubValues(st)[4][1]+"\n") {
			t.Errorf("grub-editenv list: %v\n%s", err, msg)
		}
	}
}

func TestCodecFor(t *testing.T) {
	for _, name := range []string{"uboot", "grub"} {
		c, err := CodecFor(name)
		if err != nil || c.Name() != name {
			t.Errorf("CodecFor(%q) = %v, %v", name, c, err)
		}
	}
	if _, err := CodecFor("efi"); err == nil {
		t.Error(`CodecFor("efi") succeeded`)
	}
}

// uBootEnvText renders the entries of an encoded block as the text that
// mkenvimage reads, for tests and debugging.
func uBootEnvText(b []byte) string {
	data := b[4:]
	if end := bytes.Index(data, []byte{0, 0}); end >= 0 {
		data = data[:end+1]
	}
	return string(bytes.ReplaceAll(data, []byte{0}, []byte{'\n'}))
}
