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

// TestThrottleRunsOnTheSimulatedNode runs a small part of the benchmark (short
// windows) end to end: nodes made, tenants started under libvgpu, the controller
// stepping, every row produced. It checks the shape of the report, not its
// figures (those come from `vgpu-bench throttle`).
func TestThrottleRunsOnTheSimulatedNode(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	opts := DefaultThrottleOptions()
	opts.Root = root
	opts.Groups = []string{GroupFour, GroupPriority}
	opts.Workloads = []string{WorkFlood}
	opts.Window, opts.Warmup = time.Second, 300*time.Millisecond
	var log, steps strings.Builder
	opts.Log, opts.StepLog = &log, &steps

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := RunThrottle(ctx, opts)
	require.NoError(t, err, "progress:\n%s", log.String())

	require.Len(t, r.Cells, 1)
	c := r.Cells[0]
	require.Equal(t, GroupFour, c.Group)
	require.Len(t, c.Tenants, 4)
	for i, tr := range c.Tenants {
		require.Equal(t, float64(10*(i+1)), tr.TargetPct)
		require.Positive(t, tr.AchievedPct, "tenant %s ran", tr.Name)
		require.True(t, tr.Checked)
		require.Positive(t, tr.Scale)
	}
	require.InDelta(t, 1.0, c.WindowSeconds, 0.2, "the window is measured between controller steps")
	require.Len(t, r.Priority, 3)
	require.True(t, r.Priority[1].Goal)
	require.InDelta(t, 1.0, r.Priority[0].RatioToAlone, 1e-9)
	require.Contains(t, steps.String(), "rate=")

	js, err := json.Marshal(r)
	require.NoError(t, err)
	require.Contains(t, string(js), `"benchmark":"throttle"`)
	md := r.Markdown()
	require.Contains(t, md, "| four | flood | 10.00 / 20.00 / 30.00 / 40.00 |")
	require.Contains(t, md, "## Priority")
}

func TestThrottleOptionsValidate(t *testing.T) {
	o := DefaultThrottleOptions()
	require.NoError(t, o.validate())
	for name, mutate := range map[string]func(*ThrottleOptions){
		"workload": func(o *ThrottleOptions) { o.Workloads = []string{"spin"} },
		"group":    func(o *ThrottleOptions) { o.Groups = []string{"solo"} },
		"window":   func(o *ThrottleOptions) { o.Window = 0 },
		"tick":     func(o *ThrottleOptions) { o.Tick = time.Hour },
		"sms":      func(o *ThrottleOptions) { o.SMs = 0 },
		"ns":       func(o *ThrottleOptions) { o.NsPerBlock = 1 },
		"floor":    func(o *ThrottleOptions) { o.PriorityFloorBP = 10001 },
	} {
		o := DefaultThrottleOptions()
		mutate(&o)
		require.Error(t, o.validate(), name)
	}
}

// settleTime finds the first step from which the share over every later
// window stays within the tolerance.
func TestSettleTime(t *testing.T) {
	// 100 ms steps; the tenant runs at 70% until 1 s, then moves to 30% but only
	// from 1.3 s on (at 50% in between).
	const step = 100 * time.Millisecond
	var trace []traceSample
	busy := uint64(0)
	for k := 0; k <= 40; k++ {
		at := time.Duration(k) * 100 * time.Millisecond
		trace = append(trace, traceSample{At: at, Busy: []uint64{busy}})
		switch {
		case at < time.Second:
			busy += 70_000_000
		case at < 1300*time.Millisecond:
			busy += 50_000_000
		default:
			busy += 30_000_000
		}
	}
	st := settleTime(trace, 0, time.Second, 4*time.Second, 30, 2, 500*time.Millisecond, step)
	require.Equal(t, 300*time.Millisecond, st)
	require.Equal(t, time.Duration(0), settleTime(trace, 0, 0, time.Second, 70, 2, 300*time.Millisecond, step))
	require.Equal(t, time.Duration(-1), settleTime(trace, 0, time.Second, 4*time.Second, 90, 2, 500*time.Millisecond, step))
}

func TestThrottleEvaluate(t *testing.T) {
	res := &cellResult{Window: 10 * time.Second, Tenants: []TenantResult{
		{TenantSpec: TenantSpec{Name: "A"}, TargetPct: 30, AchievedPct: 31.5},
		{TenantSpec: TenantSpec{Name: "B"}, TargetPct: 70, AchievedPct: 67.5},
	}}
	c := evaluateCell(GroupPairs, WorkSync, res)
	require.InDelta(t, 2.5, c.MaxErrorPts, 1e-9)
	require.False(t, c.Met)
	require.InDelta(t, 1.5, c.Tenants[0].ErrorPts, 1e-9)

	r := &ThrottleReport{Cells: []ThrottleCell{c, evaluateCell(GroupAlone, WorkFlood, &cellResult{
		Tenants: []TenantResult{{TargetPct: 50, AchievedPct: 50.4}}})},
		Priority: []PriorityCase{{Case: "alone", RatioToAlone: 1}, {Case: "low", RatioToAlone: 0.97, Goal: true, Met: true}}}
	r.Evaluate()
	require.Equal(t, 2, r.Summary.Cells)
	require.Equal(t, 1, r.Summary.CellsMet)
	require.InDelta(t, 2.5, r.Summary.MaxErrorPts, 1e-9)
	require.InDelta(t, (1.5+2.5+0.4)/3, r.Summary.MeanAbsErrPts, 1e-9)
	require.True(t, r.Summary.PriorityMet)
	require.False(t, r.Summary.AllMet)
	md := r.Markdown()
	require.Contains(t, md, "| pairs | sync | 30.00 / 70.00 | 31.50 / 67.50 | +1.50 / -2.50 | 2.50 |")
	require.Contains(t, md, "NOT met")
}
