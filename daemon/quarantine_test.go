package daemon

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/shm"
)

// corrupt damages slice id's record (and its budget too when budget is set)
// while vgpud is down.
func corrupt(t *testing.T, cfg Config, id string, budget bool) {
	t.Helper()
	dir := filepath.Join(cfg.StateDir, "slices", id)
	require.NoError(t, os.WriteFile(filepath.Join(dir, store.RecordFile), []byte(`{"version":1,"sli`), 0o644))
	if budget {
		require.NoError(t, os.WriteFile(filepath.Join(dir, shm.BudgetFile), []byte("garbage"), 0o644))
	}
}

func guaranteedOn(t *testing.T, ts *testServer, index int) uint64 {
	t.Helper()
	devs, err := ts.client.Devices(ts.ctx)
	require.NoError(t, err)
	return devs[index].GuaranteedBytes
}

// requireStatus checks that err is vgpud's answer with this status.
func requireStatus(t *testing.T, err error, status int) {
	t.Helper()
	var se *api.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, status, se.StatusCode, se.Error())
}

// The attack: corrupt a guaranteed slice's record and restart vgpud. The slice
// is quarantined, but what its budget says it holds stays booked (across
// restarts too), its id stays taken, and an operator can restore it.
func TestQuarantineKeepsBudgetBooked(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(2, 16*GiB)
	gpu0 := []string{gpus.devs[0].UUID}
	ts := startServer(t, cfg, gpus)
	big, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "big", MemoryBytes: 12 * GiB, ComputePercent: 60, UUIDs: gpu0})
	require.NoError(t, err)
	ts.stop(t)
	corrupt(t, cfg, "big", false)

	for restart := 0; restart < 2; restart++ { // held across restarts too
		ts = startServer(t, cfg, gpus)
		require.Equal(t, 12*GiB, guaranteedOn(t, ts, 0), "still booked")
		_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 8 * GiB, UUIDs: gpu0})
		requireStatus(t, err, http.StatusUnprocessableEntity)
		_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 1 * GiB, ComputePercent: 50, UUIDs: gpu0})
		requireStatus(t, err, http.StatusUnprocessableEntity) // its compute share is booked too
		_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "big", MemoryBytes: 1 * GiB, UUIDs: []string{gpus.devs[1].UUID}})
		requireStatus(t, err, http.StatusConflict)
		ts.stop(t)
	}
	ts = startServer(t, cfg, gpus)
	h, err := ts.client.Health(ts.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, h.Quarantined)
	require.Zero(t, h.Slices)

	q, err := ts.client.Quarantine(ts.ctx)
	require.NoError(t, err)
	require.Len(t, q, 1)
	require.Equal(t, "big", q[0].ID)
	require.Equal(t, api.HoldingBudget, q[0].Holding)
	require.True(t, q[0].Restorable)
	require.Contains(t, q[0].Reason, "parse record")
	require.Equal(t, big.Devices, q[0].Devices)
	require.Equal(t, api.QoSGuaranteed, q[0].QoS)
	require.DirExists(t, q[0].Dir)

	// A burstable slice reserves nothing: it still fits.
	b, err := ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 8 * GiB, QoS: api.QoSBurstable, UUIDs: gpu0})
	require.NoError(t, err)
	require.NoError(t, ts.client.Release(ts.ctx, b.ID))

	// Restored by its id: live again, same booking (not twice).
	_, err = ts.client.RestoreQuarantined(ts.ctx, "nope")
	requireStatus(t, err, http.StatusNotFound)
	sl, err := ts.client.RestoreQuarantined(ts.ctx, "big")
	require.NoError(t, err)
	require.Equal(t, big.Devices, sl.Devices)
	require.Equal(t, big.Dir, sl.Dir)
	got, err := ts.client.Get(ts.ctx, "big")
	require.NoError(t, err)
	require.Equal(t, big.Devices, got.Devices)
	require.Equal(t, 12*GiB, guaranteedOn(t, ts, 0))
	q, err = ts.client.Quarantine(ts.ctx)
	require.NoError(t, err)
	require.Empty(t, q)
	_, err = ts.client.RestoreQuarantined(ts.ctx, "big")
	requireStatus(t, err, http.StatusNotFound)

	// And stays live across a restart; released, its memory is free.
	ts.stop(t)
	ts = startServer(t, cfg, gpus)
	_, err = ts.client.Get(ts.ctx, "big")
	require.NoError(t, err)
	require.NoError(t, ts.client.Release(ts.ctx, "big"))
	require.Zero(t, guaranteedOn(t, ts, 0))
}

// Releasing a quarantined slice frees its booking and removes its files.
func TestQuarantineRelease(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(1, 16*GiB)
	ts := startServer(t, cfg, gpus)
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "big", MemoryBytes: 12 * GiB})
	require.NoError(t, err)
	ts.stop(t)
	corrupt(t, cfg, "big", false)

	ts = startServer(t, cfg, gpus)
	q, err := ts.client.Quarantine(ts.ctx)
	require.NoError(t, err)
	require.Len(t, q, 1)
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 8 * GiB})
	requireStatus(t, err, http.StatusUnprocessableEntity)

	require.NoError(t, ts.client.ReleaseQuarantined(ts.ctx, q[0].Name))
	requireStatus(t, ts.client.ReleaseQuarantined(ts.ctx, q[0].Name), http.StatusNotFound)
	require.NoDirExists(t, q[0].Dir)
	require.Zero(t, guaranteedOn(t, ts, 0))
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "big", MemoryBytes: 8 * GiB})
	require.NoError(t, err, "its memory and its id are free")
}

// A slice whose budget is unreadable too holds an unknown share: all the
// guaranteed capacity free once the readable slices are booked is held, on
// every device, until it is released; it cannot be restored.
func TestQuarantineUnknownHolding(t *testing.T) {
	cfg := testConfig(t.TempDir())
	gpus := newFakeGPUs(2, 16*GiB)
	gpu0 := []string{gpus.devs[0].UUID}
	ts := startServer(t, cfg, gpus)
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "healthy", MemoryBytes: 4 * GiB, ComputePercent: 20, UUIDs: gpu0})
	require.NoError(t, err)
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "lost", MemoryBytes: 10 * GiB, UUIDs: gpu0})
	require.NoError(t, err)
	ts.stop(t)
	corrupt(t, cfg, "lost", true)

	ts = startServer(t, cfg, gpus)
	require.Equal(t, 16*GiB, guaranteedOn(t, ts, 0))
	require.Equal(t, 16*GiB, guaranteedOn(t, ts, 1))
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 1 * GiB})
	requireStatus(t, err, http.StatusUnprocessableEntity)
	b, err := ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 1 * GiB, QoS: api.QoSBestEffort})
	require.NoError(t, err, "a best-effort slice reserves nothing")
	require.NoError(t, ts.client.Release(ts.ctx, b.ID))

	q, err := ts.client.Quarantine(ts.ctx)
	require.NoError(t, err)
	require.Len(t, q, 1)
	require.Equal(t, api.HoldingUnknown, q[0].Holding)
	require.NotEmpty(t, q[0].HoldingReason)
	require.False(t, q[0].Restorable)
	require.Equal(t, []api.SliceDevice{
		{Index: 0, UUID: gpus.devs[0].UUID, MemoryBytes: 12 * GiB, ComputePercent: 80},
		{Index: 1, UUID: gpus.devs[1].UUID, MemoryBytes: 16 * GiB, ComputePercent: 100},
	}, q[0].Devices)
	_, err = ts.client.RestoreQuarantined(ts.ctx, "lost")
	requireStatus(t, err, http.StatusUnprocessableEntity)

	// What a known slice frees is genuinely free.
	require.NoError(t, ts.client.Release(ts.ctx, "healthy"))
	s, err := ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 4 * GiB, UUIDs: gpu0})
	require.NoError(t, err)
	require.NoError(t, ts.client.Release(ts.ctx, s.ID))

	require.NoError(t, ts.client.ReleaseQuarantined(ts.ctx, "lost"))
	require.Zero(t, guaranteedOn(t, ts, 0))
	require.Zero(t, guaranteedOn(t, ts, 1))
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 16 * GiB})
	require.NoError(t, err)
}

// A budget that names a device this node does not have is not trusted: the
// holding is unknown.
func TestQuarantineBudgetOfAnotherNode(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(2, 16*GiB))
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "x", MemoryBytes: 2 * GiB, DeviceCount: 2})
	require.NoError(t, err)
	ts.stop(t)
	corrupt(t, cfg, "x", false)

	ts = startServer(t, cfg, newFakeGPUs(1, 16*GiB))
	q, err := ts.client.Quarantine(ts.ctx)
	require.NoError(t, err)
	require.Len(t, q, 1)
	require.Equal(t, api.HoldingUnknown, q[0].Holding)
	require.Contains(t, q[0].HoldingReason, "no device")
	require.Equal(t, 16*GiB, guaranteedOn(t, ts, 0))
	require.NoError(t, ts.client.ReleaseQuarantined(ts.ctx, "x"))
	require.Zero(t, guaranteedOn(t, ts, 0))
}
