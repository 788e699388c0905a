package daemon

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/internal/units"
)

func activityEntry(id string, idleRelease time.Duration, created time.Time) *sliceEntry {
	return &sliceEntry{rec: store.Record{Slice: api.Slice{ID: id, CreatedAt: created,
		IdleRelease: units.Duration(idleRelease), Devices: []api.SliceDevice{{UUID: "GPU-0"}}}}, uuids: []string{"GPU-0"}}
}

func activitySnap(id string, procs ...enforcer.ProcessSnapshot) enforcer.SliceSnapshot {
	return enforcer.SliceSnapshot{ID: id, Processes: procs,
		Devices: []enforcer.SliceDeviceSnapshot{{UUID: "GPU-0", LimitBytes: 1000, UsedBytes: 100, DriverBytes: 300}}}
}

func measured(id string, pct float64) map[sliceDev]*ComputeStatus {
	return map[sliceDev]*ComputeStatus{{id, "GPU-0"}: {Slice: id, UUID: "GPU-0", Measured: true, AchievedPct: pct}}
}

// A slice goes active → idle → empty on what the kernel and the driver say;
// an idle-release slice is due once it has been empty that long after its
// last process, a plain one never is, and one nobody used yet is not either.
func TestActivityStatesAndIdleRelease(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tr := newActivityTracker(zap.NewNop())
	rel := activityEntry("rel", 2*time.Second, t0)
	plain := activityEntry("plain", 0, t0)
	unused := activityEntry("unused", time.Second, t0)
	view := []*sliceEntry{rel, plain, unused}
	proc := enforcer.ProcessSnapshot{PID: 7, HostPID: 1007, Slot: 0}
	ghost := enforcer.ProcessSnapshot{PID: 9, Slot: 1} // a slot no live host pid backs

	rep := &enforcer.TickReport{Slices: []enforcer.SliceSnapshot{activitySnap("rel", proc), activitySnap("plain", proc),
		activitySnap("unused", ghost)}}
	compute := measured("rel", 30)
	compute[sliceDev{"plain", "GPU-0"}] = &ComputeStatus{Measured: true, AchievedPct: 0}
	require.Empty(t, tr.step(t0, view, rep, compute, nil))
	st := tr.Status()
	require.Equal(t, api.ActivityActive, st["rel"].State)
	require.Equal(t, []uint64{0}, st["rel"].LendableBytes, "an active slice lends nothing")
	require.Equal(t, api.ActivityIdle, st["plain"].State, "held, but the driver measured no work")
	require.Equal(t, []uint64{700}, st["plain"].LendableBytes, "limit − the larger of charge and driver figure")
	require.Equal(t, api.ActivityEmpty, st["unused"].State, "a slot alone does not hold a device")
	require.False(t, st["unused"].Used)

	// rel's process exits; plain's goes on idling.
	rep = &enforcer.TickReport{Slices: []enforcer.SliceSnapshot{activitySnap("rel"), activitySnap("plain", proc),
		activitySnap("unused")}}
	require.Empty(t, tr.step(t0.Add(time.Second), view, rep, compute, nil))
	st = tr.Status()
	require.Equal(t, api.ActivityEmpty, st["rel"].State)
	require.Equal(t, t0.Add(time.Second), st["rel"].Since)
	require.Equal(t, t0.Add(3*time.Second), st["rel"].ReleaseAt)
	require.True(t, st["unused"].ReleaseAt.IsZero(), "never used: not released for being empty")

	require.Empty(t, tr.step(t0.Add(2900*time.Millisecond), view, rep, compute, nil))
	due := tr.step(t0.Add(3*time.Second), view, rep, compute, nil)
	require.Equal(t, []string{"rel"}, due)

	// A process that comes back cancels the release.
	rep.Slices[0] = activitySnap("rel", enforcer.ProcessSnapshot{HostPID: 2000, Slot: -1, Member: true})
	require.Empty(t, tr.step(t0.Add(4*time.Second), view, rep, compute, nil))
	require.Equal(t, api.ActivityActive, tr.Status()["rel"].State)

	// A container's slice is held while the tracker knows a process in the
	// container's cgroup with the device open, attached to libvgpu or not
	// (holders: per slice, tracking.go sliceHolders).
	ctr := activityEntry("ctr", time.Second, t0)
	ctr.rec.Slice.Owner = api.Owner{Kind: api.OwnerContainer, ContainerID: "c1"}
	rep.Slices = append(rep.Slices, activitySnap("ctr"))
	tr.step(t0.Add(4*time.Second), append(view, ctr), rep, compute, map[string]int{"ctr": 1})
	require.Equal(t, api.ActivityActive, tr.Status()["ctr"].State)
	tr.step(t0.Add(4500*time.Millisecond), append(view, ctr), rep, compute, map[string]int{"other": 1})
	require.Equal(t, api.ActivityEmpty, tr.Status()["ctr"].State)

	// Slices gone from the view are forgotten.
	tr.step(t0.Add(5*time.Second), []*sliceEntry{plain}, rep, compute, nil)
	require.NotContains(t, tr.Status(), "rel")
	require.NotContains(t, tr.slices, "rel")
}
