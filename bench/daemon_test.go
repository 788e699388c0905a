package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

func sampleDaemonReport() *DaemonReport {
	return &DaemonReport{
		Benchmark: "daemon",
		Machine:   Machine{Hostname: "h", CPUModel: "cpu", Cores: 2, GoVersion: "go1.26", Driver: "simgpu", Date: "2025-01-01T00:00:00Z"},
		Config:    DaemonConfig{Slices: 1000, ProcsPerSlice: 2, SlotsPerSlice: 1024, Ticks: 200, Allocs: 100, AllocBatch: 50, AllocBytes: 512 << 20, StateFS: "ext4"},
		Tick:      &TickResult{Slices: 1000, LiveProcesses: 2000, CPU: Summary{N: 200, Median: 0.5, P99: 1.2, Max: 1.3}},
		Alloc:     &AllocResult{Allocs: 100, Releases: 100, Devices: 2, Alloc: Summary{N: 100, Median: 0.6, P99: 1.9}},
	}
}

func TestDaemonEvaluate(t *testing.T) {
	r := sampleDaemonReport()
	r.Evaluate()
	require.True(t, r.Tick.Met)
	require.Equal(t, GoalTickCPUMS, r.Tick.GoalCPUMS)
	require.True(t, r.Alloc.Met)
	require.Equal(t, GoalAllocP99MS, r.Alloc.GoalMS)
	require.True(t, r.AllMet)
	md := r.Markdown()
	require.Contains(t, md, "All goals met")
	require.Contains(t, md, "| tick CPU (thread) | 0.500 | 1.200 | 1.300 | p99 ≤ 5 | met |")
	require.Contains(t, md, "512 MiB on a simulated 2-GPU node")
	require.Contains(t, md, "state dir on ext4")

	r.Alloc.Alloc.P99 = 2.5
	r.Evaluate()
	require.False(t, r.Alloc.Met)
	require.False(t, r.AllMet)
	require.Contains(t, r.Markdown(), "NOT met")

	// A tick that reclaimed or failed is not a valid measurement of the goal.
	r = sampleDaemonReport()
	r.Tick.Errors = 1
	r.Evaluate()
	require.False(t, r.Tick.Met)

	// Only the parts that ran are judged.
	r = sampleDaemonReport()
	r.Alloc = nil
	r.Evaluate()
	require.True(t, r.AllMet)
	require.NotContains(t, r.Markdown(), "Slice allocation")
}

func TestDaemonOptionsValidate(t *testing.T) {
	good := DefaultDaemonOptions()
	require.NoError(t, good.validate())
	for name, mutate := range map[string]func(*DaemonOptions){
		"nothing":     func(o *DaemonOptions) { o.Slices, o.Allocs = 0, 0 },
		"ticks":       func(o *DaemonOptions) { o.Ticks = 0 },
		"negative":    func(o *DaemonOptions) { o.Slices = -1 },
		"procs":       func(o *DaemonOptions) { o.ProcsPerSlice = 17 },
		"slots":       func(o *DaemonOptions) { o.SlotsPerSlice = 1 },
		"batch":       func(o *DaemonOptions) { o.AllocBatch = 0 },
		"alloc bytes": func(o *DaemonOptions) { o.AllocBytes = 0 },
		"warmup":      func(o *DaemonOptions) { o.Warmup = -1 },
	} {
		o := DefaultDaemonOptions()
		mutate(&o)
		require.Error(t, o.validate(), name)
	}
}

// A small tick benchmark runs for real: live processes, slices, ticks; no
// process is reclaimed (they are all alive) and no error occurs.
func TestRunDaemonTick(t *testing.T) {
	opts := DefaultDaemonOptions()
	opts.Slices, opts.ProcsPerSlice, opts.SlotsPerSlice, opts.Ticks, opts.Warmup, opts.Allocs = 20, 2, 64, 5, 1, 0
	opts.TempDir = t.TempDir()
	rep, err := RunDaemon(context.Background(), opts)
	require.NoError(t, err)
	require.NotNil(t, rep.Tick)
	require.Nil(t, rep.Alloc)
	require.Equal(t, "daemon", rep.Benchmark)
	require.Equal(t, 40, rep.Tick.LiveProcesses)
	require.Equal(t, 5, rep.Tick.CPU.N)
	require.Zero(t, rep.Tick.Errors)
	require.Zero(t, rep.Tick.Reclaimed)
	require.Greater(t, rep.Tick.FirstCPUMS, 0.0)
	require.Greater(t, rep.Tick.CPU.Median, 0.0)
	js, err := json.Marshal(rep)
	require.NoError(t, err)
	require.Contains(t, string(js), `"cpu_ms"`)
	entries, err := os.ReadDir(opts.TempDir)
	require.NoError(t, err)
	require.Empty(t, entries, "the temporary slices are removed")
}

// The alloc benchmark against a real vgpud, built from this tree, on a
// simulated node.
func TestRunDaemonAlloc(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts vgpud; skipped with -short")
	}
	root := builtRoot(t, "build/simgpu/libnvidia-ml.so.1")
	vgpud := buildVgpud(t, root)

	opts := DefaultDaemonOptions()
	opts.Root, opts.Vgpud = root, vgpud
	opts.Slices, opts.Allocs, opts.AllocBatch = 0, 20, 7
	opts.TempDir = t.TempDir()
	var log strings.Builder
	opts.Log = &log
	rep, err := RunDaemon(context.Background(), opts)
	require.NoError(t, err, log.String())
	require.Nil(t, rep.Tick)
	require.NotNil(t, rep.Alloc)
	require.Equal(t, 20, rep.Alloc.Allocs)
	require.Equal(t, 20, rep.Alloc.Releases)
	require.Equal(t, 2, rep.Alloc.Devices)
	require.Greater(t, rep.Alloc.Alloc.Median, 0.0)
	require.Len(t, rep.Alloc.AllocSamplesMS, 20, "every sample is kept, for the CDF")
	require.Len(t, rep.Alloc.ReleaseSamplesMS, 20)
	require.Contains(t, rep.Machine.GPU, "simulated")
	require.Contains(t, log.String(), "bench: alloc: median")
}

// buildVgpud builds vgpud from this tree into a temporary dir.
func buildVgpud(t *testing.T, root string) string {
	t.Helper()
	vgpud := filepath.Join(t.TempDir(), "vgpud")
	build := exec.Command("go", "build", "-o", vgpud, "./cmd/vgpud")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/vgpud: %s", out)
	return vgpud
}

// A benchmark's vgpud publishes its slices as CDI devices, as on a real
// node, but in a private dir from the simulated node's spec there: never
// in the host's /var/run/cdi, where it would remove a node vgpud's specs.
func TestBenchVgpudPublishesPrivately(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts vgpud; skipped with -short")
	}
	root := builtRoot(t, "build/simgpu/libnvidia-ml.so.1")
	simLib := filepath.Join(root, "build/simgpu/libnvidia-ml.so.1")
	dir := t.TempDir()
	state := filepath.Join(dir, "node")
	require.NoError(t, simgpu.Init(state, simgpu.Config{Devices: 1, Memory: 4 << 30, SMs: simSMs}))
	hostSpecs, _ := filepath.Glob("/var/run/cdi/vgpu.io-slice_*")

	ctx := context.Background()
	d, err := startBenchVgpud(ctx, DaemonOptions{}, buildVgpud(t, root), simLib, state, dir)
	require.NoError(t, err)
	defer func() { require.NoError(t, d.stop(), d.out.String()) }()
	defer d.client.Close()
	require.NoError(t, d.awaitHealth(ctx, time.Minute))
	_, err = d.client.Alloc(ctx, api.AllocRequest{ID: "bench-cdi", MemoryBytes: 1 << 30})
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(dir, benchCDIDir, "vgpu.io-slice_bench-cdi.json"), d.out.String())
	require.NotContains(t, d.out.String(), "not published")
	after, _ := filepath.Glob("/var/run/cdi/vgpu.io-slice_*")
	require.Equal(t, hostSpecs, after, "the host's CDI dir is untouched")
}

// A missing vgpud is a clear error, not a hang.
func TestRunDaemonAllocMissingVgpud(t *testing.T) {
	opts := DefaultDaemonOptions()
	opts.Slices, opts.Allocs = 0, 1
	opts.Vgpud = filepath.Join(t.TempDir(), "no-vgpud")
	opts.TempDir = t.TempDir()
	_, err := RunDaemon(context.Background(), opts)
	require.ErrorContains(t, err, "no-vgpud is missing")
}
