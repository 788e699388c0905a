package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const testPeriod = int64(100 * time.Millisecond)

// seriesOf builds a series from per-period shares (percent), period 100 ms,
// starting at period 10 (1 s).
func seriesOf(pcts ...float64) *periodSeries {
	s := newPeriodSeries(testPeriod, 10*testPeriod, (10+int64(len(pcts)))*testPeriod-1)
	for i, p := range pcts {
		s.add(10+int64(i), 10+int64(i), p/100*float64(testPeriod))
	}
	return s
}

func repeat(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestPeriodSeriesProratesSpans(t *testing.T) {
	s := seriesOf(100, 0, 50)
	require.Len(t, s.busy, 3)
	sec := time.Second.Nanoseconds()
	require.InDelta(t, 100, s.sharePct(sec, sec+testPeriod), 1e-9)
	require.InDelta(t, 50, s.sharePct(sec, sec+2*testPeriod), 1e-9)
	// Half of the first period and half of the second: 50 ms busy of 100.
	require.InDelta(t, 50, s.sharePct(sec+testPeriod/2, sec+3*testPeriod/2), 1e-9)
	// Outside the series: nothing.
	require.Zero(t, s.busyBetween(0, sec))
	// A sample standing for two periods is spread over both.
	s.add(10, 11, float64(testPeriod))
	require.InDelta(t, 150, s.busy[0]/float64(testPeriod)*100, 1e-9)
	require.InDelta(t, 50, s.busy[1]/float64(testPeriod)*100, 1e-9)
}

func TestWindowsSlideByOnePeriod(t *testing.T) {
	s := seriesOf(append(repeat(60, 10), repeat(30, 20)...)...)
	sec := time.Second.Nanoseconds()
	n := windowPeriods(time.Second, testPeriod)
	require.Equal(t, 10, n)
	ws := s.windowsIn(n, sec+1, 4*sec) // from is rounded up to a period boundary
	require.Len(t, ws, 20)
	require.Equal(t, sec+testPeriod, ws[0].Start)
	require.InDelta(t, 57, ws[0].Pct, 1e-9) // 9 periods at 60, 1 at 30
	require.InDelta(t, 30, ws[len(ws)-1].Pct, 1e-9)
	worst, at, mean := windowErrors(ws, 30)
	require.InDelta(t, 27, worst, 1e-9)
	require.Equal(t, ws[0].Start, at)
	require.Greater(t, mean, 0.0)
	require.Equal(t, 1, windowPeriods(time.Millisecond, testPeriod))
}

func TestSettleAfter(t *testing.T) {
	// 60% for 1 s, then 30%: the windows are within 2 points of 30 from the
	// one starting at 2.0 s − 0.0 (fully at 30) back to the first with at
	// most 2/30 of a window at 60, i.e. the window at 1.9 s has 1 period of
	// 60 (+3 points): not within; the window at 2.0 s is.
	s := seriesOf(append(repeat(60, 10), repeat(30, 20)...)...)
	sec := time.Second.Nanoseconds()
	ws := s.windowsIn(10, sec, 4*sec)
	st, ok := settleAfter(ws, sec, 30, 2)
	require.True(t, ok)
	require.Equal(t, time.Second, st)
	// Already within: 0.
	st, ok = settleAfter(ws[10:], 2*sec, 30, 2)
	require.True(t, ok)
	require.Zero(t, st)
	// The last window out of the band: never.
	st, ok = settleAfter(ws, sec, 45, 2)
	require.True(t, ok)
	require.Equal(t, time.Duration(-1), st)
	// No window: not judged.
	_, ok = settleAfter(nil, sec, 30, 2)
	require.False(t, ok)
	// A window out of the band after good ones moves the settle past it.
	bumpy := seriesOf(append(append(repeat(30, 10), 80), repeat(30, 20)...)...)
	st, _ = settleAfter(bumpy.windowsIn(10, sec, 4*sec), sec, 30, 2)
	require.Equal(t, 11*time.Duration(testPeriod), st)
}

func TestTenantFigures(t *testing.T) {
	// 90% in its first 0.5 s, 30% to 3 s, 40% after a change at 3 s until 6 s.
	pcts := append(append(repeat(90, 5), repeat(30, 25)...), repeat(40, 30)...)
	s := seriesOf(pcts...)
	sec := time.Second.Nanoseconds()
	o := DefaultThrottleVgpudOptions()
	sp := tenantSpan{target: 30, start: sec, end: 7 * sec, changes: []int64{sec, 4 * sec},
		labels: []string{"start", "join x"}}
	f := tenantFigures(s, sp, 0, o)
	require.InDelta(t, 1.0, f.StartS, 1e-9)
	require.InDelta(t, 7.0, f.EndS, 1e-9)
	require.InDelta(t, 60, f.FirstSecondPct, 1e-9) // (5×90 + 5×30) / 10
	// Steady: [2 s, 4 s) at 30 and [5 s, 7 s) at 40 → 35.
	require.InDelta(t, 4.0, f.SteadyS, 1e-9)
	require.InDelta(t, 35, f.AchievedPct, 1e-9)
	require.InDelta(t, 5, f.SteadyErrPts, 1e-9)
	require.InDelta(t, 10, f.WindowMaxErrPts, 1e-9)
	require.Len(t, f.Settles, 2)
	require.Equal(t, "start", f.Settles[0].Event)
	require.InDelta(t, 0.5, f.Settles[0].SettleS, 1e-9)
	require.Equal(t, "join x", f.Settles[1].Event)
	require.Equal(t, -1.0, f.Settles[1].SettleS)
	require.Len(t, f.PeriodPct, 60)
	require.NotEmpty(t, f.Windows)

	rep := &ThrottleVgpudReport{Config: ThrottleVgpudConfig{GoalSteadyErrPts: 2, GoalWindowErrPts: 3,
		GoalSettleS: 1, GoalFirstSecondRatio: 1.5}, Cells: []VgpudCell{{Name: "c", Tenants: []VgpudTenant{f}}}}
	rep.Evaluate()
	got := rep.Cells[0].Tenants[0]
	require.False(t, got.SteadyMet)
	require.False(t, got.WindowMet)
	require.False(t, got.SettleMet)
	require.False(t, got.FirstSecondMet) // 60 > 1.5 × 30
	require.False(t, rep.AllMet)
	require.Contains(t, goalsText(got), "NOT met: steady, window, settle, first second")
	require.Contains(t, settleText(got.Settles), "0.50 (start @ 1.0), never (join x @ 4.0)")
}
