package bench

import (
	"math"
	"time"
)

// The arithmetic of the vgpud-mode throttle benchmark: a tenant's busy time per
// NVML sample period (the periods of the device timeline, as the driver
// reports them), the share over any span, the sliding 1 s windows, and the
// settle time after a change. Instants are CLOCK_MONOTONIC nanoseconds, the
// clock the simulated device's timeline runs on.

// periodSeries is one tenant's busy ns per sample period: busy[k] is the
// period [(e0+k)*period, (e0+k+1)*period).
type periodSeries struct {
	period int64 // ns
	e0     int64 // the first period's index
	busy   []float64
}

func newPeriodSeries(period, fromNs, toNs int64) *periodSeries {
	e0 := fromNs / period
	n := max(toNs/period-e0+1, 1)
	return &periodSeries{period: period, e0: e0, busy: make([]float64, n)}
}

// add books ns of busy time spread evenly over the periods first..last
// (an NVML sample that stands for several periods); periods outside the
// series are dropped.
func (s *periodSeries) add(first, last int64, ns float64) {
	if last < first {
		return
	}
	each := ns / float64(last-first+1)
	for e := first; e <= last; e++ {
		if k := e - s.e0; k >= 0 && k < int64(len(s.busy)) {
			s.busy[k] += each
		}
	}
}

// busyBetween is the busy time in [a, b), prorating the periods at the ends
// (the device's busy time within one period is taken as spread evenly).
func (s *periodSeries) busyBetween(a, b int64) float64 {
	if b <= a {
		return 0
	}
	total := 0.0
	for e := a / s.period; e*s.period < b; e++ {
		k := e - s.e0
		if k < 0 || k >= int64(len(s.busy)) {
			continue
		}
		lo, hi := max(a, e*s.period), min(b, (e+1)*s.period)
		total += s.busy[k] * float64(hi-lo) / float64(s.period)
	}
	return total
}

// sharePct is the share of [a, b) the tenant was busy, percent.
func (s *periodSeries) sharePct(a, b int64) float64 {
	if b <= a {
		return 0
	}
	return s.busyBetween(a, b) / float64(b-a) * 100
}

// shareWindow is one sliding window of a tenant's series.
type shareWindow struct {
	Start int64   // ns, a period boundary
	Pct   float64 // share over [Start, Start+len)
}

// windowsIn returns the windows of n periods that start at a period boundary
// at or after from and end at or before to, one per period.
func (s *periodSeries) windowsIn(n int, from, to int64) []shareWindow {
	var out []shareWindow
	length := int64(n) * s.period
	for st := ceilDiv(from, s.period) * s.period; st+length <= to; st += s.period {
		out = append(out, shareWindow{Start: st, Pct: s.sharePct(st, st+length)})
	}
	return out
}

func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a > 0) == (b > 0) {
		q++
	}
	return q
}

// windowPeriods is the number of sample periods closest to the window w.
func windowPeriods(w time.Duration, period int64) int {
	return max(int(math.Round(float64(w.Nanoseconds())/float64(period))), 1)
}

// settleAfter is how long after a change at `at` the windows settled: the
// earliest window start X ≥ at such that every window starting at or after X
// (all of them end by the next change, windowsIn's `to`) is within tol points
// of want. ok is false when no window fits between the change and the next
// one (nothing to judge); never settled: -1.
func settleAfter(ws []shareWindow, at int64, want, tol float64) (settle time.Duration, ok bool) {
	if len(ws) == 0 {
		return 0, false
	}
	first := len(ws) // the first of the trailing run of windows within tol
	for i := len(ws) - 1; i >= 0; i-- {
		if math.Abs(ws[i].Pct-want) > tol {
			break
		}
		first = i
	}
	if first == len(ws) {
		return -1, true
	}
	return time.Duration(max(ws[first].Start-at, 0)), true
}

// windowErrors are the largest |achieved − want| over ws (signed: the
// window's own error) with its window, and the mean |error|.
func windowErrors(ws []shareWindow, want float64) (worst float64, at int64, mean float64) {
	if len(ws) == 0 {
		return 0, 0, 0
	}
	sum := 0.0
	for i, w := range ws {
		e := w.Pct - want
		sum += math.Abs(e)
		if i == 0 || math.Abs(e) > math.Abs(worst) {
			worst, at = e, w.Start
		}
	}
	return worst, at, sum / float64(len(ws))
}
