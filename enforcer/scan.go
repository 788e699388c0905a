package enforcer

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vgpu-project/vgpu/shm"
	"go.uber.org/zap"
)

// sliceState is what the loop remembers of one usage region between ticks.
type sliceState struct {
	seen     uint64
	attach   uint64
	nextFull uint64
	// phase spreads the periodic full scans: this slice's fall on the ticks
	// t with t % FullScanEvery == phase, so that 1,000 slices never all scan
	// in one tick (they would if their first scans, all in the first tick,
	// set the schedule).
	phase uint64
	owned []ownedSlot
	// cumulative per slice device
	reclaimed [shm.MaxDevices]uint64
	backstop  [shm.MaxDevices]uint64
}

// ownedSlot is a slot the last scan found owned, with the owner word it read
// then: a changed word means the slot changed hands and the table is read
// whole again.
type ownedSlot struct {
	idx   int32
	owner uint64
	e     *procEntry // nil for a slot being claimed
}

// nextPhase is the first tick after gen that is ≡ phase (mod every).
func nextPhase(gen, phase, every uint64) uint64 {
	d := (phase + every - gen%every) % every
	if d == 0 {
		d = every
	}
	return gen + d
}

func (l *Loop) fullScanEvery() uint64 {
	if l.FullScanEvery > 0 {
		return uint64(l.FullScanEvery)
	}
	return DefaultFullScanEvery
}

// scanSlice reclaims the dead processes of one slice and fills its snapshot.
func (l *Loop) scanSlice(rep *TickReport, i int, ts *TrackedSlice, devSlab *slab[SliceDeviceSnapshot],
	procSlab *slab[ProcessSnapshot], wordSlab *slab[uint64]) {
	snap := &rep.Slices[i]
	snap.ID = ts.ID
	if ts.Slice == nil || ts.Slice.Usage == nil || ts.Slice.Budget == nil {
		l.addErr(rep, ts.ID, "", errors.New("slice regions not open"))
		return
	}
	u, b := ts.Slice.Usage, ts.Slice.Budget
	st := l.states[u]
	if st == nil {
		// attach starts at 0: a slice nobody ever attached to (a new one)
		// costs no scan of its slot table; any other is scanned whole now.
		// The periodic full scans are spread over the ticks.
		st = &sliceState{phase: uint64(len(l.states)) % l.fullScanEvery()}
		st.nextFull = nextPhase(l.gen, st.phase, l.fullScanEvery())
		l.states[u] = st
	}
	st.seen = l.gen
	l.tickStates[i] = st
	snap.QoS = b.QoS()
	snap.Priority = b.Priority()
	ndev := min(u.DeviceCount(), b.DeviceCount())

	err := u.Guard(func() {
		l.refreshOwned(rep, ts, u, st)
		snap.Devices = devSlab.take(ndev, l.sizes.devs)
		for d := range snap.Devices {
			ud := &u.Raw().Dev[d]
			sd := &snap.Devices[d]
			if d < len(ts.UUIDs) {
				sd.UUID = ts.UUIDs[d]
			}
			sd.LimitBytes = b.MemoryLimit(d)
			if d < len(ts.Allowance) {
				sd.AllowanceBytes = ts.Allowance[d]
			}
			sd.UsedBytes = atomic.LoadUint64(&ud.UsedBytes)
			sd.PeakBytes = atomic.LoadUint64(&ud.PeakBytes)
			sd.RefusedAllocs = atomic.LoadUint64(&ud.RefusedAllocs)
			sd.ReclaimedBytesTotal = st.reclaimed[d]
			sd.BackstopEventsTotal = st.backstop[d]
		}
		snap.Processes = procSlab.take(len(st.owned), l.sizes.procs)
		perProc := ndev
		if l.Driver != nil {
			perProc *= 2
		}
		for k, o := range st.owned {
			s := u.RawSlot(int(o.idx))
			p := &snap.Processes[k]
			p.PID = int(o.owner >> shm.SlotPIDShift)
			p.Slot = int(o.idx)
			if o.e != nil && o.e.resolved {
				p.HostPID = o.e.hostPID
				if atomic.LoadUint64(&s.HostPID) != uint64(p.HostPID) {
					atomic.StoreUint64(&s.HostPID, uint64(p.HostPID))
				}
			}
			w := wordSlab.take(perProc, l.sizes.words)
			p.UsedBytes = w[:ndev:ndev]
			for d := range p.UsedBytes {
				p.UsedBytes[d] = atomic.LoadUint64(&s.UsedBytes[d])
			}
			if l.Driver != nil {
				p.DriverBytes = w[ndev:]
			}
		}
	})
	if err != nil {
		st.attach = ^uint64(0) // rescan it whole next time
		st.owned = st.owned[:0]
		snap.Processes = nil
		l.addErr(rep, ts.ID, "", err)
	}
}

// refreshOwned brings st.owned up to date (see Loop: attach counter, full
// scans) and reclaims the slice's dead processes.
func (l *Loop) refreshOwned(rep *TickReport, ts *TrackedSlice, u *shm.UsageRegion, st *sliceState) {
	attach := atomic.LoadUint64(&u.Raw().AttachCount)
	if attach == st.attach && l.gen < st.nextFull && l.recheckOwned(u, st) {
		l.returnUnowned(rep, ts.ID, u, st)
		return
	}
	st.attach = attach
	st.nextFull = nextPhase(l.gen, st.phase, l.fullScanEvery())
	st.owned = st.owned[:0]
	l.cur = st
	rr, err := u.Reclaim(l.aliveFn)
	l.cur = nil
	if err != nil {
		st.attach = ^uint64(0)
		l.addErr(rep, ts.ID, "", fmt.Errorf("reclaim: %w", err))
	}
	// Owner words as Reclaim left them (alive() could not see them).
	for k := range st.owned {
		st.owned[k].owner = atomic.LoadUint64(&u.RawSlot(int(st.owned[k].idx)).Owner)
	}
	for _, rs := range rr.Slots {
		l.recordReclaim(rep, ts.ID, st, rs)
	}
	l.returnUnowned(rep, ts.ID, u, st)
}

// returnUnowned returns what a slice's device counters still hold when no
// process owns a slot in it: a charge leaked by a process killed between
// charging the counter and its slot (shm.UsageRegion.ReturnUnowned). It runs
// on the cheap path too (st.owned is then current), and costs one load per
// device while the counters are 0.
func (l *Loop) returnUnowned(rep *TickReport, slice string, u *shm.UsageRegion, st *sliceState) {
	if len(st.owned) != 0 {
		return
	}
	freed, err := u.ReturnUnowned()
	if err != nil {
		l.addErr(rep, slice, "", fmt.Errorf("return unowned charge: %w", err))
		return
	}
	if freed == nil {
		return
	}
	var total uint64
	for d, n := range freed {
		total += n
		st.reclaimed[d] += n
	}
	rep.ReclaimedBytes += total
	l.totals.ReclaimedBytes += total
	rep.Reclaimed = append(rep.Reclaimed, ReclaimEvent{Slice: slice, FreedBytes: freed})
	l.Log.Info("enforcer: returned a charge no process holds (a process killed mid-allocation)",
		zap.String("slice", slice), zap.Uint64s("freed_bytes", freed))
}

// recheckOwned is the cheap path of a tick in which nobody attached: it looks
// only at the slots the last scan found owned, drops those since released,
// and reports whether that is enough. It is not (the whole table must be read)
// when a slot changed hands, a claim completed, a known process died, or the
// table shrank under a slot; st.owned is then left for the full scan to
// rebuild.
func (l *Loop) recheckOwned(u *shm.UsageRegion, st *sliceState) bool {
	n := 0
	for _, o := range st.owned {
		if int(o.idx) >= u.SlotCount() {
			return false
		}
		s := u.RawSlot(int(o.idx))
		owner := atomic.LoadUint64(&s.Owner)
		if !shm.OwnedState(owner) {
			continue // released (or being reclaimed by someone else)
		}
		if owner != o.owner {
			return false // re-claimed, or CLAIMING became LIVE
		}
		id := shm.DecodeSlotIdentity(int(o.idx), owner, s)
		var e *procEntry
		if !id.Claiming {
			e = l.entry(id)
			if e.dead {
				return false
			}
		}
		st.owned[n] = ownedSlot{idx: o.idx, owner: owner, e: e}
		n++
	}
	st.owned = st.owned[:n]
	return true
}

// recordReclaim reports and counts one dead process whose charge Reclaim
// returned.
func (l *Loop) recordReclaim(rep *TickReport, slice string, st *sliceState, rs shm.ReclaimedSlot) {
	ev := ReclaimEvent{Slice: slice, PID: rs.PID, FreedBytes: rs.Freed}
	if e := l.procs[procKey{ns: rs.PIDNamespace, pid: rs.PID, start: rs.StartTime}]; e != nil {
		ev.HostPID = e.hostPID
	}
	var total uint64
	for d, n := range rs.Freed {
		total += n
		st.reclaimed[d] += n
	}
	rep.ReclaimedBytes += total
	l.totals.ReclaimedBytes += total
	l.totals.ReclaimedProcesses++
	rep.Reclaimed = append(rep.Reclaimed, ev)
	l.Log.Info("enforcer: reclaimed a dead process's charge",
		zap.String("slice", slice), zap.Int("pid", rs.PID), zap.Int("host_pid", ev.HostPID),
		zap.Uint64s("freed_bytes", rs.Freed), zap.Bool("clamped", rs.Clamped))
}
