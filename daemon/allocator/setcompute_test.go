package allocator

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// SetCompute re-checks a guaranteed slice's new shares against the others'
// and changes nothing when they do not fit; burstable shares book nothing.
func TestSetCompute(t *testing.T) {
	a := newAlloc(t, "", 16*gib, 16*gib)
	_, err := a.Allocate("g", api.AllocRequest{MemoryBytes: gib, ComputePercent: 30, DeviceCount: 2})
	require.NoError(t, err)
	_, err = a.Allocate("h", api.AllocRequest{MemoryBytes: gib, ComputePercent: 50, UUIDs: []string{uuid(0)}})
	require.NoError(t, err)
	_, err = a.Allocate("b", api.AllocRequest{MemoryBytes: gib, ComputePercent: 90, QoS: api.QoSBurstable})
	require.NoError(t, err)
	compute := func() []float64 {
		var out []float64
		for _, d := range a.Devices() {
			out = append(out, d.ComputePercent)
		}
		return out
	}
	require.Equal(t, []float64{80, 30}, compute())

	require.NoError(t, a.SetCompute("g", []float64{50, 70}))
	require.Equal(t, []float64{100, 70}, compute())

	err = a.SetCompute("g", []float64{50.01, 10})
	var refused *RefusedError
	require.ErrorAs(t, err, &refused)
	require.Len(t, refused.Reasons, 1)
	require.Contains(t, refused.Reasons[0], uuid(0)+" (index 0): 50% compute free beside the other slices, 50.01% asked")
	require.Equal(t, []float64{100, 70}, compute(), "refused: nothing changed")

	require.NoError(t, a.SetCompute("g", []float64{0, 0}), "no share: nothing reserved")
	require.Equal(t, []float64{50, 0}, compute())
	require.NoError(t, a.SetCompute("b", []float64{100}), "a burstable share is a cap only")
	require.Equal(t, []float64{50, 0}, compute())

	require.ErrorIs(t, a.SetCompute("nope", []float64{10}), ErrNotBooked)
	require.ErrorIs(t, a.SetCompute("g", []float64{10}), ErrInvalidRequest, "one share per device")
	require.ErrorIs(t, a.SetCompute("g", []float64{101, 10}), ErrInvalidRequest)
	a.Release("g")
	a.Release("h")
	require.Equal(t, []float64{0, 0}, compute(), "released: the books balance")
}
