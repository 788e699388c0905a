package daemon

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/shm"
)

func pctp(p float64) *float64 { return &p }

// budgetOf reads slice dir's budget as the tenants see it.
func budgetOf(t *testing.T, dir string) shm.SliceSpec {
	t.Helper()
	b, err := shm.OpenBudget(filepath.Join(dir, shm.BudgetFile), false)
	require.NoError(t, err)
	defer b.Close()
	return b.Spec()
}

func recordBytes(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, store.RecordFile))
	require.NoError(t, err)
	return b
}

// newIdleServer is a vgpud whose loop does not run, so a budget holds exactly
// what an update wrote (no controller step rewrites the token rate).
func newIdleServer(t *testing.T, cfg Config, gpus GPUs) *Server {
	t.Helper()
	s, err := New(cfg, zaptest.NewLogger(t), WithGPUs(gpus))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Shutdown(context.Background())) })
	return s
}

// An update writes the record, the booking and the budget: share, floor (a
// guaranteed slice), policy and the new share's static token rate.
func TestUpdateComputeShare(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := newIdleServer(t, cfg, newFakeGPUs(1, 16*GiB))
	a, err := s.allocate(api.AllocRequest{ID: "a", MemoryBytes: GiB, ComputePercent: 30})
	require.NoError(t, err)
	_, err = s.allocate(api.AllocRequest{ID: "b", MemoryBytes: GiB, ComputePercent: 30, QoS: api.QoSBurstable})
	require.NoError(t, err)

	got, err := s.update("a", api.UpdateRequest{ComputePercent: pctp(70), ComputePolicy: api.ComputePolicyShare})
	require.NoError(t, err)
	require.Equal(t, 70.0, got.Devices[0].ComputePercent)
	require.Equal(t, api.ComputePolicyShare, got.ComputePolicy)
	require.Equal(t, a.Devices[0].MemoryBytes, got.Devices[0].MemoryBytes, "memory untouched")
	listed, ok := s.get("a")
	require.True(t, ok)
	require.Equal(t, got, listed)
	require.Equal(t, 70.0, s.alloc.Devices()[0].ComputePercent, "booked: the guaranteed slice only")

	spec := budgetOf(t, a.Dir)
	d := spec.Devices[0]
	require.Equal(t, uint32(7000), d.ComputeShareBP)
	require.Equal(t, uint32(7000), d.ComputeFloorBP, "a guaranteed slice's floor is its share")
	rate, burst := shm.StaticTokenBucket(7000)
	require.Equal(t, rate, d.TokenRate)
	require.Equal(t, burst, d.TokenBurst)
	require.Equal(t, uint32(shm.PolicyShare), spec.Policy)
	require.Contains(t, string(recordBytes(t, a.Dir)), `"compute_percent": 70`)

	// A burstable slice reserves nothing: no floor, and it may take any share.
	got, err = s.update("b", api.UpdateRequest{ComputePercent: pctp(90)})
	require.NoError(t, err)
	require.Equal(t, 90.0, got.Devices[0].ComputePercent)
	require.Equal(t, api.ComputePolicyCap, got.ComputePolicy, "policy unchanged")
	require.Zero(t, budgetOf(t, got.Dir).Devices[0].ComputeFloorBP)

	// No share any more: the whole device, nothing reserved.
	got, err = s.update("a", api.UpdateRequest{ComputePercent: pctp(0)})
	require.NoError(t, err)
	require.Zero(t, got.Devices[0].ComputePercent)
	require.Equal(t, uint32(shm.MaxShareBP), budgetOf(t, a.Dir).Devices[0].ComputeShareBP)
	require.Zero(t, s.alloc.Devices()[0].ComputePercent)
}

// A guaranteed slice's new share must fit beside the others' (409 with what
// is free); refused, nothing changes: record, budget, bookings.
func TestUpdateOverbookingRefused(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(2, 16*GiB)
	ts := startServer(t, cfg, gpus)
	c, ctx := ts.client, ts.ctx
	gpu0 := []string{gpus.devs[0].UUID}
	a, err := c.Alloc(ctx, api.AllocRequest{ID: "a", MemoryBytes: GiB, ComputePercent: 60, UUIDs: gpu0})
	require.NoError(t, err)
	b, err := c.Alloc(ctx, api.AllocRequest{ID: "b", MemoryBytes: GiB, ComputePercent: 30, UUIDs: gpu0})
	require.NoError(t, err)
	rec, budget := recordBytes(t, b.Dir), budgetOf(t, b.Dir)

	_, err = c.Update(ctx, "b", api.UpdateRequest{ComputePercent: pctp(50)})
	requireStatus(t, err, http.StatusConflict)
	var se *api.StatusError
	require.ErrorAs(t, err, &se)
	require.Contains(t, se.Message, "does not fit")
	require.Len(t, se.Reasons, 1)
	require.Contains(t, se.Reasons[0], "40% compute free beside the other slices, 50% asked")

	require.Equal(t, rec, recordBytes(t, b.Dir), "record unchanged")
	after := budgetOf(t, b.Dir)
	require.Equal(t, budget.Devices[0].ComputeShareBP, after.Devices[0].ComputeShareBP, "budget unchanged")
	require.Equal(t, budget.Devices[0].ComputeFloorBP, after.Devices[0].ComputeFloorBP)
	devs, err := c.Devices(ctx)
	require.NoError(t, err)
	require.Equal(t, 90.0, devs[0].ComputePercent, "booking unchanged")

	// Exactly what is free fits; the other slice can then grow by nothing.
	got, err := c.Update(ctx, "b", api.UpdateRequest{ComputePercent: pctp(40)})
	require.NoError(t, err)
	require.Equal(t, 40.0, got.Devices[0].ComputePercent)
	_, err = c.Update(ctx, "a", api.UpdateRequest{ComputePercent: pctp(60.01)})
	requireStatus(t, err, http.StatusConflict)
	// Shrinking one makes room for the other.
	_, err = c.Update(ctx, "a", api.UpdateRequest{ComputePercent: pctp(20)})
	require.NoError(t, err)
	_, err = c.Update(ctx, "b", api.UpdateRequest{ComputePercent: pctp(80)})
	require.NoError(t, err)
	devs, err = c.Devices(ctx)
	require.NoError(t, err)
	require.Equal(t, 100.0, devs[0].ComputePercent)
	require.Zero(t, devs[1].ComputePercent)

	// Top and GET show the new target.
	top, err := c.Top(ctx)
	require.NoError(t, err)
	for _, u := range top {
		if u.Slice.ID == "b" {
			require.Equal(t, 80.0, u.Compute[0].TargetPercent)
		}
	}
	got, err = c.Get(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, 20.0, got.Devices[0].ComputePercent)
	eventually(t, 5*time.Second, "the controller steps with the new share", func() bool {
		for _, st := range ts.ComputeStatus() {
			if st.Slice == "b" {
				return st.TargetPct == 80
			}
		}
		return false
	})
}

// Bad input is refused with the field at fault and changes nothing.
func TestUpdateBadInput(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(1, 16*GiB)
	ts := startServer(t, cfg, gpus)
	c, ctx := ts.client, ts.ctx
	a, err := c.Alloc(ctx, api.AllocRequest{ID: "a", MemoryBytes: GiB, ComputePercent: 30})
	require.NoError(t, err)
	rec, budget := recordBytes(t, a.Dir), budgetOf(t, a.Dir)

	_, err = c.Update(ctx, "nope", api.UpdateRequest{ComputePercent: pctp(50)})
	requireStatus(t, err, http.StatusNotFound)
	for name, req := range map[string]api.UpdateRequest{
		"nothing":        {},
		"above 100":      {ComputePercent: pctp(150)},
		"negative":       {ComputePercent: pctp(-1)},
		"too fine":       {ComputePercent: pctp(0.001)},
		"bad policy":     {ComputePolicy: "burst"},
		"both forms":     {ComputePercent: pctp(50), DeviceComputePercent: map[string]float64{a.Devices[0].UUID: 50}},
		"other device":   {DeviceComputePercent: map[string]float64{"GPU-other": 50}},
		"bad per-device": {DeviceComputePercent: map[string]float64{a.Devices[0].UUID: 101}},
	} {
		_, err := c.Update(ctx, "a", req)
		requireStatus(t, err, http.StatusBadRequest)
		require.NotEmpty(t, err.Error(), name)
	}
	for _, body := range []string{`{"compute_percent": 50, "memory_bytes": 1}`, `{"compute_percent": "x"}`,
		`{"compute_percent": 50} {}`, ``} {
		req, err := http.NewRequest(http.MethodPatch, "http://vgpud/v1/slices/a", bytes.NewBufferString(body))
		require.NoError(t, err)
		resp, err := unixHTTP(cfg.Socket).Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
	}
	require.Equal(t, rec, recordBytes(t, a.Dir), "record unchanged")
	require.Equal(t, budget.Devices[0].ComputeShareBP, budgetOf(t, a.Dir).Devices[0].ComputeShareBP)
	require.Equal(t, budget.Policy, budgetOf(t, a.Dir).Policy)

	// Per device by uuid works.
	got, err := c.Update(ctx, "a", api.UpdateRequest{DeviceComputePercent: map[string]float64{a.Devices[0].UUID: 45}})
	require.NoError(t, err)
	require.Equal(t, 45.0, got.Devices[0].ComputePercent)
}

// A quarantined slice cannot be changed (409); it must be restored first.
func TestUpdateQuarantinedRefused(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(1, 16*GiB)
	ts := startServer(t, cfg, gpus)
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "q", MemoryBytes: GiB, ComputePercent: 30})
	require.NoError(t, err)
	ts.stop(t)
	corrupt(t, cfg, "q", false)
	ts = startServer(t, cfg, gpus)
	_, err = ts.client.Update(ts.ctx, "q", api.UpdateRequest{ComputePercent: pctp(50)})
	requireStatus(t, err, http.StatusConflict)
	require.Contains(t, err.Error(), "quarantined")
}

// After a restart vgpud has the updated share: record, booking and budget.
func TestUpdateSurvivesRestart(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(1, 16*GiB)
	ts := startServer(t, cfg, gpus)
	a, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "a", MemoryBytes: GiB, ComputePercent: 30})
	require.NoError(t, err)
	_, err = ts.client.Update(ts.ctx, "a", api.UpdateRequest{ComputePercent: pctp(70), ComputePolicy: api.ComputePolicyShare})
	require.NoError(t, err)
	ts.stop(t)

	ts = startServer(t, cfg, gpus)
	got, err := ts.client.Get(ts.ctx, "a")
	require.NoError(t, err)
	require.Equal(t, 70.0, got.Devices[0].ComputePercent)
	require.Equal(t, api.ComputePolicyShare, got.ComputePolicy)
	devs, err := ts.client.Devices(ts.ctx)
	require.NoError(t, err)
	require.Equal(t, 70.0, devs[0].ComputePercent)
	spec := budgetOf(t, a.Dir)
	require.Equal(t, uint32(7000), spec.Devices[0].ComputeShareBP)
	require.Equal(t, uint32(shm.PolicyShare), spec.Policy)
	// 31% more does not fit beside it.
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: GiB, ComputePercent: 31})
	requireStatus(t, err, http.StatusUnprocessableEntity)
}

// unixHTTP is a plain HTTP client over the API socket, for bodies the typed
// client cannot send.
func unixHTTP(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
}

// Updates race the enforcer loop's rate writes and a release: the race
// detector and the seqlock's generation (even once all is quiet) say they are
// serialized, and an update of a released slice is a 404.
func TestUpdateConcurrentWithLoop(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.EnforcerInterval = units.Duration(time.Millisecond)
	ts := startServer(t, cfg, newFakeGPUs(1, 16*GiB))
	a, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "a", MemoryBytes: GiB, ComputePercent: 30})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			_, err := ts.update("a", api.UpdateRequest{ComputePercent: pctp(float64(10 + i%80))})
			if err != nil {
				require.ErrorIs(t, err, errNotFound)
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, ts.client.Release(ts.ctx, "a"))
	<-done
	_, err = ts.client.Update(ts.ctx, "a", api.UpdateRequest{ComputePercent: pctp(50)})
	requireStatus(t, err, http.StatusNotFound)
	_, err = os.Stat(a.Dir)
	require.ErrorIs(t, err, os.ErrNotExist)
	devs, err := ts.client.Devices(ts.ctx)
	require.NoError(t, err)
	require.Zero(t, devs[0].ComputePercent, "no booking left behind")

	b, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "b", MemoryBytes: GiB, ComputePercent: 30})
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		_, err := ts.client.Update(ts.ctx, "b", api.UpdateRequest{ComputePercent: pctp(float64(20 + i))})
		require.NoError(t, err)
	}
	require.Zero(t, budgetOf(t, b.Dir).Devices[0].ComputeShareBP%100, "whole percents")
	bud, err := shm.OpenBudget(filepath.Join(b.Dir, shm.BudgetFile), false)
	require.NoError(t, err)
	defer bud.Close()
	require.Zero(t, bud.Generation()%2, "no write left half done")
}

// A claim's slice takes the pods its claim is reserved for now (a pod that
// joined a shared claim after it was prepared): recorded and kept across a
// restart (that their processes become the slice's members is shown with real
// pods by test/k8s). Other slices have no pods; bad pod uids are refused,
// changing nothing.
func TestUpdateClaimPods(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(1, 16*GiB)
	ts := startServer(t, cfg, gpus)
	c, ctx := ts.client, ts.ctx
	claim := api.Owner{Kind: api.OwnerClaim, ClaimUID: "0b7f1c2e-5d1a-4c56-9a43-2f8a0e0c1d11", ClaimNamespace: "ml",
		ClaimName: "shared", PodUIDs: []string{"pod-1"}}
	sl, err := c.Alloc(ctx, api.AllocRequest{ID: "claim-x", MemoryBytes: GiB, Owner: claim})
	require.NoError(t, err)
	plain, err := c.Alloc(ctx, api.AllocRequest{ID: "plain", MemoryBytes: GiB})
	require.NoError(t, err)
	rec := recordBytes(t, sl.Dir)

	for name, pods := range map[string][]string{
		"separator": {"pod-1", "../x"},
		"too many":  make([]string, api.MaxOwnerPods+1),
	} {
		_, err := c.Update(ctx, sl.ID, api.UpdateRequest{PodUIDs: &pods})
		requireStatus(t, err, http.StatusBadRequest)
		require.NotEmpty(t, err.Error(), name)
	}
	pods := []string{"pod-1"}
	_, err = c.Update(ctx, plain.ID, api.UpdateRequest{PodUIDs: &pods})
	requireStatus(t, err, http.StatusBadRequest)
	require.Contains(t, err.Error(), "only a claim's slice has pods")
	require.Equal(t, rec, recordBytes(t, sl.Dir), "refused: record unchanged")

	pods = []string{"pod-1", "pod-2"}
	got, err := c.Update(ctx, sl.ID, api.UpdateRequest{PodUIDs: &pods})
	require.NoError(t, err)
	require.Equal(t, pods, got.Owner.PodUIDs)
	require.Equal(t, "shared", got.Owner.ClaimName, "the rest of the owner kept")
	require.Equal(t, sl.Devices, got.Devices, "shares untouched")

	ts.stop(t)
	ts = startServer(t, cfg, gpus)
	got, err = ts.client.Get(ts.ctx, sl.ID)
	require.NoError(t, err)
	require.Equal(t, pods, got.Owner.PodUIDs, "recorded")
}
