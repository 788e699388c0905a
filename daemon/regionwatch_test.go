package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// The region watch marks a slice whose usage file grew (and cuts it back), or
// whose budget was unlinked, once each; a released slice (vgpud's own unlink)
// is never marked; intact slices stay unmarked.
func TestRegionWatch(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, testConfig(dir), newFakeGPUs(1, 16<<30))
	grown, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "grown", MemoryBytes: 1 << 30})
	require.NoError(t, err)
	gone, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "gone", MemoryBytes: 1 << 30})
	require.NoError(t, err)
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "intact", MemoryBytes: 1 << 30})
	require.NoError(t, err)
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "released", MemoryBytes: 1 << 30})
	require.NoError(t, err)

	usage := filepath.Join(grown.Dir, shm.UsageFile)
	size := int64(shm.UsageSize(shm.DefaultSlots))
	require.NoError(t, os.Truncate(usage, size+4096))
	require.NoError(t, os.Remove(filepath.Join(gone.Dir, shm.BudgetFile)))
	require.NoError(t, ts.client.Release(ts.ctx, "released"))

	tampered := func(id string) string {
		sl, err := ts.client.Get(ts.ctx, id)
		require.NoError(t, err)
		return sl.Tampered
	}
	eventually(t, 5*time.Second, "both marked", func() bool { return tampered("grown") != "" && tampered("gone") != "" })
	require.Equal(t, "usage file grown to "+strconv.FormatInt(size+4096, 10)+" bytes (mapped "+strconv.FormatInt(size, 10)+")", tampered("grown"))
	require.Equal(t, "budget file unlinked or replaced", tampered("gone"))
	require.Empty(t, tampered("intact"))
	eventually(t, 5*time.Second, "cut back", func() bool {
		fi, err := os.Stat(usage)
		require.NoError(t, err)
		return fi.Size() == size
	})

	// Grown again: cut back again, still one event.
	require.NoError(t, os.Truncate(usage, size+8192))
	eventually(t, 5*time.Second, "cut back again", func() bool {
		fi, err := os.Stat(usage)
		require.NoError(t, err)
		return fi.Size() == size
	})
	mfs, err := ts.metrics.Registry().Gather()
	require.NoError(t, err)
	events := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "vgpu_region_tamper_events_total" {
			events = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	require.Equal(t, 2.0, events, "one event per slice")
}
