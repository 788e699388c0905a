package k8s

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/test/k8s/cluster"
)

// offeredMemory is the memory capacity the node's ResourceSlice offers.
func offeredMemory(c *cluster.Cluster) (uint64, error) {
	devs, err := nodeSlice(c)
	if err != nil {
		return 0, err
	}
	if len(devs) != 1 {
		return 0, fmt.Errorf("%d devices, want the one GPU: %v", len(devs), devs)
	}
	capacity, _ := devs[0]["capacity"].(map[string]any)
	mem, _ := capacity["memory"].(map[string]any)
	return units.ParseSize(fmt.Sprint(mem["value"]))
}

// waitOffered waits until the ResourceSlice offers want bytes of memory.
func waitOffered(t *testing.T, c *cluster.Cluster, want uint64) {
	t.Helper()
	err := cluster.WaitFor(fmt.Sprintf("the ResourceSlice offering %d bytes", want), podWait, nil, func() error {
		got, err := offeredMemory(c)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("offers %d bytes", got)
		}
		return nil
	})
	require.NoError(t, err)
}

// checkOutsideBooking: memory booked outside Kubernetes (a 12 GiB slice made
// through vgpud's API, as vgpuctl or vgpu-runtime do) is not offered to the
// scheduler, so a 6 GiB claim waits Pending instead of failing on the node;
// released, the memory is offered again and the pod runs capped.
func checkOutsideBooking(t *testing.T, c *cluster.Cluster, node *gpuNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := node.client.Alloc(ctx, api.AllocRequest{ID: "outside-k8s", MemoryBytes: 12 * GiB})
	require.NoError(t, err)
	waitOffered(t, c, 4*GiB)

	c.Apply(gpuPod("p4", "gpu-6gi"))
	waitUnschedulable(t, c, "p4", noFit)
	require.Empty(t, containersOf(t, c, "p4"))

	require.NoError(t, node.client.Release(ctx, "outside-k8s"))
	waitOffered(t, c, 16*GiB)
	requireCapped(t, waitReady(t, c, "p4"), 6*GiB)
	c.MustKubectl("delete", "pod", "p4", "-n", "default", "--wait=false")
	waitGone(t, c, "p4")
}
