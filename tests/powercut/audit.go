package powercut

import (
	"fmt"
	"regexp"
	"sort"

	"github.com/bulkhead-os/bulkhead/bootloader"
	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// AuditFinding is a write that breaks an invariant of the write sequence.
type AuditFinding struct {
	Entry  int    `json:"entry"`
	Check  string `json:"check"`
	Detail string `json:"detail"`
}

// Audit is what the whole log shows, write by write.
type Audit struct {
	// Writes counts data-carrying entries by the region they touch;
	// Bytes the bytes.
	Writes map[string]int   `json:"writes"`
	Bytes  map[string]int64 `json:"bytes"`
	// Flushes and Discards count those entries.
	Flushes, Discards int
	// BootStateWrites lists the boot-state changes in log order.
	BootStateWrites []string `json:"boot_state_writes"`
	Findings        []AuditFinding
}

var readySlotRE = regexp.MustCompile(`bulkhead: ready version=\S+ slot=([ab]) `)

// Audit walks the log in order, keeping the disk after every write, and
// checks the invariants that are properties of the write sequence:
//
//   - invariant 1: no write touches the slot the boot state names as
//     committed, nor the slot the last ready line says is running;
//   - invariant 2: every write to a boot-state copy touches that copy only,
//     and the other copy holds a valid state when it happens (so a torn
//     write leaves it);
//   - invariant 3: no boot-state write leaves "no trial" where there was
//     "no trial" (the bootloader writes only while a trial is pending,
//     Linux only to start, end or commit one);
//   - the boot partition is written only in the boot-state copies.
//
// It uses the Checker's layout; call it before Check (it does not move the
// Checker's base).
func (c *Checker) Audit() (*Audit, error) {
	a := &Audit{Writes: map[string]int{}, Bytes: map[string]int64{}}
	l := c.cfg.Log
	ss := uint64(c.ss)
	base := &overlay{}
	v := &View{log: l, base: c.cfg.Base, size: c.cfg.Size, layers: []*overlay{base}}
	store := bootloader.NewStore(readOnlyDevice{v}, c.codec, c.cfg.Bootstate.OffA, c.cfg.Bootstate.OffB)
	st, info, err := store.Read()
	if err != nil {
		return nil, err
	}
	type region struct {
		name     string
		from, to uint64
	}
	bsA := region{"boot-state copy a", uint64(c.cfg.Bootstate.OffA) / ss, uint64(c.cfg.Bootstate.OffA+int64(c.cfg.Bootstate.Size)+int64(ss)-1) / ss}
	bsB := region{"boot-state copy b", uint64(c.cfg.Bootstate.OffB) / ss, uint64(c.cfg.Bootstate.OffB+int64(c.cfg.Bootstate.Size)+int64(ss)-1) / ss}
	pr := func(name string, n int) region {
		p := c.parts[n]
		return region{name, uint64(p.Start) / ss, uint64(p.End()) / ss}
	}
	regions := []region{bsA, bsB, pr("boot partition", partBoot), pr("slot a", partA), pr("slot b", partB), pr("data", partData)}
	var readies []Marker
	for _, m := range c.cfg.Markers {
		if readySlotRE.MatchString(m.Line) {
			readies = append(readies, m)
		}
	}
	running := func(e dmlog.Entry) bootloader.Slot {
		i := sort.Search(len(readies), func(i int) bool { return readies[i].Offset > e.Offset })
		if i == 0 {
			return bootloader.SlotNone
		}
		return bootloader.Slot(readySlotRE.FindStringSubmatch(readies[i-1].Line)[1])
	}
	find := func(e dmlog.Entry, format string, args ...any) {
		a.Findings = append(a.Findings, AuditFinding{Entry: e.Index, Check: "audit", Detail: fmt.Sprintf("%s: ", e) + fmt.Sprintf(format, args...)})
	}
	for _, e := range l.Entries {
		switch {
		case e.IsDiscard():
			a.Discards++
		case e.IsFlush() && !e.IsWrite():
			a.Flushes++
		}
		if !e.IsWrite() {
			continue
		}
		from, to := e.Sector, e.Sector+e.Sectors
		touched := map[string]bool{}
		other := true
		for _, r := range regions {
			if from < r.to && r.from < to {
				touched[r.name] = true
				other = false
			}
		}
		if from < uint64(c.parts[partBoot].Start)/ss && !touched[bsA.name] && !touched[bsB.name] {
			touched["partition table"] = true
			other = false
		}
		if other {
			touched["elsewhere"] = true
		}
		for name := range touched {
			a.Writes[name]++
			a.Bytes[name] += int64(e.Sectors * ss)
		}
		// Invariant 1.
		for _, s := range []bootloader.Slot{bootloader.SlotA, bootloader.SlotB} {
			if !touched["slot "+string(s)] {
				continue
			}
			if s == st.Committed {
				find(e, "writes slot %s while the boot state (%s) names it committed (invariant 1)", s, st)
			}
			if s == running(e) {
				find(e, "writes slot %s, the running root (invariant 1)", s)
			}
		}
		bootStateWrite := touched[bsA.name] || touched[bsB.name]
		if touched[bsA.name] && touched[bsB.name] {
			find(e, "writes both boot-state copies at once (invariant 2)")
		}
		if touched["boot partition"] && !bootStateWrite {
			find(e, "writes the boot partition outside the boot-state copies")
		}
		if bootStateWrite {
			// The copy not written must hold a valid state.
			other := 1
			if touched[bsB.name] {
				other = 0
			}
			if !info.Copies[other].Valid {
				find(e, "writes boot-state copy %s while copy %s is not valid (%s): a torn write would leave none (invariant 2)",
					map[int]string{0: "b", 1: "a"}[other], info.Copies[other].Name, info.Copies[other].Error)
			}
		}
		before := st
		base.apply(e, e.Sectors)
		if bootStateWrite {
			st, info, err = store.Read()
			if err != nil {
				return nil, err
			}
			a.BootStateWrites = append(a.BootStateWrites, fmt.Sprintf("#%d: %s -> %s (from copy %s)", e.Index, before, st, info.Source))
			if before.Trial == bootloader.SlotNone && st.Trial == bootloader.SlotNone && before != st {
				find(e, "changes the boot state from %s to %s without a trial on either side (invariant 3)", before, st)
			}
		}
	}
	return a, nil
}
