package daemon

import (
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/testdev"
	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// trackedNode is a one-device simulated node whose contexts open a stand-in
// character device (the tracker follows its major in place of NVIDIA's 195);
// it returns the vgpud flags that make the tracker follow it.
func trackedNode(t *testing.T) (*node, []string) {
	t.Helper()
	nd := newNode(t, 1, 16*GiB)
	_, major, _, err := testdev.StandIn(nd.dir, "vgpusim0")
	require.NoError(t, err)
	require.NoError(t, simgpu.Init(nd.state, simgpu.Config{Devices: 1, Memory: 16 * GiB, SMs: 132,
		DeviceNodes: filepath.Join(nd.dir, "vgpusim%d"), Force: true}))
	return nd, []string{"--tracker-majors", strconv.FormatUint(uint64(major), 10)}
}

// A SIGKILLed tenant's charge comes back within a second of its death although
// the enforcer polls only every 5 s: the eBPF tracker sees the exit and wakes
// the enforcer (the procfs fallback, forced, does the same from its 250 ms
// scan). With the tracker off the same charge is still held a second later
// (the poll has not come), which shows the event is what returned it.
func TestExitEventReturnsChargeAtOnce(t *testing.T) {
	for _, mode := range []string{"ebpf", "procfs", "off"} {
		t.Run(mode, func(t *testing.T) {
			nd, flags := trackedNode(t)
			nd.start(append(flags, "--enforcer-interval", "5s", "--tracker", mode)...)
			h, err := nd.client.Health(bg())
			require.NoError(t, err)
			require.Equal(t, mode, h.Tracker)
			s, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "r", MemoryBytes: 2 * GiB})
			require.NoError(t, err)
			sl, err := shm.OpenSlice(s.Dir)
			require.NoError(t, err)
			defer sl.Close()
			p := nd.holder(s.Dir, "256MiB", 2)
			require.Equal(t, 768*MiB, sl.Usage.DeviceUsed(0))
			// The procfs scanner sees a process that has held the device
			// across one of its 250 ms scans (a shorter one is left to the
			// enforcer's poll).
			time.Sleep(600 * time.Millisecond)

			require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
			killed := time.Now()
			require.True(t, p.drain())
			if mode == "off" {
				time.Sleep(time.Until(killed.Add(time.Second)))
				require.Equal(t, 768*MiB, sl.Usage.DeviceUsed(0), "no event: held until the next poll")
				return
			}
			eventually(t, time.Until(killed.Add(time.Second)), "the charge returned within 1 s of the kill", func() bool {
				return sl.Usage.DeviceUsed(0) == 0
			})
			t.Logf("charge returned %v after the SIGKILL (enforcer interval 5s)", time.Since(killed).Round(time.Millisecond))
		})
	}
}

// A tenant SIGKILLed in the middle of a stream of allocations (its slot's
// charge moving under it) has all of it returned within a second, with a 5 s
// poll: nothing is left charged to the slice.
func TestKilledMidAllocationReturnsCharge(t *testing.T) {
	nd, flags := trackedNode(t)
	nd.start(append(flags, "--enforcer-interval", "5s", "--tracker", "ebpf")...)
	s, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "m", MemoryBytes: 4 * GiB})
	require.NoError(t, err)
	sl, err := shm.OpenSlice(s.Dir)
	require.NoError(t, err)
	defer sl.Close()
	p := nd.startProc(nd.env("LD_PRELOAD="+filepath.Join(nd.root, "build/libvgpu.so"), "VGPU_SLICE_DIR="+s.Dir),
		"build/test/alloc", "--api", "alloc", "--chunk", "64KiB", "--count", "30000", "--no-free")
	eventually(t, 5*time.Second, "allocating", func() bool { return sl.Usage.DeviceUsed(0) > 300*MiB })
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	require.True(t, p.drain())
	eventually(t, time.Until(killed.Add(time.Second)), "the whole charge returned within 1 s of the kill", func() bool {
		return sl.Usage.DeviceUsed(0) == 0
	})
	t.Logf("killed mid-allocation: charge returned %v after the SIGKILL", time.Since(killed).Round(time.Millisecond))
}

// A slice asked with an idle release is released that long after its last
// process exits; a plain slice is kept; and top says so meanwhile.
func TestIdleReleaseAfterLastProcess(t *testing.T) {
	nd, flags := trackedNode(t)
	nd.start(flags...)
	idle, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "idle", MemoryBytes: GiB,
		IdleRelease: units.Duration(2 * time.Second)})
	require.NoError(t, err)
	plain, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "plain", MemoryBytes: GiB})
	require.NoError(t, err)
	// The idle-release slice's process goes last, so the release is timed
	// from its exit.
	for _, dir := range []string{plain.Dir, idle.Dir} {
		p := nd.holder(dir, "64MiB", 1)
		eventually(t, 5*time.Second, "the slice is seen in use", func() bool {
			st := activityOf(t, nd, filepath.Base(dir)).State
			return st == api.ActivityActive || st == api.ActivityIdle
		})
		p.next() // frees and exits
		require.Equal(t, 0, p.wait(), p.stderr())
	}
	exited := time.Now()
	eventually(t, 2*time.Second, "both slices empty", func() bool {
		return activityOf(t, nd, "idle").State == api.ActivityEmpty && activityOf(t, nd, "plain").State == api.ActivityEmpty
	})
	a := activityOf(t, nd, "idle")
	require.True(t, a.Used)
	require.False(t, a.ReleaseAt.IsZero())
	require.InDelta(t, 2*time.Second, a.ReleaseAt.Sub(a.Since), float64(time.Millisecond))
	require.Equal(t, []uint64{GiB}, a.LendableBytes, "an empty slice could lend all of its memory")

	eventually(t, 4*time.Second, "the idle-release slice released", func() bool {
		_, err := nd.client.Get(bg(), "idle")
		return api.IsNotFound(err)
	})
	t.Logf("released %v after its process exited (idle release 2s)", time.Since(exited).Round(time.Millisecond))
	// Not before its idle release: vgpud times it from the tick that saw the
	// slice empty, which may come a few ms before this test saw its process
	// reaped.
	require.GreaterOrEqual(t, time.Since(exited), 2*time.Second-100*time.Millisecond, "not before its idle release")
	time.Sleep(time.Second)
	_, err = nd.client.Get(bg(), "plain")
	require.NoError(t, err, "a plain slice is kept")
}

// activityOf is a slice's activity from vgpud's top ("" state when absent).
func activityOf(t *testing.T, nd *node, id string) api.SliceActivity {
	t.Helper()
	top, err := nd.client.Top(bg())
	require.NoError(t, err)
	for _, u := range top {
		if u.Slice.ID == id && u.Activity != nil {
			return *u.Activity
		}
	}
	return api.SliceActivity{}
}
