package daemon

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/enforcer"
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

	budget := func(s api.Slice) *enforcer.BudgetRegion {
		b, err := enforcer.OpenBudget(filepath.Join(s.Dir, enforcer.BudgetFile), false)
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
