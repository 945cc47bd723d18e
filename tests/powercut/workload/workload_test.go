package workload

import (
	"errors"
	"strings"
	"testing"
)

func TestRecordsRoundTripAndTornRecordsAreRejected(t *testing.T) {
	r := Record(12345)
	if n, err := ParseRecord(r); err != nil || n != 12345 {
		t.Fatalf("ParseRecord = %d, %v", n, err)
	}
	for i := range r {
		b := append([]byte(nil), r...)
		b[i] ^= 0x40
		if _, err := ParseRecord(b); !errors.Is(err, ErrBadRecord) {
			t.Errorf("a record with byte %d changed parses: %v", i, err)
		}
	}
	torn := append(append([]byte(nil), r[:16]...), make([]byte, 16)...)
	if _, err := ParseRecord(torn); err == nil {
		t.Error("a torn record parses")
	}
}

func TestJournalValidCountsRecordsInOrder(t *testing.T) {
	var j []byte
	for n := uint64(1); n <= 5; n++ {
		j = append(j, Record(n)...)
	}
	if got := JournalValid(j); got != 5 {
		t.Errorf("5 records: %d valid", got)
	}
	if got := JournalValid(append(j, Record(7)...)); got != 5 {
		t.Errorf("a gap: %d valid, want 5", got)
	}
	if got := JournalValid(append(j, make([]byte, 40)...)); got != 5 {
		t.Errorf("a zero tail: %d valid, want 5", got)
	}
}

func TestCheckRequiresEverySyncedRecord(t *testing.T) {
	files := func(from, to uint64) map[string]string {
		m := map[string]string{}
		for n := from; n <= to; n += FileEvery {
			m[FileName(n)] = ""
		}
		return m
	}
	last := uint64(FileEvery * (FileWindow + 10))
	for _, tc := range []struct {
		name   string
		st     State
		synced uint64
		bad    string
	}{
		{"everything there", State{Journal: 40, Counter: 40, Files: files(8, 40)}, 40, ""},
		{"more than synced", State{Journal: 45, Counter: 44, Files: files(8, 40)}, 40, ""},
		{"nothing synced yet", State{Files: map[string]string{}}, 0, ""},
		{"a lost journal record", State{Journal: 39, Counter: 39, Files: files(8, 40)}, 40, "journal holds 39"},
		{"a lost counter", State{Journal: 40, Counter: 39, Files: files(8, 40)}, 40, "counter is 39"},
		{"a counter ahead of the journal", State{Journal: 40, Counter: 41, Files: files(8, 40)}, 40, "ahead of the journal"},
		{"a lost file", State{Journal: 40, Counter: 40, Files: files(16, 40)}, 40, "00000008 is missing"},
		{"a bad file", State{Journal: 40, Counter: 40, Files: map[string]string{FileName(8): "", FileName(16): "", FileName(24): "", FileName(32): "", FileName(40): "truncated"}}, 40, "truncated"},
		{"old files may be deleted", State{Journal: last, Counter: last, Files: files(last-FileEvery*(FileWindow-1), last)}, last, ""},
		{"a file of the window is not", State{Journal: last, Counter: last, Files: files(last-FileEvery*(FileWindow-2), last)}, last, "missing"},
		// Record last-1 was reported; record last deletes the file
		// FileWindow files back and may be on disk.
		{"the next record's delete may be on disk", State{Journal: last, Counter: last, Files: files(last-FileEvery*(FileWindow-1), last)}, last - 1, ""},
		{"but not the one after", State{Journal: last, Counter: last, Files: files(last-FileEvery*(FileWindow-2), last)}, last - 1, "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Join(tc.st.Check(tc.synced), "; ")
			if tc.bad == "" && bad != "" || !strings.Contains(bad, tc.bad) {
				t.Errorf("Check(%d) = %q, want %q", tc.synced, bad, tc.bad)
			}
		})
	}
}

func TestCheckFileComparesContent(t *testing.T) {
	if p := CheckFile(FileName(16), FileData(16)); p != "" {
		t.Errorf("good file: %s", p)
	}
	if p := CheckFile(FileName(16), FileData(24)); p == "" {
		t.Error("another record's content passes")
	}
	if p := CheckFile(FileName(16), FileData(16)[:100]); p == "" {
		t.Error("a short file passes")
	}
}

func TestParseSynced(t *testing.T) {
	if n, ok := ParseSynced("workload: synced 77\r"); !ok || n != 77 {
		t.Errorf("ParseSynced = %d %v", n, ok)
	}
	if _, ok := ParseSynced("workload: recovered journal=3"); ok {
		t.Error("a recovered line parses as synced")
	}
}
