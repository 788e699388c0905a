package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIsolationCells(t *testing.T) {
	o := DefaultIsolationOptions()
	cells := isolationCells(o)
	// Per victim and configuration: flood at 0, 1, 3; churn at 1 and 3 (the
	// alone row is shared).
	require.Len(t, cells, 2*2*5)
	require.Equal(t, isoCell{Victim: VictimLatency, Aggressor: AggressorFlood, Config: IsoVgpu, N: 0}, cells[0])
	require.Equal(t, isoCell{Victim: VictimLatency, Aggressor: AggressorChurn, Config: IsoVgpu, N: 1}, cells[3])
	require.Equal(t, isoCell{Victim: VictimLatency, Aggressor: AggressorChurn, Config: IsoVgpu, N: 3}, cells[4])
	require.Equal(t, isoCell{Victim: VictimThroughput, Aggressor: AggressorFlood, Config: IsoBare, N: 3}, cells[17])
	require.Equal(t, isoCell{Victim: VictimThroughput, Aggressor: AggressorChurn, Config: IsoBare, N: 3}, cells[19])
	QuickIsolation(&o)
	require.Len(t, isolationCells(o), 2*2*5, "--quick keeps the churn rows")
	require.NoError(t, o.validate())
	o.Churn = false
	require.Len(t, isolationCells(o), 2*2*3)
	o.Peers = []Peer{{Name: "other", Lib: "/x.so"}}
	cells = isolationCells(o)
	require.Len(t, cells, 2*3*3)
	require.Equal(t, "other", cells[6].Config)
	require.Same(t, &o.Peers[0], cells[6].Peer)
	require.Equal(t, VictimLatency, cells[8].Victim)
	require.Nil(t, cells[5].Peer)
	require.NoError(t, o.validate())
}

// TestIsolationReportOnlyWhatRan: a report of bare rows only (--configs bare)
// describes no vgpu configuration, states no vgpu goal and claims none met.
func TestIsolationReportOnlyWhatRan(t *testing.T) {
	lat := Summary{N: 10, Median: 100, P99: 200}
	rows := []IsolationRow{
		{Victim: VictimLatency, Config: IsoBare, Aggressor: AggressorFlood, Aggressors: 0, StepsPerS: 100, LatencyUs: lat},
		{Victim: VictimLatency, Config: IsoBare, Aggressor: AggressorChurn, Aggressors: 3, StepsPerS: 50, LatencyUs: lat},
	}
	r := &IsolationReport{Config: IsolationConfig{VictimSharePct: 50, GoalThroughputRatio: 0.9, GoalP99Ratio: 2,
		Peers: []Peer{{Name: "other", Lib: "/other.so"}}}, Rows: rows, Notes: isolationNotes()}
	r.Evaluate()
	md := r.Markdown()
	require.NotContains(t, md, "- vgpu:")
	require.NotContains(t, md, "vgpuctl run")
	require.NotContains(t, md, "with vgpu the victim")
	require.NotContains(t, md, "goals met")
	require.NotContains(t, md, "peer other", "a peer with no rows is not described")
	require.Contains(t, md, "- bare: ")
	require.Contains(t, md, "**No goals apply**")
	require.Contains(t, md, "| latency | 3 churn | 0.50× | 1.00× |")

	// vgpu only (--configs vgpu): no bare line.
	r.Rows = []IsolationRow{{Victim: VictimThroughput, Config: IsoVgpu, Aggressor: AggressorFlood,
		Aggressors: 0, StepsPerS: 100, VictimSharePct: 50}}
	r.Evaluate()
	md = r.Markdown()
	require.Contains(t, md, "- vgpu: ")
	require.NotContains(t, md, "- bare: ")
	require.Contains(t, md, "with vgpu the victim")
}

func TestIsolationValidate(t *testing.T) {
	for _, mod := range []func(*IsolationOptions){
		func(o *IsolationOptions) { o.Victims = []string{"nosuch"} },
		func(o *IsolationOptions) { o.Configs = []string{"nosuch"} },
		func(o *IsolationOptions) { o.Aggressors = []int{-1} },
		func(o *IsolationOptions) { o.Victims = nil },
		func(o *IsolationOptions) { o.Measure = time.Millisecond },
		func(o *IsolationOptions) { o.VictimSharePct = 100 },
		func(o *IsolationOptions) { o.SMs = 0 },
		func(o *IsolationOptions) { o.Peers = []Peer{{Name: IsoVgpu, Lib: "/x.so"}} },
		func(o *IsolationOptions) { o.Peers = []Peer{{Name: "p", Lib: "/x.so"}, {Name: "p", Lib: "/y.so"}} },
	} {
		o := DefaultIsolationOptions()
		mod(&o)
		require.Error(t, o.validate())
	}
}

func TestAggressorSharePct(t *testing.T) {
	require.Equal(t, 0.0, aggressorSharePct(50, 0))
	require.Equal(t, 50.0, aggressorSharePct(50, 1))
	require.Equal(t, 16.6, aggressorSharePct(50, 3))
	require.Equal(t, 23.3, aggressorSharePct(30, 3))
}

func TestParseVictim(t *testing.T) {
	r, err := parseVictim([]string{"READY pid=7 sms=132 grid=1056", "DONE steps=3 seconds=0.500000",
		"LAT 100 200", "LAT 300"})
	require.NoError(t, err)
	require.Equal(t, uint64(3), r.steps)
	require.Equal(t, 0.5, r.seconds)
	require.Equal(t, []float64{100, 200, 300}, r.latUs)
	_, err = parseVictim([]string{"READY pid=7"})
	require.Error(t, err)
	_, err = parseVictim([]string{"DONE steps=x seconds=1"})
	require.Error(t, err)
	_, err = parseVictim([]string{"DONE steps=1 seconds=1", "LAT 1 zz"})
	require.Error(t, err)
}

func TestIsolationEvaluate(t *testing.T) {
	lat := func(p50, p99 float64) Summary { return Summary{N: 10, Median: p50, P99: p99} }
	r := &IsolationReport{Config: IsolationConfig{GoalThroughputRatio: 0.9, GoalP99Ratio: 2}, Rows: []IsolationRow{
		{Victim: VictimLatency, Config: IsoVgpu, Aggressor: AggressorFlood, Aggressors: 0, StepsPerS: 100, LatencyUs: lat(100, 200)},
		{Victim: VictimLatency, Config: IsoVgpu, Aggressor: AggressorFlood, Aggressors: 1, StepsPerS: 95, LatencyUs: lat(110, 300)},
		{Victim: VictimLatency, Config: IsoVgpu, Aggressor: AggressorFlood, Aggressors: 3, StepsPerS: 95, LatencyUs: lat(110, 500)},
		{Victim: VictimLatency, Config: IsoBare, Aggressor: AggressorFlood, Aggressors: 0, StepsPerS: 200, LatencyUs: lat(50, 100)},
		{Victim: VictimLatency, Config: IsoBare, Aggressor: AggressorFlood, Aggressors: 1, StepsPerS: 1, LatencyUs: lat(1e6, 1e6)},
		{Victim: VictimThroughput, Config: IsoVgpu, Aggressor: AggressorFlood, Aggressors: 1, StepsPerS: 10}, // no alone row
	}}
	r.Evaluate()
	require.InDelta(t, 1.0, *r.Rows[0].RelThroughput, 1e-9)
	require.Nil(t, r.Rows[0].Met)
	require.InDelta(t, 0.95, *r.Rows[1].RelThroughput, 1e-9)
	require.InDelta(t, 1.1, *r.Rows[1].RelP50, 1e-9)
	require.InDelta(t, 1.5, *r.Rows[1].RelP99, 1e-9)
	require.True(t, *r.Rows[1].Met)
	require.False(t, *r.Rows[2].Met) // p99 2.5 × alone
	require.InDelta(t, 0.005, *r.Rows[4].RelThroughput, 1e-9)
	require.InDelta(t, 1e4, *r.Rows[4].RelP99, 1e-6)
	require.Nil(t, r.Rows[4].Met) // bare: no goal
	require.Nil(t, r.Rows[5].RelThroughput)
	require.Nil(t, r.Rows[5].Met)
	require.False(t, r.AllMet)

	md := r.Markdown()
	require.Contains(t, md, "| victim | aggressors | vgpu: throughput | vgpu: p99 | bare: throughput | bare: p99 |")
	require.Contains(t, md, "| latency | 1 flood | 0.95× | 1.50× | 0.01× | 10000.00× |")
	require.Contains(t, md, "| throughput | 1 flood | — | — | | |", "no alone row, no bare row")
	require.Contains(t, md, "| latency | 1 flood | vgpu (0% / 0% each) |")
	require.Contains(t, md, "0.95×")
	require.Contains(t, md, "NOT met")
	require.Contains(t, md, "**Some goals NOT met**")
	require.Equal(t, 1, strings.Count(md, "| latency | none (alone) | bare |"))
}

func TestCommandLine(t *testing.T) {
	require.Equal(t, "bin/vgpu-bench isolation --out '' --x 'a b' 'it'\\''s'",
		CommandLine([]string{"bin/vgpu-bench", "isolation", "--out", "", "--x", "a b", "it's"}))
}

// TestIsolationComparesAPeer runs a tiny isolation benchmark (throughput victim,
// 0 and 1 aggressor, short window) with the pass-through interposer as --compare
// peer: the report carries the peer's rows beside vgpu's and bare's, with their
// ratios to the peer alone. It checks the rows, not how fast anything is.
func TestIsolationComparesAPeer(t *testing.T) {
	root := builtRoot(t, "build/test/isolation_load")
	peer, err := ParsePeer("pass=" + buildPassthrough(t, root) + ",PASSTHROUGH_COUNT=1")
	require.NoError(t, err)

	opts := DefaultIsolationOptions()
	QuickIsolation(&opts)
	opts.Root, opts.Victims, opts.Aggressors, opts.Churn = root, []string{VictimThroughput}, []int{0, 1}, false
	opts.Warmup, opts.Measure = 200*time.Millisecond, 500*time.Millisecond
	opts.Peers = []Peer{peer}
	var log strings.Builder
	opts.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunIsolation(ctx, opts)
	require.NoError(t, err, "progress:\n%s", log.String())

	require.Len(t, r.Rows, 6)
	for i, cfg := range []string{IsoVgpu, IsoVgpu, IsoBare, IsoBare, "pass", "pass"} {
		row := r.Rows[i]
		require.Equal(t, cfg, row.Config, i)
		require.Equal(t, i%2, row.Aggressors, i)
		require.Equal(t, cfg == "pass", row.Peer, i)
		require.Positive(t, row.StepsPerS, i)
		require.NotNil(t, row.RelThroughput, i)
	}
	require.InDelta(t, 1, *r.Rows[4].RelThroughput, 1e-9, "the peer alone is its own reference")
	require.Nil(t, r.Rows[5].Met, "peers have no goal")
	require.NotNil(t, r.Rows[1].Met)
	require.Equal(t, []Peer{peer}, r.Config.Peers)
	md := r.Markdown()
	require.Contains(t, md, "| throughput | none (alone) | pass |")
	require.Contains(t, md, "| throughput | 1 flood | pass |")
	require.Contains(t, md, "| throughput | 1 flood | bare |")
	require.Contains(t, md, "peer pass (`--compare`)")
	require.Contains(t, md, "LD_PRELOAD="+peer.Lib+"` `PASSTHROUGH_COUNT=1`")
}
