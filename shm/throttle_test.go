package shm

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStaticTokenBucket(t *testing.T) {
	rate, burst := StaticTokenBucket(3000)
	require.Equal(t, uint64(300_000_000), rate, "30% of a second of estimated device-ns per second")
	require.Equal(t, uint64(6_000_000), burst, "20 ms of it")
	rate, burst = StaticTokenBucket(MaxShareBP)
	require.Zero(t, rate)
	require.Zero(t, burst)
	rate, _ = StaticTokenBucket(0)
	require.Zero(t, rate)
	rate, burst = StaticTokenBucket(1)
	require.Equal(t, uint64(100_000), rate)
	require.Equal(t, uint64(4*TokenWaveNs), burst, "never less than a few waves")
}

// The usage region's throttle counters read back what libvgpu writes.
func TestUsageThrottleCounters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	require.NoError(t, CreateSlice(dir, SliceSpec{ID: "s", Devices: []DeviceBudget{{MemoryLimit: 1 << 30}}}))
	s, err := OpenSlice(dir)
	require.NoError(t, err)
	defer s.Close()
	ud := &s.Usage.Raw().Dev[0]
	ud.TokenSpent, ud.TokenRefilled, ud.Launches, ud.ThrottledNs = 100, 70, 3, 9
	c := s.Usage.Throttle(0)
	require.Equal(t, ThrottleCounters{Spent: 100, Refilled: 70, Launches: 3, ThrottledNs: 9}, c)
	require.Equal(t, int64(-30), c.Credit())
}
