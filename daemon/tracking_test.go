package daemon

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/containers"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/tracker"
)

// fakeTracker knows a fixed set of processes (the parts of tracker.Tracker
// the mapper and the attribution use).
type fakeTracker struct {
	tracker.Tracker
	procs []tracker.Process
}

func (f fakeTracker) Processes() []tracker.Process { return f.procs }

func (f fakeTracker) Lookup(pid int) (tracker.Process, bool) {
	for _, p := range f.procs {
		if p.PID == pid {
			return p, true
		}
	}
	return tracker.Process{}, false
}

func (f fakeTracker) FindInNamespace(ns uint64, nspid int, start uint64) (tracker.Process, bool) {
	for _, p := range f.procs {
		if p.PIDNamespace == ns && p.NSPID == nspid && p.StartTime == start && ns != 0 && start != 0 {
			return p, true
		}
	}
	return tracker.Process{}, false
}

// A slot of a process in another pid namespace is mapped to its host pid
// from the tracker's record, with no /proc scan; a process the tracker does
// not know goes to the procfs scanner (here an empty /proc: not found).
func TestTrackedMapperAnswersFromTheTracker(t *testing.T) {
	ts := &trackerState{t: fakeTracker{procs: []tracker.Process{
		{PID: 4242, NSPID: 7, PIDNamespace: 4026532999, StartTime: 123456, CgroupPath: "/k8s.io/web-1"}}}}
	procfs := enforcer.NewProcfsMapper(t.TempDir())
	m := trackedMapper{tracker: func() *trackerState { return ts }, procfs: procfs}

	hp, res := m.Resolve(shm.SlotIdentity{PID: 7, PIDNamespace: 4026532999, StartTime: 123456})
	require.Equal(t, enforcer.MapFound, res)
	require.Equal(t, 4242, hp)
	require.Zero(t, procfs.Scans(), "no /proc scan for a process the tracker knows")

	for _, id := range []shm.SlotIdentity{
		{PID: 7, PIDNamespace: 4026532999, StartTime: 99},                     // another process, same pid
		{PID: 7, PIDNamespace: 4026532999, StartTime: 123456, Claiming: true}, // identity not written yet
	} {
		_, res = m.Resolve(id)
		require.NotEqual(t, enforcer.MapFound, res, "%+v", id)
	}
	require.Positive(t, procfs.Scans(), "what the tracker does not know is looked up in /proc")

	none := trackedMapper{tracker: func() *trackerState { return nil }, procfs: enforcer.NewProcfsMapper(t.TempDir())}
	_, ok := none.HostPID(shm.SlotIdentity{PID: 7, PIDNamespace: 4026532999, StartTime: 123456})
	require.False(t, ok, "without a tracker: only /proc")
}

// The tracker's cgroup paths attribute GPU holders to their container's
// slice under any container id (not only 64-hex ones), with no /proc read.
func TestTrackerCgroupAttribution(t *testing.T) {
	ts := &trackerState{t: fakeTracker{procs: []tracker.Process{
		{PID: 10, CgroupPath: "/k8s.io/web-1"},
		{PID: 11, CgroupPath: "/k8s.io/web-1"},
		{PID: 12, CgroupPath: "/system.slice/docker-0123abcd.scope"},
		{PID: 13, CgroupPath: "/user.slice"},
	}}}
	attr := containers.NewCgroupAttributor(t.TempDir()) // an empty /proc: only the tracker answers
	attr.Known = ts.cgroupOf
	attr.Set("web-1", "slice-web")
	attr.Set("0123abcd", "slice-docker")

	require.Equal(t, map[string]int{"slice-web": 2, "slice-docker": 1}, ts.sliceHolders(attr))
	for pid, want := range map[int]string{10: "slice-web", 12: "slice-docker", 13: "", 99: ""} {
		got, _ := attr.SliceOf(pid)
		require.Equal(t, want, got, "pid %d", pid)
	}
	var off *trackerState
	require.Nil(t, off.sliceHolders(attr))
}
