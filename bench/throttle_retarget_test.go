package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A retargeted tenant is judged against the target in force: its settle after
// each retarget against the new share, its steady error against the
// time-weighted targets, windows across a target change left out of the
// worst window.
func TestTenantFiguresRetarget(t *testing.T) {
	sec := time.Second.Nanoseconds()
	// From 1 s: 30% for 3 s, then 70% (from 0.2 s after the change at 4 s)
	// until 7 s.
	s := seriesOf(append(repeat(30, 32), repeat(70, 28)...)...)
	retargets := []retargetAt{{at: 4 * sec, pct: 70}}
	sp := tenantSpan{target: 30, start: sec, end: 7 * sec, changes: []int64{sec, 4 * sec},
		labels: []string{"start", "retarget 70%"}}
	sp.targets = targetsAt(sp.changes, 30, retargets)
	require.Equal(t, []float64{30, 70}, sp.targets)
	f := tenantFigures(s, sp, 0, DefaultThrottleVgpudOptions())
	require.Equal(t, []float64{30, 70}, f.TargetsPct)
	require.Len(t, f.Settles, 2)
	require.Equal(t, "retarget 70%", f.Settles[1].Event)
	require.InDelta(t, 0.2, f.Settles[1].SettleS, 1e-9, "settled against the new target")
	// Steady: [2, 4) at 30 and [5, 7) at 70: right on the weighted target.
	require.InDelta(t, 50, f.AchievedPct, 1e-9)
	require.InDelta(t, 0, f.SteadyErrPts, 1e-9)
	require.InDelta(t, 0, f.WindowMaxErrPts, 1e-9)
	// The worst window: the first one after the change (0.2 s still at 30).
	require.InDelta(t, -8, f.WorstWindowErrPts, 1e-9)
	require.InDelta(t, 4.0, f.WorstWindowAtS, 1e-9)
	require.Equal(t, "30→70", targetText(f))

	// Join/leave changes keep the target in force.
	require.Equal(t, []float64{30, 30, 70, 70, 10},
		targetsAt([]int64{0, sec, 2 * sec, 3 * sec, 4 * sec}, 30,
			[]retargetAt{{at: 2 * sec, pct: 70}, {at: 4 * sec, pct: 10}}))
}
