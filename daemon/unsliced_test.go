package daemon

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
)

// TestUnslicedBytes: GET /v1/devices reports the driver memory of processes
// in no slice per device; a slice's processes are not counted, up to the
// slice's limit (what it holds beyond that is taken from everyone).
func TestUnslicedBytes(t *testing.T) {
	gpus := newFakeGPUs(2, 16*GiB)
	ts := startServer(t, testConfig(t.TempDir()), gpus)
	unsliced := func() []uint64 {
		devs, err := ts.client.Devices(ts.ctx)
		require.NoError(t, err)
		return []uint64{devs[0].UnslicedBytes, devs[1].UnslicedBytes}
	}
	require.Equal(t, []uint64{0, 0}, unsliced())

	stranger := startSleeper(t)
	gpus.setProcs(gpus.devs[0].UUID, devices.ProcessMemory{HostPID: stranger.Process.Pid, UsedBytes: 2 * GiB})
	require.Equal(t, []uint64{2 * GiB, 0}, unsliced())

	// A slice on GPU 1 owned by this test process: its child is a member.
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "s", MemoryBytes: GiB, UUIDs: []string{gpus.devs[1].UUID},
		Owner: api.Owner{Kind: api.OwnerPID, PID: os.Getpid()}})
	require.NoError(t, err)
	child := startSleeper(t)
	gpus.setProcs(gpus.devs[1].UUID, devices.ProcessMemory{HostPID: child.Process.Pid, UsedBytes: GiB / 2})
	eventually(t, 2*time.Second, "the slice's process is not unsliced", func() bool {
		return unsliced()[1] == 0
	})
	gpus.setProcs(gpus.devs[1].UUID, devices.ProcessMemory{HostPID: child.Process.Pid, UsedBytes: 3 * GiB})
	eventually(t, 2*time.Second, "what it holds above its 1GiB limit is unsliced", func() bool {
		return unsliced()[1] == 2*GiB
	})
}
