// Package bench measures what vgpu costs: it drives the C programs under
// test/cprog (bench_*.c) bare and with libvgpu, on the simulated node or on a real
// GPU, and turns their raw samples into JSON and Markdown reports.
//
// The C side only prints raw samples; every statistic is computed here so that it
// can be unit-tested. Timing goals are reported (met / not met), never asserted:
// figures come from running the benchmark, not from timed unit tests (DESIGN §8).
package bench

import (
	"math"
	"sort"
)

// Summary describes a set of samples. The zero value (N == 0) describes no samples.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P99    float64 `json:"p99"`
	Mean   float64 `json:"mean"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Quantile returns the q-quantile (0 <= q <= 1) of sorted, interpolating linearly
// between the two nearest ranks (the R-7 / NumPy default definition): with n samples
// the quantile sits at position q*(n-1). It returns 0 for no samples.
func Quantile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if q <= 0 {
		return sorted[0]
	}
	if q >= 1 {
		return sorted[n-1]
	}
	pos := q * float64(n-1)
	lo := int(math.Floor(pos))
	hi := lo + 1
	if hi >= n {
		return sorted[n-1]
	}
	frac := pos - float64(lo)
	return sorted[lo] + frac*(sorted[hi]-sorted[lo])
}

// Summarize returns the median, p99, mean, min and max of xs. xs is not modified.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	sorted := append([]float64(nil), xs...)
	sort.Float64s(sorted)
	sum := 0.0
	for _, x := range sorted {
		sum += x
	}
	return Summary{
		N:      len(sorted),
		Median: Quantile(sorted, 0.5),
		P99:    Quantile(sorted, 0.99),
		Mean:   sum / float64(len(sorted)),
		Min:    sorted[0],
		Max:    sorted[len(sorted)-1],
	}
}

// Median returns the median of xs (0 for none). xs is not modified.
func Median(xs []float64) float64 {
	return Summarize(xs).Median
}

// scale returns s with every figure multiplied by f (e.g. ns -> ms).
func (s Summary) scale(f float64) Summary {
	s.Median *= f
	s.P99 *= f
	s.Mean *= f
	s.Min *= f
	s.Max *= f
	return s
}
