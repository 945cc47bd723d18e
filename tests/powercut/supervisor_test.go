package powercut

import (
	"context"
	"testing"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/supervisor/slot"
)

func TestParseUpdateStateIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"no file", nil, true},
		{"idle", []byte(`{"version":1,"phase":"idle"}`), true},
		{"a busy phase with its update", []byte(`{"version":1,"phase":"trial","update":{"id":"x","target":"b"}}`), true},
		{"a torn file", []byte(`{"version":1,"pha`), false},
		{"an unknown phase", []byte(`{"version":1,"phase":"flashing"}`), false},
		{"a busy phase without an update", []byte(`{"version":1,"phase":"verifying"}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseUpdateState(tc.data); (err == nil) != tc.ok {
				t.Errorf("ParseUpdateState: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestResumeOfATrialBootCommits runs the supervisor's Resume offline on a
// trial boot whose state file says trial: it must commit, and the judge
// must be content.
func TestResumeOfATrialBootCommits(t *testing.T) {
	state := []byte(`{"version":1,"phase":"trial","update":{"id":"u1","source":{"kind":"http","location":"http://x/b"},"from_slot":"a","target":"b","boot_id":"old","trial_starts":1}}`)
	bs := bootloader.State{Committed: bootloader.SlotA, Trial: bootloader.SlotB, Tries: 2, Seq: 3}
	rr, err := simulateResume(context.Background(), resumeInput{
		state: state, boot: bs, slot: bootloader.SlotB, trial: true, board: "x",
		openSlot: func(bootloader.Slot) (slot.Device, error) { t.Error("Resume opened a slot"); return nil, nil },
	}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if rr.After != "committed" || rr.BootState.Committed != bootloader.SlotB || rr.Rebooted {
		t.Fatalf("Resume: %+v", rr)
	}
	r := &Result{Boot: bootloader.SlotB, Trial: true}
	judgeResume(r, rr, bs, func(bootloader.Slot) bool { return true })
	if r.Failed() {
		t.Errorf("judge: %+v", r.Findings)
	}
}
