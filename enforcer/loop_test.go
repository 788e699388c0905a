package enforcer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeDriver answers Processes from a table; errs makes a device fail.
type fakeDriver struct {
	procs map[string][]DriverProcess
	errs  map[string]error
	calls map[string]int
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{procs: map[string][]DriverProcess{}, errs: map[string]error{}, calls: map[string]int{}}
}

func (f *fakeDriver) Processes(uuid string) ([]DriverProcess, error) {
	f.calls[uuid]++
	if err := f.errs[uuid]; err != nil {
		return nil, err
	}
	return f.procs[uuid], nil
}

type fakeAttributor map[int]string

func (a fakeAttributor) SliceOf(hostPID int) (string, bool) {
	id, ok := a[hostPID]
	return id, ok
}

// fakeKill records the pids it is asked to kill and kills nothing.
type fakeKill struct {
	pids []int
	err  error
}

func (k *fakeKill) kill(hostPID int) error {
	k.pids = append(k.pids, hostPID)
	return k.err
}

// testSlice creates a slice with one device per uuid, each limited to limit.
func testSlice(t *testing.T, id string, limit uint64, uuids ...string) TrackedSlice {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	spec := shm.SliceSpec{ID: id, Slots: 64, QoS: shm.QoSBurstable, Priority: 3}
	for d, u := range uuids {
		spec.Devices = append(spec.Devices, shm.DeviceBudget{Index: uint32(d), UUID: u, MemoryLimit: limit})
	}
	require.NoError(t, shm.CreateSlice(dir, spec))
	sl, err := shm.OpenSlice(dir)
	require.NoError(t, err)
	t.Cleanup(func() { sl.Close() })
	return TrackedSlice{ID: id, Slice: sl, UUIDs: uuids}
}

// claim claims a slot for the process pid (in our namespace) and charges it
// bytes[d] on each device.
func claim(t *testing.T, ts TrackedSlice, pid int, bytes ...uint64) int {
	t.Helper()
	id, err := ProcessIdentity(pid)
	require.NoError(t, err)
	return claimID(t, ts, id, bytes...)
}

func claimID(t *testing.T, ts TrackedSlice, id shm.SlotIdentity, bytes ...uint64) int {
	t.Helper()
	slot, err := ts.Slice.Usage.ClaimSlot(id)
	require.NoError(t, err)
	for d, n := range bytes {
		require.True(t, ts.Slice.Usage.Charge(slot, d, n, 1<<50))
	}
	return slot
}

// deadIdentity returns the identity of a child that has exited and been reaped.
func deadIdentity(t *testing.T) shm.SlotIdentity {
	t.Helper()
	c := startSleeper(t, "")
	id, err := ProcessIdentity(c.Process.Pid)
	require.NoError(t, err)
	require.NoError(t, c.Process.Kill())
	_, _ = c.Process.Wait()
	return id
}

func findProc(t *testing.T, s SliceSnapshot, hostPID int) ProcessSnapshot {
	t.Helper()
	for _, p := range s.Processes {
		if p.HostPID == hostPID {
			return p
		}
	}
	t.Fatalf("slice %s: no process with host pid %d in %+v", s.ID, hostPID, s.Processes)
	return ProcessSnapshot{}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"off", "report", "enforce"} {
		m, err := ParseMode(s)
		require.NoError(t, err)
		require.Equal(t, Mode(s), m)
	}
	_, err := ParseMode("kill")
	require.Error(t, err)
}

func TestTickReclaimsDeadProcessInOneTick(t *testing.T) {
	for _, pidfd := range []bool{true, false} {
		t.Run(fmt.Sprintf("pidfd=%v", pidfd), func(t *testing.T) {
			ts := testSlice(t, "s1", 1<<30, "GPU-a", "GPU-b")
			self := os.Getpid()
			selfSlot := claim(t, ts, self, 100, 10)
			claimID(t, ts, deadIdentity(t), 300, 30)
			require.EqualValues(t, 400, ts.Slice.Usage.DeviceUsed(0))

			l := &Loop{Mode: ModeReport, DisablePidfd: !pidfd}
			defer l.Close()
			rep := l.Tick([]TrackedSlice{ts})
			require.Empty(t, rep.Errors)
			require.EqualValues(t, 330, rep.ReclaimedBytes)
			require.Len(t, rep.Reclaimed, 1)
			require.Equal(t, []uint64{300, 30}, rep.Reclaimed[0].FreedBytes)
			require.EqualValues(t, 100, ts.Slice.Usage.DeviceUsed(0))
			require.EqualValues(t, 10, ts.Slice.Usage.DeviceUsed(1))

			// The snapshot: the live process, mapped to its host pid, which is
			// recorded in its slot.
			require.Len(t, rep.Slices, 1)
			s := rep.Slices[0]
			require.Equal(t, "s1", s.ID)
			require.EqualValues(t, shm.QoSBurstable, s.QoS)
			require.EqualValues(t, 3, s.Priority)
			require.Len(t, s.Devices, 2)
			require.Equal(t, "GPU-a", s.Devices[0].UUID)
			require.EqualValues(t, 1<<30, s.Devices[0].LimitBytes)
			require.EqualValues(t, 100, s.Devices[0].UsedBytes)
			require.EqualValues(t, 400, s.Devices[0].PeakBytes)
			require.EqualValues(t, 300, s.Devices[0].ReclaimedBytesTotal)
			require.Len(t, s.Processes, 1)
			p := s.Processes[0]
			require.Equal(t, self, p.PID)
			require.Equal(t, self, p.HostPID)
			require.Equal(t, selfSlot, p.Slot)
			require.Equal(t, []uint64{100, 10}, p.UsedBytes)
			require.Nil(t, p.DriverBytes, "no driver: no driver figures")
			info, ok := ts.Slice.Usage.Slot(selfSlot)
			require.True(t, ok)
			require.Equal(t, self, info.HostPID)

			rep = l.Tick([]TrackedSlice{ts})
			require.Zero(t, rep.ReclaimedBytes)
			require.EqualValues(t, 330, rep.Totals.ReclaimedBytes)
			require.EqualValues(t, 1, rep.Totals.ReclaimedProcesses)
			require.EqualValues(t, 2, rep.Totals.Ticks)
			require.EqualValues(t, 2, rep.Seq)
		})
	}
}

// A process that dies after the loop has started watching it is noticed in
// the next tick (pidfd poll or /proc), zombie or reaped.
func TestTickReclaimsProcessThatDiesLater(t *testing.T) {
	for _, pidfd := range []bool{true, false} {
		for _, reap := range []bool{true, false} {
			t.Run(fmt.Sprintf("pidfd=%v/reap=%v", pidfd, reap), func(t *testing.T) {
				ts := testSlice(t, "s", 1<<30, "GPU-a")
				c := startSleeper(t, "")
				claim(t, ts, c.Process.Pid, 512)
				l := &Loop{Mode: ModeReport, DisablePidfd: !pidfd}
				defer l.Close()
				for i := 0; i < 3; i++ {
					rep := l.Tick([]TrackedSlice{ts})
					require.Zero(t, rep.ReclaimedBytes)
					require.Len(t, rep.Slices[0].Processes, 1)
				}
				require.NoError(t, c.Process.Kill())
				if reap {
					_, _ = c.Process.Wait()
				} else {
					require.Eventually(t, func() bool {
						return isZombie(c.Process.Pid)
					}, 10*time.Second, 5*time.Millisecond)
				}
				rep := l.Tick([]TrackedSlice{ts})
				require.EqualValues(t, 512, rep.ReclaimedBytes)
				require.Equal(t, c.Process.Pid, rep.Reclaimed[0].HostPID)
				require.Empty(t, rep.Slices[0].Processes)
				require.Zero(t, ts.Slice.Usage.DeviceUsed(0))
			})
		}
	}
}

// New processes attaching between ticks show up in the next tick; a process
// that releases its slot disappears; a slot being claimed is never reclaimed.
func TestTickFollowsAttachAndRelease(t *testing.T) {
	ts := testSlice(t, "s", 1<<30, "GPU-a")
	l := &Loop{Mode: ModeReport}
	defer l.Close()
	rep := l.Tick([]TrackedSlice{ts})
	require.Empty(t, rep.Slices[0].Processes)

	a := startSleeper(t, "")
	slotA := claim(t, ts, a.Process.Pid, 5)
	rep = l.Tick([]TrackedSlice{ts})
	require.Len(t, rep.Slices[0].Processes, 1)
	require.Equal(t, a.Process.Pid, rep.Slices[0].Processes[0].HostPID)

	require.NoError(t, ts.Slice.Usage.ReleaseSlot(slotA))
	rep = l.Tick([]TrackedSlice{ts})
	require.Empty(t, rep.Slices[0].Processes)
	require.Zero(t, rep.ReclaimedBytes)

	// A slot stuck in CLAIMING with a dead pid: its identity is unknown, so
	// it is left alone.
	dead := deadIdentity(t)
	s := ts.Slice.Usage.RawSlot(7)
	atomic.StoreUint64(&s.Owner, shm.SlotOwner(dead.PID, shm.SlotClaiming))
	atomic.AddUint64(&ts.Slice.Usage.Raw().AttachCount, 1)
	for i := 0; i < 3; i++ {
		rep = l.Tick([]TrackedSlice{ts})
		require.Zero(t, rep.ReclaimedBytes)
		require.Len(t, rep.Slices[0].Processes, 1)
		require.Zero(t, rep.Slices[0].Processes[0].HostPID)
	}
	require.EqualValues(t, shm.SlotOwner(dead.PID, shm.SlotClaiming), atomic.LoadUint64(&s.Owner))
}

// The periodic full scan finds what the attach counter does not announce: a
// slot a crashed reclaimer left in RECLAIMING, and a slot claimed by a writer
// that never bumped the counter.
func TestTickPeriodicFullScan(t *testing.T) {
	ts := testSlice(t, "s", 1<<30, "GPU-a")
	l := &Loop{Mode: ModeReport, FullScanEvery: 5}
	defer l.Close()
	l.Tick([]TrackedSlice{ts})

	// A slot left in RECLAIMING by a reclaimer that died half-way: the next
	// full pass (here: announced by the attach counter) finishes it.
	slot := claimID(t, ts, deadIdentity(t), 77)
	s := ts.Slice.Usage.RawSlot(slot)
	atomic.StoreUint64(&s.Owner, atomic.LoadUint64(&s.Owner)&^shm.SlotStateMask|shm.SlotReclaiming)
	l.Tick([]TrackedSlice{ts})
	require.Zero(t, ts.Slice.Usage.DeviceUsed(0))
	require.EqualValues(t, shm.SlotFree, atomic.LoadUint64(&s.Owner))

	claimID(t, ts, deadIdentity(t), 99)
	atomic.AddUint64(&ts.Slice.Usage.Raw().AttachCount, ^uint64(0)) // undo the bump
	var freed uint64
	for i := 0; i < 6; i++ {
		freed += l.Tick([]TrackedSlice{ts}).ReclaimedBytes
	}
	require.EqualValues(t, 99, freed)
	require.Zero(t, ts.Slice.Usage.DeviceUsed(0))
}

// backstopFixture: one slice "s" (limit 1000 on GPU-a) whose process is this
// test (charged 500), and a driver that reports 1500 for it.
func backstopFixture(t *testing.T, mode Mode) (*Loop, TrackedSlice, *fakeDriver, *fakeKill, *observer.ObservedLogs) {
	ts := testSlice(t, "s", 1000, "GPU-a")
	claim(t, ts, os.Getpid(), 500)
	drv := newFakeDriver()
	drv.procs["GPU-a"] = []DriverProcess{{HostPID: os.Getpid(), UsedBytes: 1500}, {HostPID: 424242, UsedBytes: 9999}}
	k := &fakeKill{}
	core, logs := observer.New(zapcore.DebugLevel)
	// The kernel places this test's process in "s" (the daemon's Attributor:
	// cgroup, owner subtree); 424242 is in no slice.
	attr := fakeAttributor{os.Getpid(): "s"}
	l := &Loop{Mode: mode, Driver: drv, Attributor: attr, Kill: k.kill, Log: zap.New(core)}
	t.Cleanup(func() { l.Close() })
	return l, ts, drv, k, logs
}

func TestBackstopReportMode(t *testing.T) {
	l, ts, drv, k, logs := backstopFixture(t, ModeReport)
	rep := l.Tick([]TrackedSlice{ts})
	require.Empty(t, rep.Errors)
	require.Equal(t, 1, drv.calls["GPU-a"])
	require.Len(t, rep.Backstop, 1)
	ev := rep.Backstop[0]
	require.Equal(t, BackstopEvent{Slice: "s", Device: "GPU-a", DeviceIndex: 0, PID: os.Getpid(),
		HostPID: os.Getpid(), DriverBytes: 1500, ChargedBytes: 500, SliceBytes: 1500, LimitBytes: 1000,
		Action: ActionReported}, ev)
	require.Empty(t, k.pids, "report mode never kills")

	s := rep.Slices[0]
	require.True(t, s.Devices[0].DriverKnown)
	require.EqualValues(t, 1500, s.Devices[0].DriverBytes)
	require.EqualValues(t, 1, s.Devices[0].BackstopEventsTotal)
	require.Equal(t, []uint64{1500}, findProc(t, s, os.Getpid()).DriverBytes)
	require.Len(t, s.Processes, 1, "the unattributed driver process is in no slice")
	require.Equal(t, []DriverDevice{{UUID: "GPU-a", Processes: 2, ProcessBytes: 11499}}, rep.Devices)

	warn := logs.FilterMessageSnippet("backstop").All()
	require.Len(t, warn, 1)
	require.Equal(t, zapcore.WarnLevel, warn[0].Level)
	f := warn[0].ContextMap()
	require.Equal(t, "s", f["slice"])
	require.EqualValues(t, os.Getpid(), f["host_pid"])
	require.EqualValues(t, 1500, f["driver_bytes"])
	require.EqualValues(t, 1000, f["limit_bytes"])
	require.Equal(t, ActionReported, f["action"])

	// Still over on the next tick: the same violation, counted once.
	rep = l.Tick([]TrackedSlice{ts})
	require.Empty(t, rep.Backstop)
	require.EqualValues(t, 1, rep.Totals.BackstopEvents)
	require.EqualValues(t, 1, rep.Slices[0].Devices[0].BackstopEventsTotal)

	// Back under the limit, then over again: a new event.
	drv.procs["GPU-a"] = []DriverProcess{{HostPID: os.Getpid(), UsedBytes: 500}}
	require.Empty(t, l.Tick([]TrackedSlice{ts}).Backstop)
	drv.procs["GPU-a"] = []DriverProcess{{HostPID: os.Getpid(), UsedBytes: 2000}}
	rep = l.Tick([]TrackedSlice{ts})
	require.Len(t, rep.Backstop, 1)
	require.EqualValues(t, 2, rep.Totals.BackstopEvents)
	require.EqualValues(t, 2, rep.Slices[0].Devices[0].BackstopEventsTotal)
	require.Empty(t, k.pids)
}

func TestBackstopEnforceModeKills(t *testing.T) {
	l, ts, _, k, logs := backstopFixture(t, ModeEnforce)
	rep := l.Tick([]TrackedSlice{ts})
	require.Len(t, rep.Backstop, 1)
	require.Equal(t, ActionKilled, rep.Backstop[0].Action)
	require.Equal(t, []int{os.Getpid()}, k.pids)
	require.EqualValues(t, 1, rep.Totals.Kills)
	entries := logs.FilterMessageSnippet("backstop").All()
	require.Len(t, entries, 1)
	require.Equal(t, ActionKilled, entries[0].ContextMap()["action"])

	// Still there next tick (a dying process takes time to let go of the
	// GPU): killed again, counted once.
	rep = l.Tick([]TrackedSlice{ts})
	require.Empty(t, rep.Backstop)
	require.Equal(t, []int{os.Getpid(), os.Getpid()}, k.pids)

	// A failing kill is reported as such.
	l2, ts2, _, k2, _ := backstopFixture(t, ModeEnforce)
	k2.err = errors.New("operation not permitted")
	rep = l2.Tick([]TrackedSlice{ts2})
	require.Len(t, rep.Backstop, 1)
	require.Equal(t, ActionKillFailed, rep.Backstop[0].Action)
	require.Equal(t, "operation not permitted", rep.Backstop[0].Err)
	require.Zero(t, rep.Totals.Kills)
}

func TestBackstopOffModeDoesNothing(t *testing.T) {
	l, ts, drv, k, logs := backstopFixture(t, ModeOff)
	rep := l.Tick([]TrackedSlice{ts})
	require.Empty(t, rep.Backstop)
	require.Empty(t, k.pids)
	require.Zero(t, logs.FilterMessageSnippet("backstop").Len())
	require.Zero(t, rep.Totals.BackstopEvents)
	// Figures are still collected (vgpuctl top shows them).
	require.Equal(t, 1, drv.calls["GPU-a"])
	require.EqualValues(t, 1500, rep.Slices[0].Devices[0].DriverBytes)
}

func TestBackstopTolerance(t *testing.T) {
	ts := testSlice(t, "s", 1000, "GPU-a")
	claim(t, ts, os.Getpid(), 500)
	drv := newFakeDriver()
	k := &fakeKill{}
	attr := fakeAttributor{os.Getpid(): "s"}
	l := &Loop{Mode: ModeEnforce, Driver: drv, Attributor: attr, Kill: k.kill, Tolerance: 200}
	defer l.Close()

	// Slice total within limit+tolerance: nobody is a violator, even a
	// process far above its charge.
	drv.procs["GPU-a"] = []DriverProcess{{HostPID: os.Getpid(), UsedBytes: 1200}}
	require.Empty(t, l.Tick([]TrackedSlice{ts}).Backstop)

	// Slice over, but the process within its charge+tolerance: not a violator.
	other := startSleeper(t, "")
	claim(t, ts, other.Process.Pid, 400)
	attr[other.Process.Pid] = "s"
	drv.procs["GPU-a"] = []DriverProcess{
		{HostPID: os.Getpid(), UsedBytes: 700},
		{HostPID: other.Process.Pid, UsedBytes: 601},
	}
	rep := l.Tick([]TrackedSlice{ts})
	require.EqualValues(t, 1301, rep.Slices[0].Devices[0].DriverBytes)
	require.Len(t, rep.Backstop, 1, "only the process above charge+tolerance")
	require.Equal(t, other.Process.Pid, rep.Backstop[0].HostPID)
	require.Equal(t, []int{other.Process.Pid}, k.pids)
}

// A process without a slot (it bypassed libvgpu) that the Attributor places in
// a slice over its limit is a violator; one attributed to no tracked slice, or
// in a slice within its limit, is not.
func TestBackstopSlotlessProcess(t *testing.T) {
	over := testSlice(t, "over", 1000, "GPU-a")
	under := testSlice(t, "under", 1<<30, "GPU-a")
	claim(t, over, os.Getpid(), 100)
	drv := newFakeDriver()
	drv.procs["GPU-a"] = []DriverProcess{
		{HostPID: os.Getpid(), UsedBytes: 100},
		{HostPID: 900001, UsedBytes: 4000}, // bypass, in "over"
		{HostPID: 900002, UsedBytes: 4000}, // bypass, in "under"
		{HostPID: 900003, UsedBytes: 4000}, // attributed to an unknown slice
		{HostPID: 900004, UsedBytes: 4000}, // not attributed
	}
	attr := fakeAttributor{os.Getpid(): "over", 900001: "over", 900002: "under", 900003: "gone"}
	k := &fakeKill{}
	l := &Loop{Mode: ModeEnforce, Driver: drv, Attributor: attr, Kill: k.kill}
	defer l.Close()
	rep := l.Tick([]TrackedSlice{over, under})
	require.Empty(t, rep.Errors)
	require.Len(t, rep.Backstop, 1)
	ev := rep.Backstop[0]
	require.Equal(t, "over", ev.Slice)
	require.Equal(t, 900001, ev.HostPID)
	require.Zero(t, ev.PID)
	require.Zero(t, ev.ChargedBytes)
	require.EqualValues(t, 4100, ev.SliceBytes)
	require.Equal(t, []int{900001}, k.pids)

	p := findProc(t, rep.Slices[0], 900001)
	require.Equal(t, -1, p.Slot)
	require.Equal(t, []uint64{4000}, p.DriverBytes)
	require.Equal(t, []uint64{0}, p.UsedBytes)
	u := findProc(t, rep.Slices[1], 900002)
	require.Equal(t, -1, u.Slot)
	require.EqualValues(t, 4000, rep.Slices[1].Devices[0].DriverBytes)
	require.Len(t, rep.Slices[1].Processes, 1)
}

// A driver error on one device is reported and does not stop the tick: the
// other device's slices are still checked and acted on.
func TestBackstopDriverErrorOnOneDevice(t *testing.T) {
	a := testSlice(t, "a", 1000, "GPU-a")
	b := testSlice(t, "b", 1000, "GPU-b")
	claim(t, a, os.Getpid(), 100)
	c := startSleeper(t, "")
	claim(t, b, c.Process.Pid, 100)
	drv := newFakeDriver()
	drv.errs["GPU-a"] = errors.New("NVML: GPU is lost")
	drv.procs["GPU-b"] = []DriverProcess{{HostPID: c.Process.Pid, UsedBytes: 5000}}
	k := &fakeKill{}
	attr := fakeAttributor{os.Getpid(): "a", c.Process.Pid: "b"}
	l := &Loop{Mode: ModeEnforce, Driver: drv, Attributor: attr, Kill: k.kill}
	defer l.Close()
	rep := l.Tick([]TrackedSlice{a, b})
	require.Equal(t, []TickError{{Device: "GPU-a", Err: "driver processes: NVML: GPU is lost"}}, rep.Errors)
	require.Equal(t, "device GPU-a: driver processes: NVML: GPU is lost", rep.Errors[0].String())
	require.False(t, rep.Slices[0].Devices[0].DriverKnown)
	require.True(t, rep.Slices[1].Devices[0].DriverKnown)
	require.Len(t, rep.Backstop, 1)
	require.Equal(t, "b", rep.Backstop[0].Slice)
	require.Equal(t, []int{c.Process.Pid}, k.pids)
	require.Equal(t, "NVML: GPU is lost", rep.Devices[0].Err)
	require.EqualValues(t, 1, rep.Totals.Errors)
}

// One driver call per device per tick, however many slices share it.
func TestOneDriverCallPerDevice(t *testing.T) {
	drv := newFakeDriver()
	var slices []TrackedSlice
	for i := 0; i < 10; i++ {
		slices = append(slices, testSlice(t, fmt.Sprintf("s%d", i), 1<<30, "GPU-a", "GPU-b"))
	}
	l := &Loop{Mode: ModeReport, Driver: drv}
	defer l.Close()
	l.Tick(slices)
	l.Tick(slices)
	require.Equal(t, map[string]int{"GPU-a": 2, "GPU-b": 2}, drv.calls)
}

// A slice whose usage file was truncated under its mapping (a tenant can do
// that) is reported; the other slices are still handled.
func TestTickSurvivesTruncatedUsageFile(t *testing.T) {
	bad := testSlice(t, "bad", 1<<30, "GPU-a")
	good := testSlice(t, "good", 1<<30, "GPU-a")
	claimID(t, good, deadIdentity(t), 64)
	claim(t, bad, os.Getpid(), 1)
	require.NoError(t, os.Truncate(bad.Slice.Usage.Path(), 0))
	l := &Loop{Mode: ModeReport}
	defer l.Close()
	rep := l.Tick([]TrackedSlice{bad, good})
	require.Len(t, rep.Errors, 1)
	require.Equal(t, "bad", rep.Errors[0].Slice)
	require.Contains(t, rep.Errors[0].Err, shm.ErrTruncated.Error())
	require.EqualValues(t, 64, rep.ReclaimedBytes)

	// A slice passed without regions is an error too, not a crash.
	rep = l.Tick([]TrackedSlice{{ID: "empty"}, good})
	require.Len(t, rep.Errors, 1)
	require.Equal(t, "empty", rep.Errors[0].Slice)
}

// A process in another pid namespace is mapped to its host pid through the
// Mapper, recorded in its slot, and its charge returned when it dies. Without
// a mapper it is never judged.
func TestTickOtherPIDNamespace(t *testing.T) {
	c := startInPIDNamespace(t)
	ts := testSlice(t, "ns", 1<<30, "GPU-a")
	id := nsIdentity(t, c.grandchild, 2)
	slot := claimID(t, ts, id, 256)

	unmapped := &Loop{Mode: ModeReport}
	defer unmapped.Close()
	rep := unmapped.Tick([]TrackedSlice{ts})
	require.Zero(t, rep.Slices[0].Processes[0].HostPID)

	drv := newFakeDriver()
	drv.procs["GPU-a"] = []DriverProcess{{HostPID: c.grandchild, UsedBytes: 256}}
	l := &Loop{Mode: ModeReport, Mapper: NewProcfsMapper(""), Driver: drv}
	defer l.Close()
	rep = l.Tick([]TrackedSlice{ts})
	require.Empty(t, rep.Errors)
	p := rep.Slices[0].Processes[0]
	require.Equal(t, 2, p.PID)
	require.Equal(t, c.grandchild, p.HostPID)
	require.Equal(t, []uint64{256}, p.DriverBytes)
	info, ok := ts.Slice.Usage.Slot(slot)
	require.True(t, ok)
	require.Equal(t, c.grandchild, info.HostPID)

	require.NoError(t, syscall.Kill(c.grandchild, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		return l.Tick([]TrackedSlice{ts}).ReclaimedBytes == 256
	}, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, ts.Slice.Usage.DeviceUsed(0))

	// Without a mapper, a dead process of another namespace is never judged:
	// its charge stays (the safe direction).
	id1 := nsIdentity(t, c.hostPID, 1)
	claimID(t, ts, id1, 128)
	require.NoError(t, c.cmd.Process.Kill())
	_ = c.cmd.Wait()
	for i := 0; i < 3; i++ {
		require.Zero(t, unmapped.Tick([]TrackedSlice{ts}).ReclaimedBytes)
	}
	require.EqualValues(t, 128, l.Tick([]TrackedSlice{ts}).ReclaimedBytes+
		l.Tick([]TrackedSlice{ts}).ReclaimedBytes)
}

// Forgotten slices are dropped from the loop's state; watched processes whose
// slots are gone have their pidfds closed.
func TestTickForgetsSlicesAndProcesses(t *testing.T) {
	a := testSlice(t, "a", 1<<30, "GPU-a")
	b := testSlice(t, "b", 1<<30, "GPU-a")
	c := startSleeper(t, "")
	slot := claim(t, a, c.Process.Pid, 1)
	claim(t, b, os.Getpid(), 1)
	l := &Loop{Mode: ModeReport}
	defer l.Close()
	l.Tick([]TrackedSlice{a, b})
	require.Len(t, l.states, 2)
	require.Len(t, l.procs, 2)
	fd := l.procs[procKey{ns: procfs.SelfPIDNamespace(), pid: c.Process.Pid, start: mustStart(t, c.Process.Pid)}].fd
	require.GreaterOrEqual(t, fd, 0)
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	require.NoError(t, err)
	require.Equal(t, "anon_inode:[pidfd]", link)

	require.NoError(t, a.Slice.Usage.ReleaseSlot(slot))
	l.Tick([]TrackedSlice{a, b})
	l.Tick([]TrackedSlice{b})
	require.Len(t, l.states, 1)
	require.Len(t, l.procs, 1)
	// The number may have been reused since, but not for a pidfd.
	link, _ = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	require.NotEqual(t, "anon_inode:[pidfd]", link, "the pidfd of a process no slot names is closed")
}

func mustStart(t *testing.T, pid int) uint64 {
	id, err := ProcessIdentity(pid)
	require.NoError(t, err)
	return id.StartTime
}

// In steady state a tick's allocations do not grow with the number of slices
// or processes (the report is allocated in bulk).
func TestTickAllocationsDoNotGrowWithSlices(t *testing.T) {
	allocs := func(n int) float64 {
		drv := newFakeDriver()
		var slices []TrackedSlice
		for i := 0; i < n; i++ {
			ts := testSlice(t, fmt.Sprintf("s%d", i), 1<<30, "GPU-a")
			claim(t, ts, os.Getpid(), 1)
			slices = append(slices, ts)
		}
		drv.procs["GPU-a"] = []DriverProcess{{HostPID: os.Getpid(), UsedBytes: 1}}
		l := &Loop{Mode: ModeEnforce, Driver: drv, Kill: (&fakeKill{}).kill, FullScanEvery: 1 << 30}
		defer l.Close()
		l.Tick(slices)
		l.Tick(slices)
		return testing.AllocsPerRun(20, func() { l.Tick(slices) })
	}
	small, large := allocs(4), allocs(200)
	t.Logf("allocations per tick: %v with 4 slices, %v with 200", small, large)
	require.LessOrEqual(t, large, small+2, "allocations per tick: %v with 4 slices, %v with 200", small, large)
	require.LessOrEqual(t, large, 16.0)
}

func TestNextPhase(t *testing.T) {
	require.EqualValues(t, 105, nextPhase(100, 5, 10))
	require.EqualValues(t, 110, nextPhase(100, 0, 10))
	require.EqualValues(t, 110, nextPhase(105, 0, 10))
	require.EqualValues(t, 115, nextPhase(105, 5, 10))
	require.EqualValues(t, 2, nextPhase(1, 0, 1))
}

// Periodic full scans are spread: with FullScanEvery ticks, each tick scans
// about len(slices)/FullScanEvery slices, even when every slice had its first
// scan in the same tick.
func TestFullScansAreSpread(t *testing.T) {
	const n, every = 40, 10
	var slices []TrackedSlice
	for i := 0; i < n; i++ {
		ts := testSlice(t, fmt.Sprintf("s%d", i), 1<<30, "GPU-a")
		claim(t, ts, os.Getpid(), 1) // attach != 0: all scanned in the first tick
		slices = append(slices, ts)
	}
	l := &Loop{Mode: ModeReport, FullScanEvery: every}
	defer l.Close()
	l.Tick(slices)
	for i := 0; i < 3*every; i++ {
		l.Tick(slices)
		due := 0
		for _, st := range l.states {
			if st.nextFull == l.gen+1 {
				due++
			}
		}
		require.Equal(t, n/every, due, "tick %d", l.gen)
	}
}
