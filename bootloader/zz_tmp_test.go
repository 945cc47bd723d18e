package bootloader

import (
	"encoding/hex"
	"os"
	"testing"
	"time"
)

func FuzzZZ(f *testing.F) {
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, in []byte) {
		b := append([]byte(nil), in...)
		done := make(chan bool)
		go func() {
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				os.WriteFile("/tmp/bh/hang.hex", []byte(hex.EncodeToString(b)), 0o644)
				panic("hang")
			}
		}()
		if len(b) == UBootEnvSize && b[4]&1 == 1 {
			putCRC(b)
		}
		UBootEnv{}.Decode(b)
		close(done)
	})
}
