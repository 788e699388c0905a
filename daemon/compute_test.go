package daemon

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// utilGPUs is a fakeGPUs that also answers per-process utilization.
type utilGPUs struct {
	*fakeGPUs
	umu     sync.Mutex
	samples map[string][]devices.ProcessUtil
	asked   []uint64 // sinceUs of every query
}

func (g *utilGPUs) ProcessUtilization(uuid string, sinceUs uint64) ([]devices.ProcessUtil, error) {
	g.umu.Lock()
	defer g.umu.Unlock()
	g.asked = append(g.asked, sinceUs)
	var out []devices.ProcessUtil
	for _, s := range g.samples[uuid] {
		if s.TimeStampUs > sinceUs {
			out = append(out, s)
		}
	}
	return out, nil
}

func (g *utilGPUs) add(uuid string, s ...devices.ProcessUtil) {
	g.umu.Lock()
	defer g.umu.Unlock()
	g.samples[uuid] = append(g.samples[uuid], s...)
}

// Samples become busy time per pid: each stands for the time since the pid's
// previous sample (or the previous query), at most a second.
func TestComputeSharesSamples(t *testing.T) {
	g := &utilGPUs{fakeGPUs: newFakeGPUs(1, 8*GiB), samples: map[string][]devices.ProcessUtil{}}
	c := newComputeShares(g, zaptest.NewLogger(t))
	uuid := g.devs[0].UUID
	st := &utilState{pidUs: map[int]uint64{}, busy: map[int]float64{}}

	g.add(uuid, devices.ProcessUtil{HostPID: 7, TimeStampUs: 10_000_000, SMPercent: 50})
	require.True(t, c.sample(uuid, st))
	require.InDelta(t, 0.5e9, st.busy[7], 1, "a first sample stands for at most a second")
	clear(st.busy)

	g.add(uuid,
		devices.ProcessUtil{HostPID: 7, TimeStampUs: 10_100_000, SMPercent: 30},
		devices.ProcessUtil{HostPID: 8, TimeStampUs: 10_100_000, SMPercent: 100},
		devices.ProcessUtil{HostPID: 7, TimeStampUs: 10_200_000, SMPercent: 10})
	require.True(t, c.sample(uuid, st))
	require.InDelta(t, 0.3*100e6+0.1*100e6, st.busy[7], 1)
	require.InDelta(t, 100e6, st.busy[8], 1, "a new pid's first sample covers the time since the last query")
	require.Equal(t, uint64(10_200_000), st.lastUs)
	require.Equal(t, []uint64{0, 10_000_000}, g.asked)

	// Without the optional interface the controllers run unmeasured.
	require.False(t, newComputeShares(newFakeGPUs(1, GiB), zaptest.NewLogger(t)).sample(uuid, st))
}

// A slice allocated with a compute share gets a token rate from the first
// tick, and the status names its target.
func TestComputeSharesSetRates(t *testing.T) {
	dir := t.TempDir()
	g := &utilGPUs{fakeGPUs: newFakeGPUs(1, 8*GiB), samples: map[string][]devices.ProcessUtil{}}
	ts := startServer(t, testConfig(dir), g)
	sl, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "c30", MemoryBytes: GiB, ComputePercent: 30,
		QoS: "burstable"})
	require.NoError(t, err)
	full, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "whole", MemoryBytes: GiB, QoS: "burstable"})
	require.NoError(t, err)

	budget := func(s api.Slice) *shm.BudgetRegion {
		b, err := shm.OpenBudget(filepath.Join(s.Dir, shm.BudgetFile), false)
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	b30, bFull := budget(sl), budget(full)
	eventually(t, 5*time.Second, "a token rate for the 30% slice", func() bool {
		rate, _ := b30.TokenBucket(0)
		return rate != 0
	})
	rate, burst := b30.TokenBucket(0)
	require.InDelta(t, 0.3e9, float64(rate), 0.3e9*0.01, "the nominal scale until something is measured")
	require.NotZero(t, burst)
	r, _ := bFull.TokenBucket(0)
	require.Zero(t, r, "a slice without a share is not throttled")

	eventually(t, 5*time.Second, "status of both slices", func() bool { return len(ts.ComputeStatus()) == 2 })
	byID := map[string]ComputeStatus{}
	for _, s := range ts.ComputeStatus() {
		byID[s.Slice] = s
	}
	require.InDelta(t, 30, byID["c30"].TargetPct, 1e-9)
	require.Equal(t, g.devs[0].UUID, byID["c30"].UUID)
	require.InDelta(t, 100, byID["whole"].TargetPct, 1e-9)

	require.NoError(t, ts.client.Release(ts.ctx, "c30"))
	eventually(t, 5*time.Second, "the released slice leaves the status", func() bool {
		return len(ts.ComputeStatus()) == 1
	})
}

// GET /v1/top shows per slice device the target, allowed and achieved share
// and the token rate; /metrics exports them. The driver reports the slice's
// process busy 30% of the time; a slice without a share shows a target of 0
// and no grant.
func TestTopShowsComputeShares(t *testing.T) {
	dir := t.TempDir()
	g := &utilGPUs{fakeGPUs: newFakeGPUs(1, 8*GiB), samples: map[string][]devices.ProcessUtil{}}
	uuid := g.devs[0].UUID
	ts := startServer(t, testConfig(dir), g)
	sl, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "c30", MemoryBytes: GiB, ComputePercent: 30,
		QoS: "burstable"})
	require.NoError(t, err)
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "whole", MemoryBytes: GiB, QoS: "burstable"})
	require.NoError(t, err)

	// A tenant process with a slot in c30, which the driver sees busy 30%.
	proc := startSleeper(t)
	id, err := enforcer.ProcessIdentity(proc.Process.Pid)
	require.NoError(t, err)
	region, err := shm.OpenSlice(sl.Dir)
	require.NoError(t, err)
	defer region.Close()
	_, err = region.Usage.ClaimSlot(id)
	require.NoError(t, err)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tk.C:
				g.add(uuid, devices.ProcessUtil{HostPID: proc.Process.Pid,
					TimeStampUs: uint64(now.UnixMicro()), SMPercent: 30})
			}
		}
	}()
	defer func() { close(stop); <-done }()

	var c30, whole api.ComputeUsage
	eventually(t, 10*time.Second, "top shows c30 achieving about 30%", func() bool {
		top, err := ts.client.Top(ts.ctx)
		require.NoError(t, err)
		require.Len(t, top, 2)
		for _, u := range top {
			require.Len(t, u.Compute, len(u.Slice.Devices))
			switch u.Slice.ID {
			case "c30":
				c30 = u.Compute[0]
			case "whole":
				whole = u.Compute[0]
			}
		}
		// A generous band: the average follows samples that land on either
		// side of a tick.
		return c30.Measured && c30.AchievedPercent > 20 && c30.AchievedPercent < 40
	})
	require.Equal(t, uuid, c30.UUID)
	require.InDelta(t, 30, c30.TargetPercent, 1e-9)
	require.InDelta(t, 30, c30.AllowedPercent, 1e-9, "cap policy alone on the device: allowed = target")
	require.NotZero(t, c30.TokenRate)

	require.Equal(t, uuid, whole.UUID)
	require.Zero(t, whole.TargetPercent, "no share asked")
	require.Zero(t, whole.AllowedPercent, "not throttled: nothing is granted")
	require.Zero(t, whole.TokenRate)
	require.True(t, whole.Measured, "the device reports per-process utilization")
	require.Zero(t, whole.AchievedPercent, "the slice has no process")

	resp, err := http.Get("http://" + ts.MetricsAddr() + "/metrics")
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	body := string(b)
	labels := `{qos="burstable",slice="c30",uuid="` + uuid + `"}`
	require.Contains(t, body, "vgpu_slice_compute_target_ratio"+labels+" 0.3\n")
	require.Contains(t, body, "vgpu_slice_compute_allowed_ratio"+labels+" 0.3\n")
	require.Contains(t, body, "vgpu_slice_compute_achieved_ratio"+labels+" 0.")
	require.Contains(t, body, "vgpu_slice_token_rate"+labels+" ")
	wl := `{qos="burstable",slice="whole",uuid="` + uuid + `"}`
	require.NotContains(t, body, "vgpu_slice_compute_target_ratio"+wl, "no share: no target series")
	require.Contains(t, body, "vgpu_slice_token_rate"+wl+" 0\n")
	require.Contains(t, body, "vgpu_slice_compute_achieved_ratio"+wl+" 0\n")
}

// The displayed achieved share is a time-weighted average that starts empty:
// its first figure is the first measurement (not dragged towards 0), and it
// follows a change within a few time constants.
func TestAvgShare(t *testing.T) {
	var a avgShare
	require.Zero(t, a.get())
	a.add(0.3, 50*time.Millisecond)
	require.InDelta(t, 0.3, a.get(), 1e-12)
	for i := 0; i < 20; i++ { // one second of 50ms steps at 30%
		a.add(0.3, 50*time.Millisecond)
	}
	require.InDelta(t, 0.3, a.get(), 1e-12)
	for i := 0; i < 100; i++ { // five seconds at 70%
		a.add(0.7, 50*time.Millisecond)
	}
	require.InDelta(t, 0.7, a.get(), 0.01)
}

// A usage file its tenant truncated under vgpud's mapping costs its slice the
// controller's step, never vgpud: reading its throttle counters faults inside
// the region's guard, the slice is left out, the others are still controlled.
func TestComputeSharesSurviveTruncatedUsage(t *testing.T) {
	g := &utilGPUs{fakeGPUs: newFakeGPUs(1, 8*GiB), samples: map[string][]devices.ProcessUtil{}}
	c := newComputeShares(g, zaptest.NewLogger(t))
	var tracked []enforcer.TrackedSlice
	for _, id := range []string{"broken", "fine"} {
		dir := filepath.Join(t.TempDir(), id)
		spec, err := api.SliceBudget{ID: id, Devices: []api.SliceDevice{{UUID: g.devs[0].UUID, MemoryBytes: GiB,
			ComputePercent: 30}}}.Spec()
		require.NoError(t, err)
		require.NoError(t, shm.CreateSlice(dir, spec))
		sl, err := shm.OpenSlice(dir)
		require.NoError(t, err)
		t.Cleanup(func() { sl.Close() })
		tracked = append(tracked, enforcer.TrackedSlice{ID: id, Slice: sl, UUIDs: []string{g.devs[0].UUID}})
	}
	require.NoError(t, os.Truncate(tracked[0].Slice.Usage.Path(), 0))

	rep := &enforcer.TickReport{}
	for i := 0; i < 3; i++ {
		c.step(time.Now(), tracked, rep)
	}
	var slices []string
	for _, s := range c.Status() {
		slices = append(slices, s.Slice)
	}
	require.Equal(t, []string{"fine"}, slices)
}
