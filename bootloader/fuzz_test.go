package bootloader

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// Go's fuzzing engine slows to a crawl on inputs of several KiB, so the
// fuzz targets take the meaningful prefix of a copy and pad it the way the
// format pads (zeros for U-Boot, '#' for GRUB); trim undoes the padding for
// the seeds.
func trim(c Codec, b []byte) []byte {
	pad := byte(0)
	if c.Name() == "grub" {
		pad = '#'
	}
	return bytes.TrimRight(b, string(pad))
}

func pad(c Codec, b []byte) []byte {
	out := make([]byte, c.Size())
	n := copy(out, b)
	if c.Name() == "grub" {
		for i := n; i < len(out); i++ {
			out[i] = '#'
		}
	}
	return out
}

func fuzzSeeds(f *testing.F, c Codec) {
	for _, st := range corruptionStates {
		b, err := c.Encode(st)
		if err != nil {
			f.Fatal(err)
		}
		b = trim(c, b)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte(grubSignature + "bh_committed=a\nbh_check=a:none:0:1\n"))
}

// checkDecoded holds for any accepted copy: the state is valid and encodes
// to a copy that decodes to the same state.
func checkDecoded(t *testing.T, c Codec, st State) {
	if err := st.Validate(); err != nil {
		t.Fatalf("%s accepted an invalid state %+v: %v", c.Name(), st, err)
	}
	again, err := c.Encode(st)
	if err != nil {
		t.Fatalf("%s: re-encoding %v: %v", c.Name(), st, err)
	}
	if st2, err := c.Decode(again); err != nil || st2 != st {
		t.Fatalf("%s: %v re-decodes as %v, %v", c.Name(), st, st2, err)
	}
}

func FuzzUBootDecode(f *testing.F) {
	fuzzSeeds(f, UBootEnv{})
	f.Fuzz(func(t *testing.T, in []byte) {
		b := pad(UBootEnv{}, in)
		// Half of the inputs get a correct CRC, so the fuzzer reaches the
		// parser instead of stopping at the checksum.
		if b[4]&1 == 1 {
			binary.LittleEndian.PutUint32(b, crc32.ChecksumIEEE(b[4:]))
		}
		st, err := UBootEnv{}.Decode(b)
		if err != nil {
			return
		}
		if len(b) != UBootEnvSize || binary.LittleEndian.Uint32(b) != crc32.ChecksumIEEE(b[4:]) {
			t.Fatalf("accepted a block without a valid CRC")
		}
		checkDecoded(t, UBootEnv{}, st)
	})
}

func FuzzGrubDecode(f *testing.F) {
	fuzzSeeds(f, GrubEnv{})
	f.Fuzz(func(t *testing.T, in []byte) {
		b := pad(GrubEnv{}, in)
		st, err := GrubEnv{}.Decode(b)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, []byte(grubSignature)) {
			t.Fatalf("accepted a block without the GRUB signature")
		}
		checkDecoded(t, GrubEnv{}, st)
	})
}

// FuzzStore runs one operation on a device whose two copies hold arbitrary
// bytes, optionally tearing the write, and checks the Store's promises:
// refused operations write nothing; an operation writes once, to the copy
// that did not hold the current state, with seq = current + 1; and after a
// torn write Read returns the state before or the state written.
func FuzzStore(f *testing.F) {
	for _, c := range codecs {
		a, b, _ := Initial(c, SlotA)
		isGrub := c.Name() == "grub"
		a, b = trim(c, a), trim(c, b)
		for op := byte(0); op < 4; op++ {
			f.Add(isGrub, a, b, op, byte(1), uint16(0xffff))
			f.Add(isGrub, b, a, op, byte(0), uint16(100))
		}
		f.Add(isGrub, []byte{}, []byte{}, byte(0), byte(2), uint16(7))
	}
	f.Fuzz(func(t *testing.T, isGrub bool, copyA, copyB []byte, op, arg byte, tear uint16) {
		var c Codec = UBootEnv{}
		if isGrub {
			c = GrubEnv{}
		}
		dev := newMemDevice(c, pad(c, copyA), pad(c, copyB))
		tornDev := dev.clone()
		before, info, err := NewStore(dev, c, offA, offB).Read()
		if err != nil {
			t.Fatal(err)
		}
		targetOff, otherOff := int64(offA), int64(offB)
		if info.Target == CopyB {
			targetOff, otherOff = offB, offA
		}
		untouched := append([]byte(nil), dev.b[otherOff:otherOff+int64(c.Size())]...)
		targetOld := append([]byte(nil), dev.b[targetOff:targetOff+int64(c.Size())]...)

		apply := func(s *Store) (State, error) {
			switch op % 4 {
			case 0:
				return s.StartTrial(Slot([]string{"a", "b", "none"}[arg%3]), int(arg%11))
			case 1:
				return s.Commit()
			case 2:
				return s.AbandonTrial()
			}
			next := State{Committed: Slot([]string{"a", "b"}[arg%2]), Trial: SlotNone}
			if err := s.Write(next); err != nil {
				return State{}, err
			}
			next.Seq = before.Seq + 1
			return next, nil
		}
		want, err := apply(NewStore(dev, c, offA, offB))
		if err != nil {
			if len(dev.writes) != 0 {
				t.Fatalf("refused operation (%v) wrote", err)
			}
			return
		}
		if len(dev.writes) != 1 || dev.writes[0] != targetOff {
			t.Fatalf("writes at %v, want one at the target copy %d", dev.writes, targetOff)
		}
		if !bytes.Equal(dev.b[otherOff:otherOff+int64(c.Size())], untouched) {
			t.Fatal("the copy holding the current state changed")
		}
		after, _, err := NewStore(dev, c, offA, offB).Read()
		if err != nil {
			t.Fatal(err)
		}
		if after != want || want.Seq != before.Seq+1 {
			t.Fatalf("after the write Read = %v, want %v (before %v)", after, want, before)
		}

		// The same operation again with power cut after tear bytes.
		if int(tear) >= c.Size() {
			return
		}
		tornDev.tearAt = int(tear)
		if _, err := apply(NewStore(tornDev, c, offA, offB)); err == nil {
			t.Fatal("a torn write reported success")
		}
		got, _, err := NewStore(tornDev, c, offA, offB).Read()
		if err != nil {
			t.Fatal(err)
		}
		if got == before || got == want {
			return
		}
		// One exception, GRUB only: when the copy being written is a
		// damaged copy of a state (outside corruption, e.g. of the constant
		// signature line), the new bytes before the tear can repair the
		// damage and bring that fully written state back. The U-Boot block
		// starts with its CRC, which differs between states, so it cannot.
		// The state that comes back is never older than the one it replaces
		// (see GrubEnv).
		damaged := bytes.Contains(targetOld, []byte(varCheck+"="))
		if c.Name() == "grub" && damaged && got.Seq >= before.Seq {
			return
		}
		t.Fatalf("torn after %d bytes: Read = %v, want %v or %v", tear, got, before, want)
	})
}
