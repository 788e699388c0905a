package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// A slice vgpud found tampered with is flagged in `slices` (REGIONS column and
// a line saying how) and in `top` (a line after the table).
func TestTamperedShown(t *testing.T) {
	ok := api.Slice{ID: "fine", Devices: []api.SliceDevice{{MemoryBytes: 1 << 30}}}
	bad := api.Slice{ID: "bad", Devices: []api.SliceDevice{{MemoryBytes: 1 << 30}},
		Tampered: "usage file grown to 8192 bytes (mapped 4096)"}
	require.Equal(t, "ok", regionState(ok))
	require.Equal(t, "TAMPERED", regionState(bad))

	var out bytes.Buffer
	require.NoError(t, printTampered(&out, []api.Slice{ok, bad}))
	require.Equal(t, "slice bad: region tampered with: usage file grown to 8192 bytes (mapped 4096)\n", out.String())

	out.Reset()
	require.NoError(t, printTop(&out, []api.SliceUsage{{Slice: ok}, {Slice: bad}}))
	require.Contains(t, out.String(), "slice bad: region tampered with: usage file grown")
	require.NotContains(t, out.String(), "slice fine: region")
}
