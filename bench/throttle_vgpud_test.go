package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

// TestMain lets the test binary serve as the vgpud mode's NVML sampler
// (bench/throttle_sampler.go re-executes the running executable).
func TestMain(m *testing.M) {
	if SamplerRequested() {
		os.Exit(SamplerMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// TestThrottleVgpudChurnCell runs the churn cell on a short timeline through a
// real bin/vgpud on a simulated node: tenants started with vgpuctl run, one
// joining, one killed; shares measured from NVML. Structure and sane figures
// only: the benchmark reports its goals, it never asserts them.
func TestThrottleVgpudChurnCell(t *testing.T) {
	root := builtRoot(t, "bin/vgpud", "bin/vgpuctl", "build/libvgpu.so", "build/test/throttle_load",
		"build/simgpu/libnvidia-ml.so.1")
	opts := DefaultThrottleVgpudOptions()
	opts.Root, opts.Cells, opts.Scale = root, []string{"churn"}, 0.4
	var log strings.Builder
	opts.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunThrottleVgpud(ctx, opts)
	require.NoError(t, err, "progress:\n%s", log.String())

	require.Equal(t, ControllerVgpud, r.Config.Controller)
	require.Equal(t, uint64(time.Second/6), r.Config.SamplePeriodNs)
	require.Positive(t, r.Config.DeviceQueueNs)
	require.Len(t, r.Cells, 1)
	c := r.Cells[0]
	require.Equal(t, "churn", c.Name)
	kinds := map[string]int{}
	for _, e := range c.Events {
		kinds[e.Kind]++
	}
	require.Equal(t, map[string]int{"start": 2, "join": 1, "leave": 1}, kinds)
	require.Len(t, c.Tenants, 3)
	events := map[string][]string{}
	for _, tr := range c.Tenants {
		require.Positive(t, tr.Pid)
		for _, s := range tr.Settles {
			events[tr.Name] = append(events[tr.Name], s.Event)
		}
		require.NotEmpty(t, tr.Windows, tr.Name)
		require.NotEmpty(t, tr.PeriodPct, tr.Name)
		require.Greater(t, tr.EndS, tr.StartS)
		// Sane, not the goals: within a factor of 3 of the target.
		require.Greater(t, tr.AchievedPct, tr.TargetPct/3, "%s", tr.Name)
		require.Less(t, tr.AchievedPct, tr.TargetPct*2, "%s", tr.Name)
		require.GreaterOrEqual(t, tr.FirstSecondPct, 0.0)
		require.LessOrEqual(t, tr.FirstSecondPct, 100.5)
	}
	require.Equal(t, map[string][]string{"a20": {"start", "join c50"}, "b30": {"start", "join c50", "leave a20"},
		"c50": {"start", "leave a20"}}, events)
	js, err := json.Marshal(r)
	require.NoError(t, err)
	require.Contains(t, string(js), `"period_pct"`)
	md := r.Markdown()
	require.Contains(t, md, "# vgpu throttle benchmark: simulated node, through vgpud")
	require.Contains(t, md, "| churn | b30 | 30 |")
	require.Contains(t, md, "join c50 @")
}

func TestThrottleVgpudOptionsValidate(t *testing.T) {
	o := DefaultThrottleVgpudOptions()
	require.NoError(t, o.validate())
	o.Cells = []string{"solo"}
	require.ErrorContains(t, o.validate(), `unknown cell "solo"`)
	o = DefaultThrottleVgpudOptions()
	o.Scale = 0.01
	require.Error(t, o.validate())
	require.Equal(t, []string{"alone-2us", "alone-80us", "hetero", "churn", "retarget", "eight", "sync-graph", "mix"},
		VgpudCellNames())
	require.Equal(t, []string{"alone-short", "alone-long", "hetero", "churn"}, VgpudRealCellNames())
	o = DefaultThrottleVgpudOptions()
	o.Driver, o.Cells = DriverReal, []string{"eight"}
	require.ErrorContains(t, o.validate(), `unknown cell "eight"`, "the simulated node's cells are not the real GPU's")
	o.Cells, o.ShortKernelMs = nil, 30
	require.ErrorContains(t, o.validate(), "short < long")
	o = DefaultThrottleVgpudOptions()
	o.Driver = "gpu"
	require.ErrorContains(t, o.validate(), `driver "gpu"`)
}

// The real-GPU vgpud mode, rehearsed on a simulated node named the way a real
// run finds its driver (the caller's LD_LIBRARY_PATH and VGPU_SIM_STATE, an
// NVML library path): both kernels calibrated, every tenant under vgpuctl run
// with its kernel, a leaving tenant judged up to what the sampler read.
func TestThrottleVgpudRealDriverOnTheSimulatedNode(t *testing.T) {
	root := builtRoot(t, "bin/vgpud", "bin/vgpuctl", "build/libvgpu.so", "build/test/throttle_real",
		"build/simgpu/libnvidia-ml.so.1")
	node := filepath.Join(t.TempDir(), "node")
	require.NoError(t, simgpu.Init(node, simgpu.Config{Devices: 1, Memory: 80 << 30, SMs: 132, NsPerBlock: 100_000}))
	t.Setenv("VGPU_SIM_STATE", node)
	t.Setenv("LD_LIBRARY_PATH", filepath.Join(root, "build", "simgpu"))
	opts := DefaultThrottleVgpudOptions()
	opts.Root, opts.Driver, opts.Cells, opts.Scale = root, DriverReal, []string{"hetero", "churn"}, 0.3
	opts.NVMLLib = filepath.Join(root, "build", "simgpu", "libnvidia-ml.so.1")
	var log strings.Builder
	opts.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunThrottleVgpud(ctx, opts)
	require.NoError(t, err, "progress:\n%s", log.String())

	require.Equal(t, DriverReal, r.Config.Driver)
	require.Equal(t, uint64(realSamplePeriod), r.Config.SamplePeriodNs)
	require.Equal(t, "NVIDIA H100 80GB HBM3 (simulated)", r.Machine.GPU)
	for _, k := range []string{KernelShort, KernelLong} {
		require.Positive(t, r.Config.Kernels[k].KernelNs, k)
		require.Positive(t, r.Config.Kernels[k].Iters, k)
	}
	require.Len(t, r.Cells, 2)
	kernels := map[string]string{}
	for _, c := range r.Cells {
		for _, tr := range c.Tenants {
			kernels[c.Name+"/"+tr.Name] = tr.Kernel
			require.Positive(t, tr.Pid)
			require.NotEmpty(t, tr.Windows, tr.Name)
			require.Greater(t, tr.AchievedPct, tr.TargetPct/3, "%s %s: sane, not the goal", c.Name, tr.Name)
			require.Less(t, tr.AchievedPct, tr.TargetPct*2, "%s %s", c.Name, tr.Name)
		}
	}
	require.Equal(t, map[string]string{"hetero/short30": KernelShort, "hetero/long60": KernelLong,
		"churn/a20": KernelShort, "churn/b30": KernelLong, "churn/c50": KernelShort}, kernels)
	a20 := r.Cells[1].Tenants[0]
	var leave float64
	for _, e := range r.Cells[1].Events {
		if e.Kind == "leave" {
			leave = e.AtS
		}
	}
	require.LessOrEqual(t, a20.EndS, leave, "the leaving tenant is judged up to its kill at most")
	require.Greater(t, a20.EndS, leave-0.5, "... and up to what the sampler read before it")
	md := r.Markdown()
	require.Contains(t, md, "# vgpu throttle benchmark: NVIDIA H100 80GB HBM3 (simulated), through vgpud")
	require.Contains(t, md, "- long kernel: ")
	require.Contains(t, md, "| churn | c50 | 50 |")
}
