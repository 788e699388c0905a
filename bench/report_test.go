package bench

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sampleReport() *OverheadReport {
	return &OverheadReport{
		Benchmark: "overhead",
		Machine:   Machine{Hostname: "h", CPUModel: "cpu", Cores: 2, GoVersion: "go1.26", Driver: "simgpu", Date: "2025-01-01T00:00:00Z"},
		Config:    OverheadConfig{Driver: DriverSim, Rounds: 2, Iters: 10, Batch: 100},
		Calls: []CallRow{
			{Op: OpLaunch, Threads: 1, Bare: Summary{N: 10, Median: 100, P99: 150}, VGPU: Summary{N: 10, Median: 110, P99: 170},
				AddedMedianNS: 10, AddedP99NS: 20, RoundAddedNS: []float64{9, 11}},
			{Op: OpAlloc, Threads: 2, AddedMedianNS: 61},
			{Op: OpGetInfo, Threads: 1, AddedMedianNS: 500},
		},
		Init: []InitRow{
			{Procs: 32, AddedMedianMS: 1.9},
			{Procs: 1, AddedMedianMS: 0.5},
			{Procs: 8, AddedMedianMS: 2.5},
		},
	}
}

func TestEvaluateMarksGoals(t *testing.T) {
	r := sampleReport()
	r.Evaluate()

	launch := r.Calls[0]
	require.NotNil(t, launch.GoalNS)
	require.Equal(t, GoalLaunchAddedNS, *launch.GoalNS)
	require.NotNil(t, launch.Met)
	require.True(t, *launch.Met, "10 ns added is within 15")

	require.False(t, launch.Noisy, "rounds +9 and +11 agree within the goal")

	alloc := r.Calls[1]
	require.Equal(t, GoalAllocAddedNS, *alloc.GoalNS)
	require.False(t, *alloc.Met, "61 ns added is over 60")

	getinfo := r.Calls[2]
	require.Nil(t, getinfo.GoalNS, "cuMemGetInfo has no goal")
	require.Nil(t, getinfo.Met)

	require.True(t, r.Init[0].Met)
	require.True(t, r.Init[1].Met)
	require.False(t, r.Init[2].Met, "2.5 ms added is over 2")

	require.NotNil(t, r.Growth)
	require.Equal(t, 1, r.Growth.FromProcs)
	require.Equal(t, 32, r.Growth.ToProcs)
	require.InDelta(t, 1.4, r.Growth.GrowthMS, 1e-9)
	require.False(t, r.Growth.Met, "1.4 ms of growth is over the 1 ms tolerance")
	require.False(t, r.AllMet)
}

func TestEvaluateFlagsNoisyRows(t *testing.T) {
	r := sampleReport()
	r.Calls[1].RoundAddedNS = []float64{30, 500} // spread 470 ns > the 60 ns goal
	r.Evaluate()
	require.True(t, r.Calls[1].Noisy)
	require.Contains(t, r.Markdown(), "NOT met (noisy: rounds disagree)")
}

func TestEvaluateAllMet(t *testing.T) {
	r := sampleReport()
	r.Calls = r.Calls[:1]
	r.Init = []InitRow{{Procs: 1, AddedMedianMS: 0.2}, {Procs: 32, AddedMedianMS: 0.3}}
	r.Evaluate()
	require.True(t, r.AllMet)
	require.True(t, r.Growth.Met)
	require.Contains(t, r.Markdown(), "All goals met")
}

func TestMarkdownTable(t *testing.T) {
	r := sampleReport()
	r.Evaluate()
	md := r.Markdown()

	require.Contains(t, md, "# vgpu overhead benchmark: —, driver simgpu")
	lines := strings.Split(md, "\n")
	var launch, header string
	for _, l := range lines {
		if strings.HasPrefix(l, "| cuLaunchKernel |") {
			launch = l
		}
		if strings.HasPrefix(l, "| call |") {
			header = l
		}
	}
	require.NotEmpty(t, header)
	require.Equal(t, "| cuLaunchKernel | 1 | 100.0 | 150.0 | 110.0 | 170.0 | +10.0 | +20.0 | +9.0 … +11.0 | ≤ 15 | met |", launch)
	// Every table row has as many cells as its header.
	cells := strings.Count(header, "|")
	for _, l := range lines {
		if strings.HasPrefix(l, "| cu") {
			require.Equal(t, cells, strings.Count(l, "|"), l)
		}
	}
	require.Contains(t, md, "| cuMemAlloc+cuMemFree (1 MiB) | 2 |")
	require.Contains(t, md, "NOT met")
	require.Contains(t, md, "| cuMemGetInfo | 1 |")
	require.Contains(t, md, "no goal")
	require.Contains(t, md, "| 32 |")
	require.Contains(t, md, "Init growth 1 → 32 processes")
	require.Contains(t, md, "Some goals NOT met")
}

func TestReportJSONFields(t *testing.T) {
	r := sampleReport()
	r.Evaluate()
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	machine := m["machine"].(map[string]any)
	for _, k := range []string{"hostname", "cpu_model", "cores", "go_version", "driver", "date"} {
		require.Contains(t, machine, k)
	}
	calls := m["calls"].([]any)
	first := calls[0].(map[string]any)
	require.Equal(t, 10.0, first["added_median_ns"])
	require.Equal(t, true, first["met"])
	require.Nil(t, calls[2].(map[string]any)["met"], "no goal encodes as null")
	require.Contains(t, m, "init_growth")
	require.Equal(t, false, m["all_met"])
}

func TestOptionsValidate(t *testing.T) {
	ok := DefaultOverheadOptions(DriverSim)
	require.NoError(t, ok.validate())

	bad := []func(o *OverheadOptions){
		func(o *OverheadOptions) { o.Driver = "cuda" },
		func(o *OverheadOptions) { o.Ops = []string{"memcpy"} },
		func(o *OverheadOptions) { o.Threads = []int{0} },
		func(o *OverheadOptions) { o.InitProcs = []int{0} },
		func(o *OverheadOptions) { o.Iters = 0 },
		func(o *OverheadOptions) { o.Batch = 0 },
		func(o *OverheadOptions) { o.Rounds = 0 },
		func(o *OverheadOptions) { o.InitRounds = 0 },
		func(o *OverheadOptions) { o.RunTimeout = 0 },
	}
	for i, f := range bad {
		o := DefaultOverheadOptions(DriverSim)
		f(&o)
		require.Error(t, o.validate(), "case %d", i)
	}
}

func TestOrderAlternates(t *testing.T) {
	require.Equal(t, []bool{false, true}, order(0))
	require.Equal(t, []bool{true, false}, order(1))
	require.Equal(t, []bool{false, true}, order(2))
}

func envMap(env []string) map[string][]string {
	m := map[string][]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = append(m[k], v)
	}
	return m
}

func TestEnvironIgnoresTheCallersShell(t *testing.T) {
	t.Setenv("LD_PRELOAD", "/elsewhere/libother.so")
	t.Setenv("VGPU_SLICE_DIR", "/elsewhere/slice")
	t.Setenv("VGPU_FAIL_MODE", "passthrough")
	t.Setenv("VGPU_SIM_STATE", "/elsewhere/state")
	t.Setenv("LD_LIBRARY_PATH", "/elsewhere/lib")

	sim := &overheadRun{opts: OverheadOptions{Driver: DriverSim}, paths: pathsAt("/r"),
		simState: "/t/sim.state", sliceDir: "/t/slice"}
	bare := envMap(sim.environ(false))
	require.Equal(t, []string{"/r/build/simgpu"}, bare["LD_LIBRARY_PATH"])
	require.Equal(t, []string{"/t/sim.state"}, bare["VGPU_SIM_STATE"])
	require.NotContains(t, bare, "LD_PRELOAD")
	require.NotContains(t, bare, "VGPU_SLICE_DIR")
	require.NotContains(t, bare, "VGPU_FAIL_MODE")

	withLib := envMap(sim.environ(true))
	require.Equal(t, []string{"/r/build/libvgpu.so"}, withLib["LD_PRELOAD"])
	require.Equal(t, []string{"/t/slice"}, withLib["VGPU_SLICE_DIR"])
	require.Equal(t, []string{"refuse"}, withLib["VGPU_FAIL_MODE"])

	real := &overheadRun{opts: OverheadOptions{Driver: DriverReal}, paths: pathsAt("/r"), sliceDir: "/t/slice"}
	bare = envMap(real.environ(false))
	require.Equal(t, []string{"/elsewhere/lib"}, bare["LD_LIBRARY_PATH"], "the real driver is the caller's")
	require.NotContains(t, bare, "LD_PRELOAD")
	require.NotContains(t, bare, "VGPU_SLICE_DIR")
}

// TestPinCommit: once pinned, every report records the pinned commit, whatever
// tree it is asked about (HEAD moving on during a suite changes nothing).
func TestPinCommit(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	if gitCommit(context.Background(), root) == "" {
		t.Skip("not a git checkout")
	}
	defer func() { pinnedCommit = "" }()
	// Not compared with a HEAD read separately: others may commit in between.
	head := PinCommit(context.Background(), root)
	require.NotEmpty(t, head)
	require.Equal(t, head, gitCommit(context.Background(), t.TempDir()))
	require.Equal(t, head, hostMachine(context.Background(), "/nonexistent", time.Now()).Commit)
}
