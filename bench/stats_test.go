package bench

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestQuantileInterpolatesBetweenRanks(t *testing.T) {
	sorted := []float64{10, 20, 30, 40}
	require.Equal(t, 10.0, Quantile(sorted, 0))
	require.Equal(t, 40.0, Quantile(sorted, 1))
	require.Equal(t, 25.0, Quantile(sorted, 0.5)) // between 20 and 30
	require.InDelta(t, 39.7, Quantile(sorted, 0.99), 1e-9)
	require.Equal(t, 0.0, Quantile(nil, 0.5))
	require.Equal(t, 7.0, Quantile([]float64{7}, 0.99))
}

func TestSummarizeKnownInputs(t *testing.T) {
	// 1..100: the median sits between 50 and 51, p99 at position 98.01.
	xs := make([]float64, 0, 100)
	for i := 100; i >= 1; i-- { // unsorted input
		xs = append(xs, float64(i))
	}
	s := Summarize(xs)
	require.Equal(t, 100, s.N)
	require.Equal(t, 50.5, s.Median)
	require.InDelta(t, 99.01, s.P99, 1e-9)
	require.Equal(t, 50.5, s.Mean)
	require.Equal(t, 1.0, s.Min)
	require.Equal(t, 100.0, s.Max)
	require.Equal(t, 100.0, xs[0], "Summarize must not reorder its input")

	odd := Summarize([]float64{5, 1, 3})
	require.Equal(t, 3.0, odd.Median)
	require.Equal(t, 3, odd.N)

	require.Equal(t, Summary{}, Summarize(nil))
}

func TestSummarizeP99SeesTheTail(t *testing.T) {
	// 990 fast samples and 10 slow ones: the median ignores them, p99 does not.
	xs := make([]float64, 0, 1000)
	for i := 0; i < 990; i++ {
		xs = append(xs, 100)
	}
	for i := 0; i < 10; i++ {
		xs = append(xs, 5000)
	}
	s := Summarize(xs)
	require.Equal(t, 100.0, s.Median)
	// Position 0.99*999 = 989.01: 1% of the way from the last fast to the first slow.
	require.InDelta(t, 100+0.01*4900, s.P99, 1e-6)
	require.Equal(t, 5000.0, s.Max)
}

func TestSummaryScale(t *testing.T) {
	s := Summarize([]float64{1e6, 2e6, 3e6}).scale(1e-6)
	require.Equal(t, 2.0, s.Median)
	require.Equal(t, 1.0, s.Min)
	require.Equal(t, 3.0, s.Max)
	require.Equal(t, 3, s.N)
}
