package enforcer

import (
	"os"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/shm"
)

// Attack: a tenant zeroes its device counter, keeps its own slot honest and
// allocates three times its budget. No process is above its charge, yet the
// driver's figure for the slice's members is: the backstop acts on it in the
// first tick, picking the largest members until the rest fits.
func TestBackstopActsOnDriverTruthNotCounters(t *testing.T) {
	ts := testSlice(t, "s", 1000, "GPU-a")
	big, small := startSleeper(t, ""), startSleeper(t, "")
	claim(t, ts, big.Process.Pid, 2400) // honest slots: charged what they hold
	claim(t, ts, small.Process.Pid, 600)
	atomic.StoreUint64(&ts.Slice.Usage.Raw().Dev[0].UsedBytes, 0) // the forged counter
	drv := newFakeDriver()
	drv.procs["GPU-a"] = []DriverProcess{{HostPID: big.Process.Pid, UsedBytes: 2400},
		{HostPID: small.Process.Pid, UsedBytes: 600}}
	attr := fakeAttributor{big.Process.Pid: "s", small.Process.Pid: "s"}
	k := &fakeKill{}
	l := &Loop{Mode: ModeEnforce, Driver: drv, Attributor: attr, Kill: k.kill}
	defer l.Close()

	rep := l.Tick([]TrackedSlice{ts})
	require.EqualValues(t, 3000, rep.Slices[0].Devices[0].DriverBytes)
	require.Zero(t, rep.Slices[0].Devices[0].UsedBytes, "the counter says nothing is used")
	require.Len(t, rep.Backstop, 1)
	require.Equal(t, big.Process.Pid, rep.Backstop[0].HostPID, "the largest member goes first")
	require.Equal(t, []int{big.Process.Pid}, k.pids, "what is left (600) fits: the small one lives")

	// Report mode reports the same and kills nothing.
	k2 := &fakeKill{}
	l2 := &Loop{Mode: ModeReport, Driver: drv, Attributor: attr, Kill: k2.kill}
	defer l2.Close()
	rep = l2.Tick([]TrackedSlice{ts})
	require.Len(t, rep.Backstop, 1)
	require.Equal(t, ActionReported, rep.Backstop[0].Action)
	require.Empty(t, k2.pids)
}

// Attack: a tenant plants LIVE slots naming processes that are not its own —
// a process of another slice, a process in no slice, the daemon's own — with
// their real start times. Its slice goes over its budget only if their memory
// counted. Nothing is counted for it, nobody is signalled, and the other
// slice's figures are its own.
func TestPlantedSlotsNeverAimTheBackstop(t *testing.T) {
	attacker := testSlice(t, "attacker", 100, "GPU-a")
	victimSlice := testSlice(t, "victim", 1<<30, "GPU-a")
	victim, outsider := startSleeper(t, ""), startSleeper(t, "")
	for _, pid := range []int{victim.Process.Pid, outsider.Process.Pid, os.Getpid()} {
		for i := 0; i < 20; i++ { // planted again and again: slots are cheap
			claim(t, attacker, pid)
		}
	}
	drv := newFakeDriver()
	drv.procs["GPU-a"] = []DriverProcess{{HostPID: victim.Process.Pid, UsedBytes: 5000},
		{HostPID: outsider.Process.Pid, UsedBytes: 5000}, {HostPID: os.Getpid(), UsedBytes: 5000}}
	attr := fakeAttributor{victim.Process.Pid: "victim"} // the kernel's view
	k := &fakeKill{}
	l := &Loop{Mode: ModeEnforce, Driver: drv, Attributor: attr, Kill: k.kill}
	defer l.Close()

	for tick := 0; tick < 5; tick++ {
		rep := l.Tick([]TrackedSlice{attacker, victimSlice})
		require.Empty(t, rep.Backstop)
		require.Zero(t, rep.Slices[0].Devices[0].MemberDriverBytes, "claims add nothing the backstop counts")
		require.EqualValues(t, 10000, rep.Slices[0].Devices[0].DriverBytes,
			"shown as claims: the two processes in no slice (the victim is the kernel's to place)")
		require.EqualValues(t, 5000, rep.Slices[1].Devices[0].DriverBytes)
		require.EqualValues(t, 5000, rep.Slices[1].Devices[0].MemberDriverBytes)
		for _, p := range rep.Slices[0].Processes {
			require.False(t, p.Member, "a slot is a claim, not membership: %+v", p)
		}
	}
	require.Empty(t, k.pids)
	require.EqualValues(t, shm.SlotLive, atomic.LoadUint64(&attacker.Slice.Usage.RawSlot(0).Owner)&shm.SlotStateMask)
}
