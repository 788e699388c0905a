package daemon

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDoneHistory(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var h doneHistory
	_, ok := h.doneWithin(at(0), at(10))
	require.False(t, ok, "empty")
	h.add(at(0), 0)
	h.add(at(50), 0)
	_, ok = h.doneWithin(at(0), at(50))
	require.False(t, ok, "nothing completed yet: an older libvgpu, or no marker back")

	h.add(at(100), 1000)
	h.add(at(150), 3000)
	n, ok := h.doneWithin(at(75), at(125))
	require.True(t, ok)
	require.Equal(t, uint64(1500), n, "interpolated at both ends: 500 + 1000")
	n, ok = h.doneWithin(at(100), at(400))
	require.True(t, ok)
	require.Equal(t, uint64(2000), n, "past the newest reading: the newest")
	_, ok = h.doneWithin(at(-10), at(100))
	require.False(t, ok, "older than the history")

	h.add(at(200), 10) // the region was recreated
	_, ok = h.doneWithin(at(100), at(200))
	require.False(t, ok, "a counter that went back starts afresh")

	for i := 0; i < 3*doneHistoryLen; i++ {
		h.add(at(250+50*i), uint64(100*(i+1)))
	}
	require.Equal(t, doneHistoryLen, h.n)
	n, ok = h.doneWithin(at(250+50*(3*doneHistoryLen-11)), at(250+50*(3*doneHistoryLen-1)))
	require.True(t, ok)
	require.Equal(t, uint64(1000), n)
}
