package daemon

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// Elastic memory, the decisions (DESIGN §5): what to grant a slice that asked
// for more, what to take back and from whom. Pure: it reads a picture of the
// node (elasticInput) and returns the new grants, the answers and the events;
// elastic.go gathers the picture, persists the result and writes the budgets.
//
// The rules:
//   - a slice grows only up to its ceiling (memory_max) and only if the
//     grant keeps the driver's figure of the device within its memory (a grant
//     counts as used from the moment it is made);
//   - it grows first into memory no slice has reserved: the device less the
//     guaranteed slices' bases less the grants already made from it (the
//     "pool");
//   - burstable and best-effort slices may also borrow what an idle or empty
//     guaranteed slice does not use of its base (its lendable memory); a
//     guaranteed slice never borrows, and an active one never lends;
//   - an empty slice (no process holds its devices) gives back what it was
//     granted and does not use;
//   - a loan is called back the tick its lender wakes (a process of it opens
//     its device, runs work or allocates) or is released, and pool
//     grants are shrunk (best-effort first, then burstable, then guaranteed;
//     the largest first) when a new guaranteed slice needs the memory;
//   - a shrunk slice may keep what it holds, but cannot allocate past its new
//     limit; if the device is physically short of what the guaranteed slices
//     are owed, shrunk slices still over their limit are evicted, best-effort
//     first, then burstable, the largest overage first. Never a guaranteed
//     slice.

// grantStep rounds a grant up (within the ceiling and what is free), so a
// tenant growing by small blocks does not ask again for every block.
const grantStep = 64 << 20

// elasticInput is the picture of the node a plan is made from.
type elasticInput struct {
	slices  []*elasticSlice           // every placed slice, in a stable order
	devices map[string]*elasticDevice // by uuid
}

// elasticSlice is one slice as the planner sees it.
type elasticSlice struct {
	id    string
	qos   api.QoS
	state string            // api.Activity*
	devs  []api.SliceDevice // as recorded: base, ceiling, grant, loans (the plan edits a copy)
	used  []uint64          // per slice device: the larger of libvgpu's charge and the driver's figure
	reqs  []*shm.ElasticRequest
	// woke: since the last tick a process of the slice opened one of its
	// devices (it was empty), ran work (it was idle) or allocated: what it
	// lent is its own again.
	woke bool
	// changed: the plan changed devs (it must be recorded and written).
	changed bool
	// shrunk: per slice device, a shrink left the slice holding more than
	// its limit (it may keep it until it is evicted): set by this plan's
	// shrinks, or by an earlier one whose allowance still runs.
	shrunk []bool
}

// elasticDevice is one physical device.
type elasticDevice struct {
	total      uint64 // its memory
	guaranteed uint64 // the bases of the guaranteed slices on it
	physUsed   uint64 // the driver's figure for every process on it, plus grants made this plan
	known      bool   // physUsed was read
}

// elasticEvent is one decision, for the log and the metrics.
type elasticEvent struct {
	kind   string // grant, refuse, shrink, callback, evict
	slice  string
	device string
	bytes  uint64
	from   string // a loan's lender; "" for the pool
	why    string
}

const (
	evGrant    = api.ElasticGrant
	evRefuse   = api.ElasticRefuse
	evShrink   = api.ElasticShrink
	evCallback = api.ElasticCallback
	evEvict    = api.ElasticEvict
)

// elasticAnswer marks one request answered.
type elasticAnswer struct {
	slice *elasticSlice
	dev   int
	seq   uint64
}

type elasticPlan struct {
	answers []elasticAnswer
	events  []elasticEvent
	// evict: slice id -> per slice device, the backstop judges it by its
	// limit from now on (no allowance for what a shrink left it holding).
	evict map[string][]bool
}

// planElastic decides. It edits in.slices' devs copies (marking changed).
// With answersOnly it only answers requests: the picture's use and activity
// of the slices are a tick old (the doorbell's fast path), good enough to
// grant within what the driver says is free now, not to take anything back.
func planElastic(in *elasticInput, answersOnly bool) *elasticPlan {
	p := &elasticPlan{evict: map[string][]bool{}}
	byID := make(map[string]*elasticSlice, len(in.slices))
	for _, s := range in.slices {
		byID[s.id] = s
	}
	if !answersOnly {
		p.callBack(in, byID)
		p.returnEmpty(in)
		p.shrinkPools(in)
	}
	for _, s := range in.slices {
		for i, r := range s.reqs {
			if r != nil {
				p.answer(in, byID, s, i, *r)
			}
		}
	}
	if !answersOnly {
		p.evictShort(in)
	}
	return p
}

// callBack returns every loan whose lender is active again, or gone.
func (p *elasticPlan) callBack(in *elasticInput, byID map[string]*elasticSlice) {
	for _, s := range in.slices {
		for i := range s.devs {
			d := &s.devs[i]
			kept := d.Loans[:0:0]
			for _, l := range d.Loans {
				lender := byID[l.From]
				if lender != nil && lender.state != api.ActivityActive && !lender.woke {
					kept = append(kept, l)
					continue
				}
				why := "the lender is in use again"
				if lender == nil {
					why = "the lender was released"
				}
				p.shrink(s, i, l.Bytes)
				p.events = append(p.events, elasticEvent{kind: evCallback, slice: s.id, device: d.UUID,
					bytes: l.Bytes, from: l.From, why: why})
			}
			if len(kept) != len(d.Loans) {
				d.Loans = kept
				s.changed = true
			}
		}
	}
}

// returnEmpty takes back what an empty slice was granted and does not use:
// no process holds its devices, so the memory goes back to the pool and to
// its lenders (the last lenders repaid first); it asks again when it needs it.
func (p *elasticPlan) returnEmpty(in *elasticInput) {
	for _, s := range in.slices {
		if s.state != api.ActivityEmpty {
			continue
		}
		for i := range s.devs {
			d := &s.devs[i]
			keep := sub(s.used[i], d.MemoryBytes)
			if d.GrantedBytes <= keep {
				continue
			}
			back := d.GrantedBytes - keep
			p.shrink(s, i, back)
			d.Loans = api.TrimLoans(d.Loans, d.GrantedBytes)
			p.events = append(p.events, elasticEvent{kind: evShrink, slice: s.id, device: d.UUID, bytes: back,
				why: "the slice is empty: what it was granted and does not use goes back"})
		}
	}
}

// shrinkPools takes pool grants back where the pool is overdrawn (a
// guaranteed slice was placed into memory that had been granted).
func (p *elasticPlan) shrinkPools(in *elasticInput) {
	for uuid, dev := range in.devices {
		type holder struct {
			s *elasticSlice
			i int
		}
		var hs []holder
		var granted uint64
		for _, s := range in.slices {
			for i := range s.devs {
				if s.devs[i].UUID == uuid {
					if g := poolGrant(s.devs[i]); g > 0 {
						hs = append(hs, holder{s, i})
						granted += g
					}
				}
			}
		}
		room := sub(dev.total, dev.guaranteed)
		if granted <= room {
			continue
		}
		slices.SortFunc(hs, func(a, b holder) int {
			if c := cmp.Compare(qosRank(a.s.qos), qosRank(b.s.qos)); c != 0 {
				return c
			}
			return cmp.Compare(poolGrant(b.s.devs[b.i]), poolGrant(a.s.devs[a.i]))
		})
		over := granted - room
		for _, h := range hs {
			if over == 0 {
				break
			}
			take := min(over, poolGrant(h.s.devs[h.i]))
			p.shrink(h.s, h.i, take)
			over -= take
			p.events = append(p.events, elasticEvent{kind: evShrink, slice: h.s.id, device: uuid, bytes: take,
				why: "a guaranteed slice needs the memory it was granted"})
		}
	}
}

// shrink lowers a slice's grant on device i by n bytes.
func (p *elasticPlan) shrink(s *elasticSlice, i int, n uint64) {
	d := &s.devs[i]
	d.GrantedBytes = sub(d.GrantedBytes, n)
	s.changed = true
	if s.used[i] > d.LimitBytes() {
		s.shrunk[i] = true
	}
}

// answer decides one request of slice s on its device i.
func (p *elasticPlan) answer(in *elasticInput, byID map[string]*elasticSlice, s *elasticSlice, i int,
	req shm.ElasticRequest) {
	p.answers = append(p.answers, elasticAnswer{slice: s, dev: i, seq: req.Seq})
	d := &s.devs[i]
	limit := d.LimitBytes()
	refuse := func(why string) {
		p.events = append(p.events, elasticEvent{kind: evRefuse, slice: s.id, device: d.UUID,
			bytes: sub(req.Bytes, limit), why: why})
	}
	switch {
	case !d.Elastic():
		refuse("the slice has no memory ceiling")
		return
	case req.Bytes <= limit:
		return // it fits already (granted meanwhile, or freed)
	case req.Bytes > d.MemoryMaxBytes:
		refuse(fmt.Sprintf("asks for %s, above its ceiling %s", sizeString(req.Bytes), sizeString(d.MemoryMaxBytes)))
		return
	}
	dev := in.devices[d.UUID]
	if dev == nil || !dev.known {
		refuse("the driver's memory figures for the device are unavailable")
		return
	}
	need := req.Bytes - limit
	want := min(roundUp(need, grantStep), d.MemoryMaxBytes-limit, sub(dev.total, dev.physUsed))
	if want < need {
		refuse(fmt.Sprintf("the device has %s free by the driver's figures, %s asked", sizeString(sub(dev.total, dev.physUsed)), sizeString(need)))
		return
	}
	fromPool := min(want, poolFree(in, d.UUID, dev))
	loans := p.borrow(in, byID, s, d.UUID, want-fromPool)
	got := fromPool
	for _, l := range loans {
		got += l.Bytes
	}
	if got < need {
		refuse(fmt.Sprintf("%s free to grant on the device (unreserved and lendable), %s asked",
			sizeString(got), sizeString(need)))
		return
	}
	d.GrantedBytes += got
	d.Loans = mergeLoans(d.Loans, loans)
	s.changed = true
	dev.physUsed += got
	p.events = append(p.events, elasticEvent{kind: evGrant, slice: s.id, device: d.UUID, bytes: got,
		why: grantSource(fromPool, loans)})
}

// borrow picks loans of up to n bytes on uuid from idle or empty guaranteed
// slices, the most lendable first; none for a guaranteed borrower.
func (p *elasticPlan) borrow(in *elasticInput, byID map[string]*elasticSlice, s *elasticSlice, uuid string,
	n uint64) []api.Loan {
	if n == 0 || s.qos.Guaranteed() {
		return nil
	}
	type offer struct {
		id    string
		bytes uint64
	}
	var offers []offer
	for _, l := range in.slices {
		if l == s || !l.qos.Guaranteed() || l.state == api.ActivityActive {
			continue
		}
		if avail := lendableOn(in, l, uuid); avail > 0 {
			offers = append(offers, offer{l.id, avail})
		}
	}
	slices.SortFunc(offers, func(a, b offer) int {
		if c := cmp.Compare(b.bytes, a.bytes); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	var out []api.Loan
	for _, o := range offers {
		if n == 0 {
			break
		}
		take := min(n, o.bytes)
		out = append(out, api.Loan{From: o.id, Bytes: take})
		n -= take
	}
	return out
}

// evictShort marks, per device physically short of what its active
// guaranteed slices are owed, the shrunk slices still over their limit to
// be evicted: best-effort first, then burstable, the largest overage first.
func (p *elasticPlan) evictShort(in *elasticInput) {
	for uuid, dev := range in.devices {
		if !dev.known {
			continue
		}
		var owed uint64
		type over struct {
			s     *elasticSlice
			i     int
			bytes uint64
		}
		var overs []over
		for _, s := range in.slices {
			for i, d := range s.devs {
				if d.UUID != uuid {
					continue
				}
				if s.qos.Guaranteed() && s.state == api.ActivityActive {
					owed += sub(d.MemoryBytes, s.used[i])
				}
				if s.shrunk[i] && !s.qos.Guaranteed() && s.used[i] > d.LimitBytes() {
					overs = append(overs, over{s, i, s.used[i] - d.LimitBytes()})
				}
			}
		}
		short := sub(owed, sub(dev.total, dev.physUsed))
		slices.SortFunc(overs, func(a, b over) int {
			if c := cmp.Compare(qosRank(a.s.qos), qosRank(b.s.qos)); c != 0 {
				return c
			}
			return cmp.Compare(b.bytes, a.bytes)
		})
		for _, o := range overs {
			if short == 0 {
				break
			}
			ev := p.evict[o.s.id]
			if ev == nil {
				ev = make([]bool, len(o.s.devs))
				p.evict[o.s.id] = ev
			}
			ev[o.i] = true
			short = sub(short, o.bytes)
			p.events = append(p.events, elasticEvent{kind: evEvict, slice: o.s.id, device: uuid, bytes: o.bytes,
				why: fmt.Sprintf("the device cannot give its guaranteed slices the %s they are owed", sizeString(owed))})
		}
	}
}

// poolGrant is the part of a device's grant not borrowed from a slice.
func poolGrant(d api.SliceDevice) uint64 { return sub(d.GrantedBytes, d.BorrowedBytes()) }

// poolFree is what the pool of device uuid can still grant.
func poolFree(in *elasticInput, uuid string, dev *elasticDevice) uint64 {
	var granted uint64
	for _, s := range in.slices {
		for _, d := range s.devs {
			if d.UUID == uuid {
				granted += poolGrant(d)
			}
		}
	}
	return sub(sub(dev.total, dev.guaranteed), granted)
}

// lendableOn is what guaranteed slice l can lend on uuid: what it does not
// use of its base, less what it lent already.
func lendableOn(in *elasticInput, l *elasticSlice, uuid string) uint64 {
	var avail uint64
	for i, d := range l.devs {
		if d.UUID == uuid {
			avail = sub(d.MemoryBytes, l.used[i])
		}
	}
	for _, s := range in.slices {
		for _, d := range s.devs {
			if d.UUID != uuid {
				continue
			}
			for _, loan := range d.Loans {
				if loan.From == l.id {
					avail = sub(avail, loan.Bytes)
				}
			}
		}
	}
	return avail
}

func mergeLoans(have, add []api.Loan) []api.Loan {
	out := slices.Clone(have)
	for _, a := range add {
		i := slices.IndexFunc(out, func(l api.Loan) bool { return l.From == a.From })
		if i < 0 {
			out = append(out, a)
		} else {
			out[i].Bytes += a.Bytes
		}
	}
	return out
}

func grantSource(fromPool uint64, loans []api.Loan) string {
	s := fmt.Sprintf("%s unreserved", sizeString(fromPool))
	for _, l := range loans {
		s += fmt.Sprintf(", %s lent by %s", sizeString(l.Bytes), l.From)
	}
	return s
}

// qosRank orders the classes for taking memory back: best-effort first.
func qosRank(q api.QoS) int {
	switch q.Normalized() {
	case api.QoSBestEffort:
		return 0
	case api.QoSBurstable:
		return 1
	}
	return 2
}

// sub is a - b, or 0 when b > a.
func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

func roundUp(n, step uint64) uint64 {
	if r := n % step; r != 0 {
		return n + step - r
	}
	return n
}
