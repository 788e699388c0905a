package bench

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// TestThrottleRealRunsOnTheSimulatedNode runs the real-GPU mode against the
// simulated driver (as test/gpu/run.sh's rehearsal does), measuring with the
// programs' own reports: calibration, tenants under libvgpu, the controller
// stepping, one row per cell with both figures. Shape only, not accuracy.
func TestThrottleRealRunsOnTheSimulatedNode(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	state := filepath.Join(t.TempDir(), "node")
	ctxMem := uint64(0)
	require.NoError(t, simgpu.Init(state, simgpu.Config{Devices: 1, Memory: 80 << 30, SMs: 132,
		NsPerBlock: 100_000, ContextMemory: &ctxMem}))
	t.Setenv("VGPU_SIM_STATE", state)
	t.Setenv("LD_LIBRARY_PATH", filepath.Join(root, "build", "simgpu"))

	opts := DefaultThrottleRealOptions()
	opts.Root = root
	opts.Measure = MeasureSelf
	opts.Groups = []string{GroupPairs}
	opts.Workloads = []string{WorkGraph}
	opts.Waves = 20
	opts.Window, opts.Warmup = time.Second, 500*time.Millisecond
	var log, steps strings.Builder
	opts.Log, opts.StepLog = &log, &steps
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunThrottleReal(ctx, opts)
	require.NoError(t, err, "progress:\n%s", log.String())

	require.Equal(t, DriverReal, r.Config.Driver)
	require.NotNil(t, r.Config.Real)
	require.Equal(t, MeasureSelf, r.Config.Real.Measure)
	require.Equal(t, 20*132, r.Config.Real.Grid)
	// 20 waves of 100 µs. The calibration times batches by wall clock, so a
	// busy machine (CI runs test packages side by side on 2 cores) only adds
	// its wake-up latency: 2.20 ms was seen there.
	require.GreaterOrEqual(t, float64(r.Config.Real.KernelNs), 1.9e6, "20 waves of 100 µs, calibrated")
	require.LessOrEqual(t, float64(r.Config.Real.KernelNs), 2.6e6, "20 waves of 100 µs, calibrated")
	require.Len(t, r.Cells, 1)
	c := r.Cells[0]
	require.Len(t, c.Tenants, 2)
	for _, tr := range c.Tenants {
		require.Positive(t, tr.AchievedPct, "tenant %s ran", tr.Name)
		require.Equal(t, tr.AchievedPct, tr.SelfPct, "measured from the programs' own reports")
		require.Positive(t, tr.Launches)
	}
	require.Contains(t, steps.String(), "self_busy_ns=")
	md := r.Markdown()
	require.Contains(t, md, "# vgpu throttle benchmark: real GPU")
	require.Contains(t, md, "| pairs | graph | 30.00 / 70.00 |")
}

func TestThrottleRealOptionsValidate(t *testing.T) {
	o := DefaultThrottleRealOptions()
	require.NoError(t, o.validate())
	for _, f := range []func(*ThrottleRealOptions){
		func(o *ThrottleRealOptions) { o.Workloads = []string{WorkFlood} },
		func(o *ThrottleRealOptions) { o.Groups = []string{GroupFour} },
		func(o *ThrottleRealOptions) { o.Measure = "guess" },
		func(o *ThrottleRealOptions) { o.Nodes = 0 },
		func(o *ThrottleRealOptions) { o.KernelMs = 0 },
	} {
		o := DefaultThrottleRealOptions()
		f(&o)
		require.Error(t, o.validate())
	}
}

// A sample stands for the time since the pid's previous one (or the previous
// query), as in vgpud; samples already seen are not counted twice.
func TestUtilTracker(t *testing.T) {
	u := &utilTracker{lastUs: 1_000_000, pidUs: map[int]uint64{}}
	busy := map[int]float64{}
	u.add([]devices.ProcessUtil{{HostPID: 7, TimeStampUs: 1_100_000, SMPercent: 50},
		{HostPID: 7, TimeStampUs: 1_300_000, SMPercent: 100}, {HostPID: 8, TimeStampUs: 900_000, SMPercent: 100}}, busy)
	require.InDelta(t, 0.5*100e6+200e6, busy[7], 1)
	require.Zero(t, busy[8], "older than the last query")
	u.add([]devices.ProcessUtil{{HostPID: 7, TimeStampUs: 1_300_000, SMPercent: 100}}, busy)
	require.InDelta(t, 250e6, busy[7], 1, "seen before")
}

// The sampler reads the real driver's samples as vgpud does (utilTracker): a
// sample stands for the time since the process's previous one, or since the
// previous query's newest stamp; its busy time lands in the periods it spans.
func TestSampleMapperReadsRealSamplesAsVgpud(t *testing.T) {
	const period = int64(100 * time.Millisecond)
	m := &sampleMapper{period: period, real: true, pidUs: map[int]uint64{}, lastSeen: 1_000_000}
	recs := m.records([]devices.ProcessUtil{{HostPID: 7, TimeStampUs: 1_300_000, SMPercent: 100},
		{HostPID: 7, TimeStampUs: 1_100_000, SMPercent: 50}, {HostPID: 8, TimeStampUs: 900_000, SMPercent: 100}}, 0)
	require.Equal(t, []utilRecord{{first: 10, last: 10, pid: 7, pct: 50}, {first: 11, last: 12, pid: 7, pct: 100}}, recs,
		"in time order; pid 8's sample is older than the last query")
	s := newPeriodSeries(period, 0, 2*int64(time.Second))
	for _, r := range recs {
		s.add(r.first, r.last, r.pct/100*float64(period)*float64(r.last-r.first+1))
	}
	require.InDelta(t, 0.5*100e6+200e6, s.busyBetween(0, 2*int64(time.Second)), 1, "as utilTracker counts them")
	require.Equal(t, int64(12), m.readThrough)
	require.Equal(t, uint64(1_300_000), m.lastSeen)

	// The simulated NVML's: one entry per process covering every period since
	// lastSeen; what was read runs to the last complete period.
	sim := &sampleMapper{period: period, pidUs: map[int]uint64{}, lastSeen: 1_000_000}
	recs = sim.records([]devices.ProcessUtil{{HostPID: 7, TimeStampUs: 1_200_000, SMPercent: 40}}, 1_300_000)
	require.Equal(t, []utilRecord{{first: 10, last: 11, pid: 7, pct: 40}}, recs)
	require.Equal(t, int64(12), sim.readThrough)
	require.Equal(t, uint64(1_300_000), sim.lastSeen)
}
