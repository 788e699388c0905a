package bench

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sampleTrackerReport() *TrackerReport {
	return &TrackerReport{
		Benchmark: "tracker",
		Machine:   Machine{Hostname: "h", CPUModel: "cpu", Cores: 2, Kernel: "6.18", GoVersion: "go1.26", Date: "2026-01-01T00:00:00Z"},
		Config:    TrackerConfig{Device: "203:0 (cpu/cpuid)", ProcfsIntervalMS: 250, Rounds: 3, OpsPerPhase: 100, ForksPerPhase: 10, Procs: 2000, Holders: 200, CPUWindowS: 10},
		Hook:      trackerEBPF,
		Latency: []TrackerLatencyRow{
			{What: "open", Tracker: trackerEBPF, MS: Summary{N: 500, Median: 0.5, P99: 2, Max: 3}},
			{What: "exit", Tracker: trackerEBPF, MS: Summary{N: 200, Median: 0.3, P99: 1, Max: 2}},
			{What: "open", Tracker: trackerProcfs, MS: Summary{N: 100, Median: 130, P99: 250, Max: 251}},
			{What: "exit", Tracker: trackerProcfs, MS: Summary{N: 50, Median: 130, P99: 250, Max: 251}},
			{What: whatOpenVgpud, Tracker: trackerEBPF, MS: Summary{N: 300, Median: 1, P99: 4, Max: 5}},
		},
		Syscalls: []TrackerSyscallRow{
			{Op: opOpenFile, RoundAddedNS: []float64{300, 400, 500}},
			{Op: opOpenDevice, RoundAddedNS: []float64{600, 700, 800}},
			{Op: opForkExit, RoundAddedNS: []float64{-50000, 20000, 40000}},
		},
		CPU: []TrackerCPURow{
			{Tracker: trackerEBPF, Load: "idle", CPUMS: 2},
			{Tracker: trackerProcfs, Load: "idle", CPUMS: 400},
		},
	}
}

func TestTrackerEvaluate(t *testing.T) {
	r := sampleTrackerReport()
	r.Evaluate()
	require.True(t, r.AllMet)
	require.NotNil(t, r.Latency[0].Met)
	require.Nil(t, r.Latency[2].Met, "procfs open latency has no goal")
	require.NotNil(t, r.Latency[3].Met, "a dead process's exit has a goal for both")
	require.NotNil(t, r.Latency[4].Met, "open → vgpud has the open's goal")
	require.Equal(t, GoalTrackerOpenP99MS, *r.Latency[4].GoalMS)
	require.InDelta(t, 400, r.Syscalls[0].AddedMedianNS, 1e-9)
	require.False(t, r.Syscalls[0].Noisy)
	require.Nil(t, r.Syscalls[2].Met)
	require.True(t, r.Syscalls[2].Noisy, "rounds spread wider than the median added")
	require.True(t, *r.CPU[0].Met)
	require.Nil(t, r.CPU[1].Met)
	md := r.Markdown()
	require.Contains(t, md, "All goals met")
	require.Contains(t, md, "| open | ebpf | 500 | 0 | 0.500 | 2.000 | 3.000 | p99 ≤ 10 | met |")
	require.Contains(t, md, "| open+close, untracked file |")
	require.Contains(t, md, "(noisy: rounds disagree)")
	require.Contains(t, md, "kernel 6.18")

	r.Latency[0].MS.P99 = 11
	r.Syscalls[1].RoundAddedNS = []float64{1500, 1600, 1700}
	r.CPU[0].CPUMS = 500
	r.Evaluate()
	require.False(t, r.AllMet)
	require.False(t, *r.Latency[0].Met)
	require.False(t, *r.Syscalls[1].Met)
	require.False(t, *r.CPU[0].Met)
	require.Contains(t, r.Markdown(), "NOT met")

	// A missed sample fails its row; no eBPF means its goals were not met.
	r = sampleTrackerReport()
	r.Latency[1].Missed = 1
	r.Evaluate()
	require.False(t, *r.Latency[1].Met)
	r = sampleTrackerReport()
	r.Hook = trackerProcfs
	r.Evaluate()
	require.False(t, r.AllMet)
}

func TestTrackerOptionsValidate(t *testing.T) {
	o := DefaultTrackerOptions()
	require.NoError(t, o.validate())
	for _, bad := range []func(*TrackerOptions){
		func(o *TrackerOptions) { o.Opens = -1 },
		func(o *TrackerOptions) { o.Holders = o.Procs + 1 },
		func(o *TrackerOptions) { o.CPUWindow = time.Millisecond },
		func(o *TrackerOptions) { o.OpsPerPhase = 0 },
		func(o *TrackerOptions) {
			*o = TrackerOptions{}
		},
	} {
		o := DefaultTrackerOptions()
		bad(&o)
		require.Error(t, o.validate())
	}
}

func TestParseEpochRealtime(t *testing.T) {
	ns, err := parseEpochRealtime("1733512345.123456\n")
	require.NoError(t, err)
	require.Equal(t, int64(1733512345123456000), ns)
	ns, err = parseEpochRealtime("12,5")
	require.NoError(t, err)
	require.Equal(t, int64(12500000000), ns)
	_, err = parseEpochRealtime("x")
	require.Error(t, err)
}

// A very short run, end to end through the real tracker: as root (CI) the
// eBPF programs must load and attach. Its figures are checked for sanity,
// not against the goals.
func TestRunTrackerShort(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the tracker benchmark makes a device node and loads BPF: it needs root (`make test` runs as root)")
	}
	o := TrackerOptions{
		Opens: 10, Exits: 5, ProcfsOpens: 3, ProcfsExits: 2, ProcfsInterval: 100 * time.Millisecond, VgpudOpens: 5,
		Rounds: 1, OpsPerPhase: 500, ForksPerPhase: 5,
		Procs: 30, Holders: 5, CPUWindow: 300 * time.Millisecond, ChurnPerSec: 20,
		TempDir: t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	r, err := RunTracker(ctx, o)
	require.NoError(t, err)
	t.Logf("short tracker run: %s", time.Since(t0))
	require.Equal(t, trackerEBPF, r.Hook, "the eBPF tracker must load as root")
	require.Equal(t, "tracker", r.Benchmark)
	require.NotEmpty(t, r.Machine.Kernel)

	require.Len(t, r.Latency, 5)
	require.Equal(t, whatOpenVgpud, r.Latency[2].What, "after the eBPF rows, from a bin/vgpud")
	for _, row := range r.Latency {
		require.Zero(t, row.Missed, "%s %s", row.Tracker, row.What)
		require.Positive(t, row.MS.N)
		require.Positive(t, row.MS.Median, "%s %s", row.Tracker, row.What)
		require.Less(t, row.MS.Max, 5000.0, "%s %s", row.Tracker, row.What)
	}
	require.Len(t, r.Syscalls, 3)
	for _, row := range r.Syscalls {
		require.Len(t, row.RoundAddedNS, 1)
		require.Equal(t, 2, row.Detached.N)
		require.Equal(t, 2, row.Attached.N)
		require.Positive(t, row.Detached.Median, row.Op)
		require.Positive(t, row.Attached.Median, row.Op)
	}
	require.Len(t, r.CPU, 4)
	for _, row := range r.CPU {
		require.Positive(t, row.WindowS)
		require.Equal(t, o.Holders, row.Known, "%s %s: the holders are known", row.Tracker, row.Load)
		require.GreaterOrEqual(t, row.BaselineMS, 0.0)
	}

	js, err := json.Marshal(r)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(js, &back))
	for _, k := range []string{"machine", "config", "hook", "latency", "syscalls", "cpu", "all_met"} {
		require.Contains(t, back, k)
	}
	md := r.Markdown()
	for _, want := range []string{"hook ebpf", "## Latency", "## Added cost per system call", "## Tracker CPU", "kernel "} {
		require.Contains(t, md, want)
	}
}
