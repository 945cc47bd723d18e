package compress

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestTmpBig(t *testing.T) {
	src := os.Getenv("BIG")
	if src == "" {
		t.Skip()
	}
	start := time.Now()
	if err := XZ(context.Background(), src, src+".out.xz", nil); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(src + ".out.xz")
	t.Logf("took %v, %d bytes", time.Since(start), st.Size())
}
