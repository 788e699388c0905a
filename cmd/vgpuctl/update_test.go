package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// TestUpdateCommand: `vgpuctl update` changes a slice's share and policy and
// prints the new state; refusals and bad usage say why.
func TestUpdateCommand(t *testing.T) {
	_, c := startDaemon(t)
	ctx := context.Background()
	_, err := c.Alloc(ctx, api.AllocRequest{ID: "u", MemoryBytes: 1 << 30, ComputePercent: 30})
	require.NoError(t, err)
	_, err = c.Alloc(ctx, api.AllocRequest{ID: "v", MemoryBytes: 1 << 30, ComputePercent: 20})
	require.NoError(t, err)

	r := vgpuctl("update", "u", "--compute", "70")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "u compute 70% policy cap\n", r.stdout)
	r = vgpuctl("update", "--compute-policy", "share", "u", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var s api.Slice
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &s))
	require.Equal(t, api.ComputePolicyShare, s.ComputePolicy)
	require.Equal(t, 70.0, s.Devices[0].ComputePercent)
	r = vgpuctl("slices")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "70%")

	r = vgpuctl("update", "v", "--compute", "40")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "does not fit")
	require.Contains(t, r.stderr, "30% compute free beside the other slices, 40% asked")
	r = vgpuctl("update", "nope", "--compute", "40")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "no such slice")

	for _, args := range [][]string{{"update"}, {"update", "u"}, {"update", "u", "v", "--compute", "5"},
		{"update", "u", "--compute", "101"}, {"update", "u", "--compute-policy", "burst"}} {
		r = vgpuctl(args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
	}
	r = vgpuctl("update", "--help")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "vgpuctl update ID")
	require.Contains(t, r.stdout, "--compute")
}
