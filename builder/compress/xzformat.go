package compress

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// The .xz container (https://tukaani.org/xz/xz-file-format.txt) is a stream
// header, independent blocks, an index of the blocks' sizes and a footer.
// XZ compresses each 16 MiB chunk of the image into one block and splices the
// blocks into a single stream itself, which is what lets it skip the encoder
// for chunks that are all zeros (most of a sparse disk image) by reusing one
// precomputed block. This file reads and writes that container.

var (
	xzHeaderMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	xzFooterMagic = []byte{'Y', 'Z'}
)

// xzCheckCRC64 is the stream flag for CRC64 block checks, xz's default; every
// encoder is asked for it so that all spliced blocks agree with the header.
const xzCheckCRC64 = 0x04

// xzBlock is one complete block: header, compressed data, padding and check.
type xzBlock struct {
	data         []byte
	unpadded     int64 // header + compressed data + check, without padding
	uncompressed int64
}

func xzStreamFlags(check byte) []byte { return []byte{0x00, check} }

func xzStreamHeader(check byte) []byte {
	h := append(append([]byte{}, xzHeaderMagic...), xzStreamFlags(check)...)
	return binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(xzStreamFlags(check)))
}

func putVLI(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func readVLI(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 9; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if i > 0 && b[i] == 0 {
				return 0, 0, errors.New("non-minimal integer encoding")
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("truncated or oversized integer")
}

// xzIndexAndFooter returns the index for blocks followed by the stream footer.
func xzIndexAndFooter(blocks []xzBlock, check byte) []byte {
	idx := []byte{0x00}
	idx = putVLI(idx, uint64(len(blocks)))
	for _, b := range blocks {
		idx = putVLI(idx, uint64(b.unpadded))
		idx = putVLI(idx, uint64(b.uncompressed))
	}
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))

	var tail []byte
	tail = binary.LittleEndian.AppendUint32(tail, uint32(len(idx)/4-1))
	tail = append(tail, xzStreamFlags(check)...)
	footer := binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(tail))
	footer = append(append(footer, tail...), xzFooterMagic...)
	return append(idx, footer...)
}

// xzSingleBlock extracts the only block of a complete one-block .xz stream,
// as an encoder writes it for one chunk, after checking the container's
// magic numbers, CRCs and the stream's check type.
func xzSingleBlock(stream []byte, check byte) (xzBlock, error) {
	if len(stream) < 24 || !bytes.Equal(stream[:6], xzHeaderMagic) || !bytes.Equal(stream[len(stream)-2:], xzFooterMagic) {
		return xzBlock{}, errors.New("not an .xz stream")
	}
	if !bytes.Equal(stream[6:8], xzStreamFlags(check)) || binary.LittleEndian.Uint32(stream[8:12]) != crc32.ChecksumIEEE(stream[6:8]) {
		return xzBlock{}, fmt.Errorf("stream flags %x, want CRC64 checks (%x)", stream[6:8], xzStreamFlags(check))
	}
	footer := stream[len(stream)-12:]
	if binary.LittleEndian.Uint32(footer[:4]) != crc32.ChecksumIEEE(footer[4:10]) || !bytes.Equal(footer[8:10], stream[6:8]) {
		return xzBlock{}, errors.New("corrupt stream footer")
	}
	idxLen := (int(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
	idxStart := len(stream) - 12 - idxLen
	if idxStart < 12 {
		return xzBlock{}, errors.New("index larger than the stream")
	}
	idx := stream[idxStart : len(stream)-12]
	if idx[0] != 0 || binary.LittleEndian.Uint32(idx[len(idx)-4:]) != crc32.ChecksumIEEE(idx[:len(idx)-4]) {
		return xzBlock{}, errors.New("corrupt index")
	}
	p := idx[1 : len(idx)-4]
	count, n, err := readVLI(p)
	if err != nil || count != 1 {
		return xzBlock{}, fmt.Errorf("index lists %d blocks, want exactly 1 (err %v)", count, err)
	}
	p = p[n:]
	unpadded, n, err := readVLI(p)
	if err != nil {
		return xzBlock{}, fmt.Errorf("index: %w", err)
	}
	p = p[n:]
	uncompressed, _, err := readVLI(p)
	if err != nil {
		return xzBlock{}, fmt.Errorf("index: %w", err)
	}
	padded := (int(unpadded) + 3) &^ 3
	if 12+padded != idxStart {
		return xzBlock{}, fmt.Errorf("block of %d bytes does not fill the %d bytes before the index", padded, idxStart-12)
	}
	return xzBlock{data: stream[12:idxStart], unpadded: int64(unpadded), uncompressed: int64(uncompressed)}, nil
}
