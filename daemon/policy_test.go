package daemon

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// budgetPolicy is the throttle policy slice dir's budget records.
func budgetPolicy(t *testing.T, dir string) uint32 {
	t.Helper()
	b, err := shm.OpenBudget(dir+"/"+shm.BudgetFile, false)
	require.NoError(t, err)
	defer b.Close()
	return b.Policy()
}

// TestComputePolicy: a request's compute policy reaches the slice, its
// budget, its record (a restart keeps it) and the metrics; a request that
// names none gets vgpud's compute_policy, recorded as resolved, so changing
// the default later changes no existing slice; an unknown policy is a 400
// naming it.
func TestComputePolicy(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(2, 16*GiB))
	c, ctx := ts.client, ts.ctx

	def, err := c.Alloc(ctx, api.AllocRequest{ID: "def", MemoryBytes: GiB, ComputePercent: 20})
	require.NoError(t, err)
	require.Equal(t, api.ComputePolicyCap, def.ComputePolicy, "the built-in default")
	require.Equal(t, uint32(shm.PolicyCap), budgetPolicy(t, def.Dir))
	share, err := c.Alloc(ctx, api.AllocRequest{ID: "share", MemoryBytes: GiB, ComputePercent: 20,
		ComputePolicy: api.ComputePolicyShare})
	require.NoError(t, err)
	require.Equal(t, api.ComputePolicyShare, share.ComputePolicy)
	require.Equal(t, uint32(shm.PolicyShare), budgetPolicy(t, share.Dir))
	got, err := c.Get(ctx, "share")
	require.NoError(t, err)
	require.Equal(t, api.ComputePolicyShare, got.ComputePolicy)

	_, err = c.Alloc(ctx, api.AllocRequest{ID: "bad", MemoryBytes: GiB, ComputePolicy: "burst"})
	var se *api.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusBadRequest, se.StatusCode)
	require.ErrorContains(t, err, `unknown compute policy "burst" (want cap or share)`)

	resp, err := http.Get("http://" + ts.MetricsAddr() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), `vgpu_slice_info{compute_policy="cap",qos="guaranteed",slice="def"} 1`)
	require.Contains(t, string(body), `vgpu_slice_info{compute_policy="share",qos="guaranteed",slice="share"} 1`)

	// Restarted with share as the default: the recorded slices keep theirs,
	// a new request that names none gets share, one that names cap gets cap.
	ts.stop(t)
	cfg.ComputePolicy = api.ComputePolicyShare
	ts = startServer(t, cfg, newFakeGPUs(2, 16*GiB))
	c = ts.client
	for id, want := range map[string]api.ComputePolicy{"def": api.ComputePolicyCap, "share": api.ComputePolicyShare} {
		got, err := c.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, want, got.ComputePolicy, id)
		require.Equal(t, want.Code(), budgetPolicy(t, got.Dir), id)
	}
	s, err := c.Alloc(ctx, api.AllocRequest{ID: "new", MemoryBytes: GiB})
	require.NoError(t, err)
	require.Equal(t, api.ComputePolicyShare, s.ComputePolicy)
	require.Equal(t, uint32(shm.PolicyShare), budgetPolicy(t, s.Dir))
	s, err = c.Alloc(ctx, api.AllocRequest{ID: "capped", MemoryBytes: GiB, ComputePolicy: api.ComputePolicyCap})
	require.NoError(t, err)
	require.Equal(t, api.ComputePolicyCap, s.ComputePolicy)
	require.Equal(t, uint32(shm.PolicyCap), budgetPolicy(t, s.Dir))
}
