package updater

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCorruptStateFileIsSetAsideNotFatal(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, content := range []string{"{\"phase\": \"downl", `{"phase":"trial"}`} {
		os.WriteFile(p, []byte(content), 0o600)
		st, err := FileStore{Path: p}.Load()
		if err != nil {
			t.Fatal(err)
		}
		if st.Phase != PhaseIdle || len(st.History) != 1 || !strings.Contains(st.History[0].Reason, ".corrupt") {
			t.Fatalf("%q loaded as %+v", content, st)
		}
		if _, err := os.Stat(p + ".corrupt"); err != nil {
			t.Fatalf("the corrupt file was not kept: %v", err)
		}
	}
}

func TestMissingStateFileIsIdle(t *testing.T) {
	st, err := FileStore{Path: filepath.Join(t.TempDir(), "state.json")}.Load()
	if err != nil || st.Phase != PhaseIdle {
		t.Fatalf("%+v %v", st, err)
	}
}
