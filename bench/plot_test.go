package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPlotResultsCommitted draws from the committed reports (when present) to a temp dir.
func TestPlotResultsFromFixtures(t *testing.T) {
	in := t.TempDir()
	if d := os.Getenv("VGPU_PLOT_IN"); d != "" {
		in = d
	} else {
		writeFixtures(t, in)
	}
	out := t.TempDir()
	if d := os.Getenv("VGPU_PLOT_OUT"); d != "" {
		out = d
	}
	plots, err := PlotResults(in, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(plots) == 0 {
		t.Fatal("no plots")
	}
	for _, p := range plots {
		for _, ext := range []string{".svg", ".png"} {
			st, err := os.Stat(filepath.Join(out, p.Name+ext))
			if err != nil || st.Size() == 0 {
				t.Errorf("%s%s: %v (empty or missing)", p.Name, ext, err)
			}
		}
	}
}

func sum(med, p99 float64, n int) Summary {
	return Summary{N: n, Median: med, P99: p99, Mean: med, Min: med / 2, Max: p99 * 1.2}
}

// writeFixtures writes one small report of every benchmark PlotResults draws.
func writeFixtures(t *testing.T, dir string) {
	t.Helper()
	m := Machine{Hostname: "fixture", CPUModel: "test cpu", Cores: 2, Driver: "simgpu", Commit: "abc1234", Date: "2026-01-01T00:00:00Z"}
	yes, no := true, false
	goal, half := 15.0, 0.5
	reports := map[string]any{
		"overhead-simgpu.json": OverheadReport{Benchmark: "overhead", Machine: m,
			Calls: []CallRow{{Op: OpLaunch, Threads: 1, Bare: sum(70, 90, 10), VGPU: sum(75, 99, 10), Met: &yes},
				{Op: OpGetInfo, Threads: 1, Bare: sum(3, 4, 10), VGPU: sum(10, 12, 10)}},
			Init: []InitRow{{Procs: 1, Bare: sum(0.3, 0.5, 4), VGPU: sum(0.4, 0.6, 4), Met: true},
				{Procs: 8, Bare: sum(0.2, 0.4, 32), VGPU: sum(0.3, 0.5, 32), Met: true}}, AllMet: true},
		"daemon-simgpu.json": DaemonReport{Benchmark: "daemon", Machine: m,
			Alloc: &AllocResult{Allocs: 10, Devices: 2, Alloc: sum(1, 3, 10), Release: sum(0.5, 1, 10), GoalMS: 10, Met: true,
				AllocSamplesMS: []float64{0.8, 1, 1, 1.2, 3}, ReleaseSamplesMS: []float64{0.4, 0.5, 0.5, 1}}, AllMet: true},
		"elastic-simgpu.json": ElasticReport{Benchmark: "elastic", Machine: m,
			Grant: []ElasticGrantRow{{Concurrency: 8, StateFS: "ext4", SettleMS: 50, Latency: sum(2, 4, 4),
				SamplesMS: []float64{1, 2, 3, 4}, GoalP99MS: &goal, Met: &yes}},
			Reclaim: &ElasticReclaim{Repeats: 2, ShrinkMS: []float64{5, 8}, EvictMS: []float64{50, 60}}, AllMet: true},
		"tracker-ebpf.json": TrackerReport{Benchmark: "tracker", Machine: m, Hook: "ebpf",
			Latency: []TrackerLatencyRow{{What: "open", Tracker: "ebpf", MS: sum(0.4, 6, 50), Met: &no},
				{What: "open", Tracker: "procfs", MS: sum(110, 240, 10)}}},
		"runtime-simgpu.json": RuntimeReport{Benchmark: "runtime", Machine: m, Runc: sum(40, 60, 5),
			Passthrough: sum(41, 61, 5), VGPU: sum(45, 70, 5), GoalMS: 20, Met: true, AllMet: true},
		"throttle-simgpu.json": ThrottleVgpudReport{Benchmark: "throttle", Machine: m,
			Config: ThrottleVgpudConfig{GoalSteadyErrPts: 2},
			Cells: []VgpudCell{{Name: "retarget", About: "one tenant retargeted", DurationS: 3, SamplePeriodNs: 500e6,
				Events: []VgpudEvent{{AtS: 0, Kind: "start", Tenant: "r30"}, {AtS: 1.5, Kind: "retarget", Tenant: "r30", TargetPct: 70}},
				Tenants: []VgpudTenant{{Name: "r30", TargetPct: 30, EndS: 3, AchievedPct: 50, SteadyErrPts: 0.5,
					PeriodPct: []float64{20, 30, 30, 60, 70, 70}, Met: true}}}}, AllMet: true},
		"isolation-simgpu.json": isolationFixture(m),
		"workload-simgpu.json": WorkloadReport{Benchmark: "workload", Machine: m, Rows: []WorkloadRow{
			{Mode: ModeBare, Step: sum(1200, 1300, 100)},
			{Mode: "vgpu-mem", Step: sum(1201, 1302, 100), AddedMedianPct: 0.08, AddedMedianUS: 1, GoalPct: &half, Met: &yes}},
			AllMet: true},
	}
	for name, r := range reports {
		js, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDaemonAllocFigure: with samples the daemon report's figure is their CDF
// (both series, the goal line, units on the axes); a report without samples
// still gets its median/p99 summary.
func TestDaemonAllocFigure(t *testing.T) {
	r := &DaemonReport{Benchmark: "daemon", Alloc: &AllocResult{Allocs: 5, Devices: 2, Alloc: sum(1, 3, 5),
		Release: sum(0.5, 1, 4), GoalMS: 2, AllocSamplesMS: []float64{0.8, 1, 1, 1.2, 3},
		ReleaseSamplesMS: []float64{0.4, 0.5, 0.5, 1}}}
	figs, err := daemonFigures(r)
	require.NoError(t, err)
	require.Len(t, figs, 1)
	p := figs[0].p
	require.Contains(t, p.Title.Text, "CDF")
	require.Contains(t, p.X.Label.Text, "ms per request")
	require.Contains(t, p.Y.Label.Text, "fraction of requests")
	require.GreaterOrEqual(t, p.X.Max, 3.0, "the slowest sample is on the axis")

	r.Alloc.AllocSamplesMS, r.Alloc.ReleaseSamplesMS = nil, nil
	figs, err = daemonFigures(r)
	require.NoError(t, err)
	require.Len(t, figs, 1)
	require.NotContains(t, figs[0].p.Title.Text, "CDF")
	require.Equal(t, "ms per request", figs[0].p.Y.Label.Text)
}

// isolationFixture: a latency victim alone and next to 3 churning aggressors,
// with vgpu (goal NOT met) and bare.
func isolationFixture(m Machine) IsolationReport {
	lat := func(p50, p99 float64) Summary { return Summary{N: 100, Median: p50, P99: p99} }
	r := IsolationReport{Benchmark: "isolation", Machine: m, Config: IsolationConfig{GoalThroughputRatio: 0.9, GoalP99Ratio: 2},
		Rows: []IsolationRow{
			{Victim: VictimLatency, Aggressor: AggressorFlood, Config: IsoVgpu, StepsPerS: 100, LatencyUs: lat(100, 200)},
			{Victim: VictimLatency, Aggressor: AggressorChurn, Aggressors: 3, Config: IsoVgpu, StepsPerS: 50, LatencyUs: lat(150, 800)},
			{Victim: VictimLatency, Aggressor: AggressorFlood, Config: IsoBare, StepsPerS: 100, LatencyUs: lat(100, 200)},
			{Victim: VictimLatency, Aggressor: AggressorChurn, Aggressors: 3, Config: IsoBare, StepsPerS: 1, LatencyUs: lat(1e6, 1e6)},
		}}
	r.Evaluate()
	return r
}

// TestIsolationAndWorkloadFigures: the isolation report gives a throughput and
// a p99 figure (log axes, relative to alone), the workload report its added %.
func TestIsolationAndWorkloadFigures(t *testing.T) {
	r := isolationFixture(Machine{})
	figs, err := isolationFigures(&r)
	require.NoError(t, err)
	require.Len(t, figs, 2)
	require.Equal(t, "throughput", figs[0].name)
	require.Contains(t, figs[0].p.Y.Label.Text, "÷ alone")
	require.Equal(t, "p99", figs[1].name)
	require.LessOrEqual(t, figs[1].p.Y.Min, 1.0, "alone (1×) is in view")

	half, yes := 0.5, true
	w := &WorkloadReport{Rows: []WorkloadRow{{Mode: ModeBare}, {Mode: "vgpu-mem", AddedMedianPct: 0.1,
		RoundAddedPct: []float64{-0.2, 0.3}, GoalPct: &half, Met: &yes}}}
	figs, err = workloadFigures(w)
	require.NoError(t, err)
	require.Len(t, figs, 1)
	require.Contains(t, figs[0].p.Y.Label.Text, "% of bare")
	require.GreaterOrEqual(t, figs[0].p.Y.Max, 0.5, "the goal is in view")
}
