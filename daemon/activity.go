package daemon

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/enforcer"
)

// Slice activity: after every tick, whether each slice's processes hold its
// devices (empty when none does), whether they run work on them (idle when the
// driver measured none), since when, and what an empty or idle slice could
// lend (its limit minus what it uses). A slice with an idle release
// (api.AllocRequest.IdleRelease) is released once it has been empty that long
// after its last process went away — a slice nobody used yet is never released
// for being empty (its container may not have started its GPU work).
//
// "Holds a device" is decided from what the kernel and the driver say, never
// from the tenant's slots alone: a process the driver lists on one of the
// slice's devices, or a live process of the slice (a kernel-attributed member,
// or one whose slot the enforcer mapped to a live host pid: it attached
// libvgpu, which it does at its first CUDA call). A tenant can only keep its
// own slice from looking empty.

// sliceActivity is one slice's activity state, kept by the loop goroutine.
type sliceActivity struct {
	state    string
	since    time.Time
	used     bool
	attach   uint64 // the usage region's attach count at the last tick
	seenAny  bool   // attach was read at least once
	seenMark        // in the latest tick (others are dropped)
}

// activityTracker keeps every slice's activity; the loop goroutine steps it,
// the API reads what it published.
type activityTracker struct {
	log    *zap.Logger
	slices map[string]*sliceActivity
	latest atomic.Pointer[map[string]api.SliceActivity]
}

func newActivityTracker(log *zap.Logger) *activityTracker {
	t := &activityTracker{log: log, slices: map[string]*sliceActivity{}}
	empty := map[string]api.SliceActivity{}
	t.latest.Store(&empty)
	return t
}

// Status is every slice's activity after the last tick (any goroutine).
func (t *activityTracker) Status() map[string]api.SliceActivity { return *t.latest.Load() }

// step updates every slice of the tick and returns the ids of the slices due
// for release (empty for at least their idle release after being used).
//
// holders counts, per slice, the processes the tracker knows to hold a GPU
// device in its container's cgroup (nil: no tracker): a container's slice
// with such a process is not empty, whether or not the process has attached
// libvgpu yet.
func (t *activityTracker) step(now time.Time, view []*sliceEntry, rep *enforcer.TickReport,
	compute map[sliceDev]*ComputeStatus, holders map[string]int) []string {
	snaps := make(map[string]*enforcer.SliceSnapshot, len(rep.Slices))
	for i := range rep.Slices {
		snaps[rep.Slices[i].ID] = &rep.Slices[i]
	}
	out := make(map[string]api.SliceActivity, len(view))
	var due []string
	for _, e := range view {
		sl := &e.rec.Slice
		snap := snaps[sl.ID]
		if snap == nil {
			continue // not ticked yet
		}
		a := t.slices[sl.ID]
		if a == nil {
			a = &sliceActivity{state: api.ActivityEmpty, since: sl.CreatedAt}
			t.slices[sl.ID] = a
		}
		a.mark()
		state := activityOf(sl.ID, e.uuids, snap, compute)
		if state == api.ActivityEmpty && sl.Owner.Kind == api.OwnerContainer && holders[sl.ID] > 0 {
			state = api.ActivityActive // held by a process in its container (tracker)
		}
		if state != api.ActivityEmpty {
			a.used = true
		}
		if state != a.state {
			a.state, a.since = state, now
		}
		if a.attachedSince(e) && state == api.ActivityEmpty {
			// A process attached and went between two ticks: the slice was
			// used, and is empty from now.
			a.used, a.since = true, now
		}
		st := api.SliceActivity{State: a.state, Since: a.since, Used: a.used, LendableBytes: lendable(a.state, snap)}
		if ir := time.Duration(sl.IdleRelease); ir > 0 && a.used && a.state == api.ActivityEmpty {
			st.ReleaseAt = a.since.Add(ir)
			if !now.Before(st.ReleaseAt) {
				due = append(due, sl.ID)
			}
		}
		out[sl.ID] = st
	}
	dropUnseen(t.slices)
	t.latest.Store(&out)
	return due
}

// attachedSince reports whether a process attached libvgpu to the slice since
// the last tick (the usage region's attach count grew). A process too short to
// be seen by any tick still counts as a use. The count is the tenant's to
// write: forging it can only make its own slice releasable sooner.
func (a *sliceActivity) attachedSince(e *sliceEntry) bool {
	if e.region == nil || e.region.Usage == nil {
		return false
	}
	var n uint64
	if e.region.Usage.Guard(func() { n = e.region.Usage.AttachCount() }) != nil {
		return false
	}
	grew := a.seenAny && n > a.attach
	if !a.seenAny && n > 0 {
		grew = true // attached before vgpud first saw the slice (a restart)
	}
	a.attach, a.seenAny = n, true
	return grew
}

// activityOf is a slice's state in this tick: empty when none of its
// processes holds a device, idle when the driver measured no work from them
// on any of its devices, else active. Without a measurement (no NVML
// utilization) a held slice counts as active.
// The slice's device uuids come from its entry (fixed for its life): its
// recorded devices are changed by updates on other goroutines.
func activityOf(id string, uuids []string, snap *enforcer.SliceSnapshot, compute map[sliceDev]*ComputeStatus) string {
	held := false
	for _, p := range snap.Processes {
		if holdsDevice(p) {
			held = true
			break
		}
	}
	if !held {
		return api.ActivityEmpty
	}
	for _, uuid := range uuids {
		c := compute[sliceDev{id, uuid}]
		if c == nil || !c.Measured || c.AchievedPct > 0 {
			return api.ActivityActive
		}
	}
	return api.ActivityIdle
}

// holdsDevice: the driver lists the process on one of the slice's devices, or
// it is a live process of the slice the kernel vouches for (a member, or a
// slot mapped to a live host pid).
func holdsDevice(p enforcer.ProcessSnapshot) bool {
	for _, b := range p.DriverBytes {
		if b > 0 {
			return true
		}
	}
	return p.HostPID > 0 && (p.Member || p.Slot >= 0)
}

// lendable is, per device, what an empty or idle slice does not use of its
// limit: the larger of libvgpu's charge and the driver's figure counts as
// used (the charge is the tenant's to write).
func lendable(state string, snap *enforcer.SliceSnapshot) []uint64 {
	out := make([]uint64, len(snap.Devices))
	if state == api.ActivityActive {
		return out
	}
	for i, d := range snap.Devices {
		used := max(d.UsedBytes, d.DriverBytes)
		if d.LimitBytes > used {
			out[i] = d.LimitBytes - used
		}
	}
	return out
}
