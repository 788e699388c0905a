package daemon

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/metrics"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// Elastic memory, the loop's side: every tick (and at once when a tenant
// rings its doorbell, elastic_bell.go) it gathers the requests pending in the
// usage regions — a request is pending while its seq differs from the seq
// the budget says was answered, so nothing about it lives only in vgpud's
// memory — and, when there are requests or grants outstanding, pictures the
// node, lets planElastic decide, records every changed slice (durably, like
// every slice change), writes the budgets and only then answers. What a
// tenant wrote is a request and nothing more: the plan bounds it.

// elasticBroker is the loop goroutine's elastic state.
type elasticBroker struct {
	log *zap.Logger
	// allowance: slice id -> per slice device, what the backstop lets the
	// slice hold above its limit after a shrink (the TrackedSlice's
	// Allowance points at the same slice).
	allowance map[string][]uint64
	// firstSeen: when a pending request was first seen, for the decision
	// latency.
	firstSeen map[sliceDev]time.Time
	// last: every slice's activity state and use at the previous plan, to
	// tell a lender waking up.
	last   map[string]elasticMark
	counts elasticCounts
	events eventRing
	// persisting: records being written in the background (persistElastic);
	// the loop waits for them when it stops.
	persisting sync.WaitGroup
}

// eventRingSize is how many elastic decisions GET /v1/events keeps.
const eventRingSize = 256

// eventRing keeps the latest elastic decisions for the API (any goroutine).
type eventRing struct {
	mu   sync.Mutex
	ring [eventRingSize]api.ElasticEvent
	n    uint64 // events added over its life
}

func (r *eventRing) add(ev api.ElasticEvent) {
	r.mu.Lock()
	r.ring[r.n%eventRingSize] = ev
	r.n++
	r.mu.Unlock()
}

// list is the kept events, oldest first.
func (r *eventRing) list() []api.ElasticEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := min(r.n, eventRingSize)
	out := make([]api.ElasticEvent, 0, k)
	for i := r.n - k; i < r.n; i++ {
		out = append(out, r.ring[i%eventRingSize])
	}
	return out
}

// elasticMark is a slice's activity and use as a plan saw them.
type elasticMark struct {
	state string
	used  []uint64
}

// activityRank orders the states by how much a slice is in use.
func activityRank(state string) int {
	switch state {
	case api.ActivityEmpty:
		return 0
	case api.ActivityIdle:
		return 1
	}
	return 2
}

// markWakes sets each slice's woke from its previous mark (more in use, or
// more memory used, than at the previous plan) and keeps the new marks.
func (b *elasticBroker) markWakes(ss []*elasticSlice) {
	next := make(map[string]elasticMark, len(ss))
	for _, s := range ss {
		if prev, ok := b.last[s.id]; ok {
			s.woke = activityRank(s.state) > activityRank(prev.state)
			for i := range min(len(prev.used), len(s.used)) {
				s.woke = s.woke || s.used[i] > prev.used[i]
			}
		}
		next[s.id] = elasticMark{state: s.state, used: s.used}
	}
	b.last = next
}

// elasticCounts are the broker's totals, read by the metrics (any goroutine).
type elasticCounts struct {
	grants, refusals, shrinks, callbacks, evictions atomic.Uint64
	grantedBytes                                    atomic.Uint64
}

// totals reads the counts for the metrics (any goroutine).
func (c *elasticCounts) totals() metrics.Elastic {
	return metrics.Elastic{Grants: c.grants.Load(), GrantedBytes: c.grantedBytes.Load(), Refusals: c.refusals.Load(),
		Shrinks: c.shrinks.Load(), Callbacks: c.callbacks.Load(), Evictions: c.evictions.Load()}
}

func newElasticBroker(log *zap.Logger) *elasticBroker {
	return &elasticBroker{log: log, allowance: map[string][]uint64{}, firstSeen: map[sliceDev]time.Time{},
		last: map[string]elasticMark{}}
}

// stepElastic runs after the activity step of a tick (full), or alone when
// the doorbell rings between ticks (not full: rep is the last tick's, and
// only requests are answered — see planElastic).
func (l *enforcerLoop) stepElastic(now time.Time, rep *enforcer.TickReport, full bool) {
	b := l.elastic
	defer l.publishBells()
	in := l.elasticInput(now, rep, full)
	if in == nil {
		return
	}
	plan := planElastic(in, !full)
	l.applyAll(in.slices)
	l.answerElastic(now, plan)
	if full {
		b.updateAllowances(in, plan)
	}
	b.logEvents(plan.events)
}

// publishBells hands the doorbell goroutine the words of every elastic slice
// device, with the value each holds while nothing is pending.
func (l *enforcerLoop) publishBells() {
	var words []bellWord
	for _, e := range l.view {
		if e.region == nil || !elasticEntry(e) {
			continue
		}
		u, b := e.region.Usage, e.region.Budget
		_ = u.Guard(func() {
			for i := range min(u.DeviceCount(), b.DeviceCount(), len(e.uuids)) {
				words = append(words, bellWord{addr: uintptr(unsafe.Pointer(u.ElasticDoorbell(i))),
					val: uint32(b.ElasticGrantSeq(i))}) //nolint:gosec // the futex word is the seq's low half
			}
		})
	}
	l.bell.publish(words)
}

// elasticInput pictures the node for a plan, or returns nil when there is
// nothing to decide: no request pending and no grant outstanding.
func (l *enforcerLoop) elasticInput(now time.Time, rep *enforcer.TickReport, full bool) *elasticInput {
	if !slices.ContainsFunc(l.view, elasticEntry) {
		// No slice may grow: nothing to picture (the common case costs a scan
		// of the records, no allocation).
		clear(l.elastic.allowance)
		clear(l.elastic.last)
		return nil
	}
	snaps := make(map[string]*enforcer.SliceSnapshot, len(rep.Slices))
	for i := range rep.Slices {
		snaps[rep.Slices[i].ID] = &rep.Slices[i]
	}
	activity := l.activity.Status()
	recorded := l.devicesOf()
	in := &elasticInput{devices: map[string]*elasticDevice{}}
	pending, outstanding := false, false
	for _, e := range l.view {
		snap := snaps[e.rec.Slice.ID]
		if snap == nil {
			continue
		}
		s := l.elasticSlice(now, e, recorded[e], snap, activity[e.rec.Slice.ID].State)
		for i, r := range s.reqs {
			pending = pending || r != nil
			if s.devs[i].GrantedBytes > 0 {
				outstanding = true
			}
		}
		in.slices = append(in.slices, s)
	}
	if !full {
		if !pending {
			return nil
		}
	} else {
		// Marked every tick, so a lender's wake between two plans is seen.
		l.elastic.markWakes(in.slices)
		if !pending && !outstanding {
			clear(l.elastic.allowance)
			return nil
		}
	}
	for _, d := range l.srv.alloc.Devices() {
		dev := &elasticDevice{total: d.MemoryBytes, guaranteed: d.GuaranteedBytes}
		if ps, err := l.srv.gpus.Processes(d.UUID); err == nil {
			dev.known = true
			for _, p := range ps {
				dev.physUsed += p.UsedBytes
			}
		}
		in.devices[d.UUID] = dev
	}
	return in
}

// elasticEntry reports whether a slice was asked with a ceiling (it may grow
// on its devices). It reads the request, which nothing changes after the
// slice is made, so the loop needs no lock for it.
func elasticEntry(e *sliceEntry) bool { return e.rec.Request.MemoryMaxBytes > 0 }

// devicesOf copies the recorded devices of the view's slices (loans
// included) under the server's lock: an update changes them from another
// goroutine.
func (l *enforcerLoop) devicesOf() map[*sliceEntry][]api.SliceDevice {
	out := make(map[*sliceEntry][]api.SliceDevice, len(l.view))
	l.srv.mu.Lock()
	defer l.srv.mu.Unlock()
	for _, e := range l.view {
		devs := slices.Clone(e.rec.Slice.Devices)
		for i := range devs {
			devs[i].Loans = slices.Clone(devs[i].Loans)
		}
		out[e] = devs
	}
	return out
}

// elasticSlice is one slice's part of the picture: its recorded devices (a
// copy the plan may edit), what it uses, its pending requests.
func (l *enforcerLoop) elasticSlice(now time.Time, e *sliceEntry, devs []api.SliceDevice,
	snap *enforcer.SliceSnapshot, state string) *elasticSlice {
	sl := &e.rec.Slice // its id and class: fixed for the slice's life
	s := &elasticSlice{id: sl.ID, qos: sl.QoS, state: state,
		devs: devs, used: make([]uint64, len(devs)),
		reqs: make([]*shm.ElasticRequest, len(devs)), shrunk: make([]bool, len(devs))}
	for i := range devs {
		if i < len(snap.Devices) {
			s.used[i] = max(snap.Devices[i].UsedBytes, snap.Devices[i].DriverBytes)
		}
		if al := l.elastic.allowance[sl.ID]; i < len(al) {
			s.shrunk[i] = al[i] > 0
		}
	}
	if e.region == nil || !elasticEntry(e) {
		return s
	}
	u, b := e.region.Usage, e.region.Budget
	_ = u.Guard(func() {
		for i := range s.devs {
			if i >= u.DeviceCount() || i >= b.DeviceCount() {
				break
			}
			r := u.ElasticRequest(i)
			key := sliceDev{sl.ID, s.devs[i].UUID}
			if r.Seq == b.ElasticGrantSeq(i) {
				delete(l.elastic.firstSeen, key)
				continue
			}
			s.reqs[i] = &r
			if _, ok := l.elastic.firstSeen[key]; !ok {
				l.elastic.firstSeen[key] = now
			}
		}
	})
	return s
}

// applyAll writes every slice the plan changed into its budget and its
// in-memory record, then starts recording them (persistAll).
func (l *enforcerLoop) applyAll(ss []*elasticSlice) {
	for _, s := range ss {
		if s.changed {
			if e := l.applyElastic(s); e != nil {
				l.persistElastic(e)
			}
		}
	}
}

// applyElastic writes a slice's new grants into its budget and its entry's
// record, and returns the entry (nil: released meanwhile). The budget comes
// first and the durable record after (persistElastic), without holding the
// answer back for an fsync: the budget is a file only vgpud writes, which a
// crash of vgpud does not lose, and the store's Load makes the record follow
// a budget that got ahead of it (store.syncMemory). (A crash of the whole
// machine loses the page cache, and with it every process the grant was for.)
func (l *enforcerLoop) applyElastic(s *elasticSlice) *sliceEntry {
	srv := l.srv
	srv.mu.Lock()
	e := srv.slices[s.id]
	srv.mu.Unlock()
	if e == nil {
		return nil
	}
	e.recMu.Lock() // an update's record write finishes first, and sees these grants after
	defer e.recMu.Unlock()
	l.budgetMu.Lock()
	defer l.budgetMu.Unlock()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.slices[s.id] != e || e.releasing || e.region == nil {
		return nil
	}
	// The plan's grants onto the record as it is now (an update may have
	// changed a compute share since the tick began); a fresh slice, as
	// lists handed out share the old one.
	devs := slices.Clone(e.rec.Slice.Devices)
	for i := range min(len(devs), len(s.devs)) {
		devs[i].GrantedBytes, devs[i].Loans = s.devs[i].GrantedBytes, s.devs[i].Loans
	}
	for i, d := range devs {
		if err := e.region.Budget.SetMemoryLimit(i, d.LimitBytes()); err != nil {
			l.srv.log.Error("elastic: writing a budget", zap.String("slice", s.id), zap.Error(err))
			s.changed = false
			return nil
		}
	}
	e.rec.Slice.Devices = devs
	return e
}

// persistElastic records e as it is now, durably, in the background: the
// latest state whenever it runs (so records written out of order still end
// at the newest), one at a time per slice (recMu).
func (l *enforcerLoop) persistElastic(e *sliceEntry) {
	l.elastic.persisting.Add(1)
	go func() {
		defer l.elastic.persisting.Done()
		e.recMu.Lock()
		defer e.recMu.Unlock()
		l.srv.mu.Lock()
		rec, gone := e.rec, e.releasing
		l.srv.mu.Unlock()
		if gone {
			return
		}
		if err := l.srv.store.Update(rec); err != nil {
			l.srv.log.Error("elastic: recording a slice's grants (its budget has them: a restart records them)",
				zap.String("slice", rec.Slice.ID), zap.Error(err))
		}
	}()
}

// answerElastic marks the plan's requests answered: the budget's limit is
// already what the plan decided.
func (l *enforcerLoop) answerElastic(now time.Time, plan *elasticPlan) {
	l.budgetMu.Lock()
	defer l.budgetMu.Unlock()
	l.srv.mu.Lock()
	defer l.srv.mu.Unlock()
	for _, a := range plan.answers {
		e := l.srv.slices[a.slice.id]
		if e == nil || e.releasing || e.region == nil {
			continue
		}
		b := e.region.Budget
		if err := b.AnswerElastic(a.dev, b.MemoryLimit(a.dev), a.seq); err != nil {
			l.srv.log.Error("elastic: answering a request", zap.String("slice", a.slice.id), zap.Error(err))
			continue
		}
		key := sliceDev{a.slice.id, a.slice.devs[a.dev].UUID}
		if t, ok := l.elastic.firstSeen[key]; ok {
			l.srv.metrics.ObserveElasticDecision(time.Since(t))
			delete(l.elastic.firstSeen, key)
		}
	}
}

// updateAllowances sets what each slice may hold above its limit: after a
// shrink, what it held above the new limit (shrinking as it frees); nothing
// once it is evicted or fits.
func (b *elasticBroker) updateAllowances(in *elasticInput, plan *elasticPlan) {
	for _, s := range in.slices {
		al := b.allowance[s.id]
		if al == nil {
			al = make([]uint64, len(s.devs))
		}
		any := false
		for i, d := range s.devs {
			over := sub(s.used[i], d.LimitBytes())
			switch {
			case plan.evict[s.id] != nil && plan.evict[s.id][i]:
				al[i] = 0
			case s.shrunk[i]:
				al[i] = max(al[i], over)
			default:
				al[i] = min(al[i], over)
			}
			any = any || al[i] > 0
		}
		if any {
			b.allowance[s.id] = al
		} else {
			delete(b.allowance, s.id)
		}
	}
}

// logEvents logs, counts and keeps (GET /v1/events) the plan's decisions.
func (b *elasticBroker) logEvents(events []elasticEvent) {
	for _, ev := range events {
		b.events.add(api.ElasticEvent{Time: time.Now().UTC(), Kind: ev.kind, Slice: ev.slice, Device: ev.device,
			Bytes: ev.bytes, Lender: ev.from, Why: ev.why})
		fields := []zap.Field{zap.String("slice", ev.slice), zap.String("device", ev.device),
			zap.Uint64("bytes", ev.bytes), zap.String("why", ev.why)}
		if ev.from != "" {
			fields = append(fields, zap.String("lender", ev.from))
		}
		switch ev.kind {
		case evGrant:
			b.counts.grants.Add(1)
			b.counts.grantedBytes.Add(ev.bytes)
			b.log.Info("elastic: memory granted", fields...)
		case evRefuse:
			b.counts.refusals.Add(1)
			b.log.Info("elastic: request refused", fields...)
		case evShrink:
			b.counts.shrinks.Add(1)
			b.log.Warn("elastic: grant shrunk", fields...)
		case evCallback:
			b.counts.callbacks.Add(1)
			b.log.Info("elastic: loan called back", fields...)
		case evEvict:
			b.counts.evictions.Add(1)
			b.log.Warn("elastic: evicting a borrower (the backstop acts on it by its limit from now)", fields...)
		}
	}
}

// allowanceOf is slice id's backstop allowance (nil: none).
func (b *elasticBroker) allowanceOf(id string) []uint64 { return b.allowance[id] }
