package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseElasticResult(t *testing.T) {
	r, err := parseElasticResult("RESULT err=0 name=CUDA_SUCCESS ns=1234567")
	require.NoError(t, err)
	require.Equal(t, elasticResult{Err: 0, Name: "CUDA_SUCCESS", Ns: 1234567}, r)
	r, err = parseElasticResult("RESULT err=2 name=CUDA_ERROR_OUT_OF_MEMORY ns=200000000")
	require.NoError(t, err)
	require.Equal(t, 2, r.Err)
	for _, bad := range []string{"", "PHASE ready", "RESULT err=x name=A ns=1", "RESULT err=0 ns=1",
		"RESULT err=0 name=A", "RESULT err=0 name=A ns=-3"} {
		_, err := parseElasticResult(bad)
		require.Error(t, err, bad)
	}
}

const elasticLog = `{"level":"info","ts":"2026-12-06T21:16:42.568Z","msg":"slice allocated","slice":"g0-0"}
not json
{"level":"info","ts":"2026-12-06T21:16:42.867Z","msg":"elastic: memory granted","slice":"g0-1"}
{"level":"info","ts":"2026-12-06T21:16:42.866Z","msg":"elastic: memory granted","slice":"g0-0"}
{"level":"info","ts":"2026-12-06T21:16:43.175Z","msg":"elastic: memory granted","slice":"g1-0"}
{"level":"info","ts":"2026-12-06T21:16:43.182Z","msg":"elastic: memory granted","slice":"g1-1"}
{"level":"info","ts":"2026-12-06T21:16:43.183Z","msg":"elastic: memory granted","slice":"borrower"}
{"level":"info","ts":"2026-12-06T21:16:43.190Z","msg":"elastic: request refused","slice":"g1-2"}
`

func TestGrantLog(t *testing.T) {
	require.Equal(t, 5, countLogMsg(elasticLog, "elastic: memory granted"))
	require.Equal(t, 1, countLogMsg(elasticLog, "elastic: request refused"))
	ts := grantLogTimes(elasticLog)
	require.Len(t, ts, 2)
	require.Len(t, ts[0], 2)
	require.True(t, ts[0][0].Before(ts[0][1]), "sorted")
	require.Equal(t, 1, planCount(ts[0], time.Millisecond))
	require.Equal(t, 2, planCount(ts[1], time.Millisecond))
	require.Equal(t, 0, planCount(nil, time.Millisecond))
	for id, want := range map[string]int{"g0-1": 0, "g12-31": 12} {
		n, ok := grantRoundOf(id)
		require.True(t, ok, id)
		require.Equal(t, want, n)
	}
	for _, id := range []string{"borrower", "g-1", "gx-1", "g3"} {
		_, ok := grantRoundOf(id)
		require.False(t, ok, id)
	}
}

func TestElasticOptionsValidate(t *testing.T) {
	ok := DefaultElasticOptions()
	require.NoError(t, ok.validate())
	for name, f := range map[string]func(o *ElasticOptions){
		"concurrency":  func(o *ElasticOptions) { o.Concurrency = []int{0} },
		"rounds":       func(o *ElasticOptions) { o.Rounds = 0 },
		"base":         func(o *ElasticOptions) { o.Base = 128 << 20 },
		"max <= base":  func(o *ElasticOptions) { o.Max = o.Base },
		"no grant":     func(o *ElasticOptions) { o.Alloc = 512 << 20 },
		"over ceiling": func(o *ElasticOptions) { o.Alloc = o.Max },
		"nothing":      func(o *ElasticOptions) { o.Concurrency, o.Reclaims = nil, 0 },
		"settle":       func(o *ElasticOptions) { o.Settle = -1 },
		"step timeout": func(o *ElasticOptions) { o.StepTimeout = 0 },
		"reclaims < 0": func(o *ElasticOptions) { o.Reclaims = -1 },
	} {
		o := DefaultElasticOptions()
		f(&o)
		require.Error(t, o.validate(), name)
	}
}

func TestElasticEvaluateAndMarkdown(t *testing.T) {
	row := func(c int, settle float64, fs string, p99 float64, refused int) ElasticGrantRow {
		return ElasticGrantRow{Concurrency: c, SettleMS: settle, StateFS: fs, Refused: refused,
			Latency: Summary{N: 10, Median: p99 / 2, P99: p99, Max: p99}, PlansPerRound: map[int]int{1: 8, 2: 2}}
	}
	rep := &ElasticReport{Benchmark: "elastic", Config: ElasticConfig{StateFS: "ext4", Concurrency: []int{1, 8}},
		Grant: []ElasticGrantRow{row(1, 150, "ext4", 3, 0), row(8, 150, "ext4", 12, 0), row(8, 0, "ext4", 40, 0),
			row(8, 150, "tmpfs", 20, 0)},
		Reclaim: &ElasticReclaim{Repeats: 1, Shrink: Summary{N: 1, Median: 10, Max: 10}, Evict: Summary{N: 1, Median: 50, Max: 50},
			BorrowedBytes: []uint64{1 << 30}, LimitBefore: []uint64{4 << 30}, LimitAfter: []uint64{3 << 30}, ExitStatus: []int{137}}}
	rep.Evaluate()
	require.True(t, rep.AllMet, "the goal row (8, settled, the state dir's filesystem) met; others only reported")
	require.Nil(t, rep.Grant[0].Met)
	require.True(t, *rep.Grant[1].Met)
	require.Nil(t, rep.Grant[2].Met, "the unsettled row has no goal")
	require.False(t, *rep.Grant[3].Met, "the tmpfs row is judged, not counted in all_met")
	md := rep.Markdown()
	for _, want := range []string{"Grant latency", "| 8 | 150 | ext4 | 10 | 6.00 | 12.00 |", "p99 ≤ 15", "1×8, 2×2",
		"Shrink and eviction", "| evict (process dead) | 1 | 50.00 |", "1 GiB (limit 4 GiB → 3 GiB)", "All goals met"} {
		require.Contains(t, md, want)
	}

	rep.Grant[0].Refused, rep.Grant[0].RefusedErrs = 2, []string{"CUDA_ERROR_OUT_OF_MEMORY", "CUDA_ERROR_OUT_OF_MEMORY"}
	rep.Grant[0].RefusedMS = []float64{100.2, 101.5}
	rep.Evaluate()
	require.False(t, rep.AllMet, "a refusal fails the run")
	require.True(t, strings.Contains(rep.Markdown(), "refused: 2× CUDA_ERROR_OUT_OF_MEMORY, after 100–102 ms"))
	notes := (&elasticRun{}).notes(rep)
	require.Contains(t, notes[0], "gave up at libvgpu's bounded wait")
}

func TestElasticNotes(t *testing.T) {
	r := &elasticRun{}
	rep := &ElasticReport{Config: ElasticConfig{StateFS: "ext4", Concurrency: []int{8}},
		Grant: []ElasticGrantRow{{Concurrency: 8, StateFS: "ext4", SettleMS: 150, Latency: Summary{N: 1, Median: 10}},
			{Concurrency: 8, StateFS: "tmpfs", SettleMS: 150, Latency: Summary{N: 1, Median: 4}}},
		WriteCosts: []ElasticWriteCost{{StateFS: "ext4", Write: Summary{N: 1, Median: 0.8}}}}
	notes := r.notes(rep)
	require.Len(t, notes, 1)
	require.Contains(t, notes[0], "median 10.00 ms with vgpud's state on ext4, 4.00 ms on tmpfs")
	require.Contains(t, notes[0], "8 grants written one after another would take ~6.4 ms")
}

func TestPlansText(t *testing.T) {
	require.Equal(t, "—", plansText(nil))
	require.Equal(t, "1×3, 2×7", plansText(map[int]int{2: 7, 1: 3}))
}

func TestElasticNotesFreshRow(t *testing.T) {
	r := &elasticRun{}
	rep := &ElasticReport{Config: ElasticConfig{StateFS: "ext4", Concurrency: []int{8}},
		Grant: []ElasticGrantRow{{Concurrency: 8, StateFS: "ext4", SettleMS: 150, Latency: Summary{N: 1, Median: 10}},
			{Concurrency: 8, StateFS: "ext4", SettleMS: 0, Latency: Summary{N: 1, Median: 20}},
			{Concurrency: 8, StateFS: "tmpfs", SettleMS: 150, Latency: Summary{N: 1, Median: 4}}}}
	notes := r.notes(rep)
	require.Len(t, notes, 2)
	require.Contains(t, notes[0], "settle-0 row")
	require.Contains(t, notes[1], "median 10.00 ms with vgpud's state on ext4", "the settled row, not the fresh one")
}
