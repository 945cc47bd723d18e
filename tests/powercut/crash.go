package powercut

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/bulkhead-os/bulkhead/tests/powercut/dmlog"
)

// Kind says how a crash state came about.
type Kind string

// The kinds of crash states.
const (
	// KindPrefix: every write up to the cut reached the medium.
	KindPrefix Kind = "prefix"
	// KindSubset: some of the writes since the last flush reached it,
	// others did not (a disk's volatile cache writes back in any order).
	KindSubset Kind = "subset"
	// KindTorn: the writes up to the cut reached it, the last one only up
	// to a sector boundary.
	KindTorn Kind = "torn"
)

// CrashState is one way the disk may look after a power cut: everything
// up to the last completed flush, plus some of the writes after it.
type CrashState struct {
	Kind Kind
	// Epoch numbers the flush interval the cut fell into, from 0.
	Epoch int
	// Durable entries [0, Durable) reached the medium for certain: the
	// cut came after the flush that ends them.
	Durable int
	// Extra are later writes that reached the medium too, by entry
	// index, in log order.
	Extra []int
	// Torn, unless -1, is a write of which only the first TornSectors
	// sectors reached the medium; it comes after every Extra write.
	Torn        int
	TornSectors uint64
	// Cut is the last entry the state includes (-1: the disk before the
	// first write).
	Cut int
}

// Name identifies the state in reports and fixtures.
func (c CrashState) Name() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s@%d/e%d", c.Kind, c.Cut, c.Epoch)
	if c.Kind == KindSubset {
		b.WriteString("{")
		for i, x := range c.Extra {
			if i > 0 {
				b.WriteString(",")
			}
			if i == 8 {
				fmt.Fprintf(&b, "...%d more", len(c.Extra)-8)
				break
			}
			fmt.Fprint(&b, x)
		}
		b.WriteString("}")
	}
	if c.Torn >= 0 {
		fmt.Fprintf(&b, "/torn#%d:%d", c.Torn, c.TornSectors)
	}
	return b.String()
}

// EnumOptions bound the enumeration where the states explode.
type EnumOptions struct {
	// Exhaustive: every subset of an epoch's unflushed writes is a
	// state when there are at most this many of them (2^n states).
	Exhaustive int
	// Sampled: otherwise, this many random subsets, and as many states
	// that miss one write (up to one per write).
	Sampled int
	// TearAll: writes of at most this many sectors are torn at every
	// sector boundary; longer ones at TearSampled boundaries (the first,
	// the last, and spread between).
	TearAll     uint64
	TearSampled int
	// Focus, if set, names the writes that get all of the above; the
	// others are torn at FocusOff.TearSampled boundaries only, and their
	// epochs (when no focused write is in them) get FocusOff's subsets.
	// The power-cut tests focus on everything but the data partition,
	// whose writes are ten thousand small ext4 blocks.
	Focus    func(dmlog.Entry) bool
	FocusOff struct {
		Exhaustive, Sampled, TearSampled int
	}
	// Seed makes the sampling repeatable.
	Seed uint64
}

// FullEnum is the enumeration of `make torture`: every subset of up to 8
// unflushed writes (32 random ones and the 32 "all but one" beyond),
// every 512-byte boundary of writes up to 4 KiB (an ext4 block, a U-Boot
// boot-state copy), 16 boundaries of longer writes; for the writes out of
// Focus (set by the caller), all subsets of up to 2 writes or 2 random
// ones, and 2 boundaries (only the first sector, all but the last).
var FullEnum = EnumOptions{Exhaustive: 8, Sampled: 32, TearAll: 7, TearSampled: 16,
	FocusOff: struct{ Exhaustive, Sampled, TearSampled int }{2, 2, 2}}

// Epoch is the writes between two flushes.
type Epoch struct {
	Index int
	// Durable is the number of entries before it (through its opening
	// flush).
	Durable int
	// Writes are the data-carrying entries in it, in log order.
	Writes []int
	// Flush is the entry that closes it, -1 if the log ends first.
	Flush int
}

// Epochs splits the log at its flushes. A FUA write is durable on its own
// but does not order the writes before it, so it stays in its epoch (and
// is in every state after it).
func Epochs(l *dmlog.Log) []Epoch {
	var out []Epoch
	cur := Epoch{Flush: -1}
	for _, e := range l.Entries {
		if e.IsFlush() {
			// A flush orders what completed before it; data sent with
			// the flush request is written after the flush.
			cur.Flush = e.Index
			out = append(out, cur)
			cur = Epoch{Index: len(out), Durable: e.Index + 1, Flush: -1}
		}
		if e.IsWrite() {
			cur.Writes = append(cur.Writes, e.Index)
		}
	}
	if len(cur.Writes) > 0 {
		out = append(out, cur)
	}
	return out
}

// Enumerate lists the crash states of the log: the disk before the first
// write, after every write (KindPrefix), the subsets of every epoch's
// writes (KindSubset; all of them or a sample, see EnumOptions) and every
// write torn at sector boundaries (KindTorn). States come in log order.
func Enumerate(l *dmlog.Log, o EnumOptions) []CrashState {
	rng := rand.New(rand.NewPCG(o.Seed, 0x706f7765726375))
	out := []CrashState{{Kind: KindPrefix, Torn: -1, Cut: -1}}
	off := o
	off.Exhaustive, off.Sampled, off.TearAll, off.TearSampled = o.FocusOff.Exhaustive, o.FocusOff.Sampled, 0, o.FocusOff.TearSampled
	for _, ep := range Epochs(l) {
		w := ep.Writes
		focused := o.Focus == nil
		for j := range w {
			out = append(out, CrashState{Kind: KindPrefix, Epoch: ep.Index, Durable: ep.Durable, Extra: w[:j+1], Torn: -1, Cut: w[j]})
			e := l.Entries[w[j]]
			eo := o
			if o.Focus != nil && !o.Focus(e) {
				eo = off
			} else {
				focused = true
			}
			for _, t := range tearPoints(e.Sectors, eo, rng) {
				out = append(out, CrashState{Kind: KindTorn, Epoch: ep.Index, Durable: ep.Durable, Extra: w[:j], Torn: w[j], TornSectors: t, Cut: w[j]})
			}
		}
		if focused {
			out = append(out, subsets(l, ep, o, rng)...)
		} else {
			out = append(out, subsets(l, ep, off, rng)...)
		}
	}
	return out
}

// tearPoints returns the sector counts at which a write of n sectors is
// torn.
func tearPoints(n uint64, o EnumOptions, rng *rand.Rand) []uint64 {
	if n < 2 {
		return nil
	}
	if o.TearSampled <= 0 && o.TearAll == 0 {
		return nil
	}
	if n-1 <= o.TearAll {
		pts := make([]uint64, 0, n-1)
		for t := uint64(1); t < n; t++ {
			pts = append(pts, t)
		}
		return pts
	}
	k := uint64(max(o.TearSampled, 2))
	pts := []uint64{1, n - 1}
	for i := uint64(1); i+1 < k/2; i++ {
		pts = append(pts, n*i/(k/2))
	}
	for uint64(len(pts)) < k {
		pts = append(pts, 1+rng.Uint64N(n-1))
	}
	slices.Sort(pts)
	return slices.Compact(pts)
}

// subsets returns the KindSubset states of one epoch.
func subsets(l *dmlog.Log, ep Epoch, o EnumOptions, rng *rand.Rand) []CrashState {
	// FUA writes reached the medium once they completed.
	var opt, fua []int
	for _, i := range ep.Writes {
		if l.Entries[i].IsFUA() {
			fua = append(fua, i)
		} else {
			opt = append(opt, i)
		}
	}
	n := len(opt)
	if n < 2 {
		return nil
	}
	state := func(pick []int) CrashState {
		cut := pick[len(pick)-1]
		var extra []int
		fi := 0
		for _, p := range pick {
			for fi < len(fua) && fua[fi] < p {
				extra = append(extra, fua[fi])
				fi++
			}
			extra = append(extra, p)
		}
		return CrashState{Kind: KindSubset, Epoch: ep.Index, Durable: ep.Durable, Extra: extra, Torn: -1, Cut: cut}
	}
	isPrefix := func(pick []int) bool {
		return len(pick) > 0 && pick[len(pick)-1] == opt[len(pick)-1]
	}
	var out []CrashState
	if n <= o.Exhaustive {
		for mask := uint64(1); mask < 1<<n; mask++ {
			var pick []int
			for b := 0; b < n; b++ {
				if mask&(1<<b) != 0 {
					pick = append(pick, opt[b])
				}
			}
			if !isPrefix(pick) {
				out = append(out, state(pick))
			}
		}
		return out
	}
	seen := map[string]bool{}
	add := func(pick []int) {
		if len(pick) == 0 || isPrefix(pick) {
			return
		}
		key := fmt.Sprint(pick)
		if seen[key] {
			return
		}
		seen[key] = true
		out = append(out, state(pick))
	}
	for range o.Sampled {
		var pick []int
		for _, i := range opt {
			if rng.IntN(2) == 0 {
				pick = append(pick, i)
			}
		}
		add(pick)
	}
	// Everything but one write: the one the cache lost.
	miss := rng.Perm(n)
	if len(miss) > o.Sampled {
		miss = miss[:o.Sampled]
	}
	for _, m := range miss {
		pick := slices.Concat(opt[:m], opt[m+1:])
		add(pick)
	}
	return out
}

// Sample picks at most n states: every state must keeps, then the first
// and the last state of every phase, then random others. It keeps log
// order.
func Sample(states []CrashState, n int, seed uint64, must func(CrashState) bool, phase func(CrashState) string) []CrashState {
	if n >= len(states) {
		return states
	}
	pick := make([]bool, len(states))
	count := 0
	take := func(i int) {
		if !pick[i] {
			pick[i] = true
			count++
		}
	}
	first := map[string]int{}
	last := map[string]int{}
	for i, s := range states {
		if must != nil && must(s) {
			take(i)
		}
		if phase != nil {
			p := phase(s)
			if _, ok := first[p]; !ok {
				first[p] = i
			}
			last[p] = i
		}
	}
	for p := range first {
		take(first[p])
		take(last[p])
	}
	rng := rand.New(rand.NewPCG(seed, 0x73616d706c65))
	for _, i := range rng.Perm(len(states)) {
		if count >= n {
			break
		}
		take(i)
	}
	out := make([]CrashState, 0, count)
	for i, s := range states {
		if pick[i] {
			out = append(out, s)
		}
	}
	return out
}
