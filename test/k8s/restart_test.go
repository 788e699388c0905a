package k8s

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/test/k8s/cluster"
)

// sliceIDs is vgpud's slices, id -> memory, for before/after comparisons.
func sliceIDs(node *gpuNode) map[string]uint64 {
	m := map[string]uint64{}
	for _, s := range node.slices() {
		m[s.ID] = memoryOf(s)
	}
	return m
}

func memoryOf(s api.Slice) uint64 {
	var sum uint64
	for _, d := range s.Devices {
		sum += d.MemoryBytes
	}
	return sum
}

// restartVgpud stops vgpud mid-test and starts it again: the slices, the
// running pods and their caps are all still there.
func restartVgpud(t *testing.T, c *cluster.Cluster, node *gpuNode) {
	t.Helper()
	before := sliceIDs(node)
	require.Len(t, before, 2)
	node.stopVgpud()
	node.startVgpud()
	require.Equal(t, before, sliceIDs(node), "vgpud lost nothing across its restart")
	requireRunningAndCapped(t, c, "p1", "p2")
}

// restartPlugin stops the DRA plugin and starts it again: it publishes the
// node's GPU again and re-adopts the prepared claims (their slices stay).
func restartPlugin(t *testing.T, c *cluster.Cluster, node *gpuNode) {
	t.Helper()
	before := sliceIDs(node)
	node.stopDRA()
	node.startDRA(c)
	checkResourceSlice(t, c)
	require.Equal(t, before, sliceIDs(node), "the plugin's restart released or added no slice")
	requireRunningAndCapped(t, c, "p1", "p2")
}

// requireRunningAndCapped: the pods still run, and a new process in each
// (kubectl exec) still sees its 6 GiB claim as the device.
func requireRunningAndCapped(t *testing.T, c *cluster.Cluster, pods ...string) {
	t.Helper()
	for _, name := range pods {
		p, err := getPod(c, name)
		require.NoError(t, err)
		require.Equal(t, "Running", p.Status.Phase, name)
		out, err := c.Kubectl("exec", name, "-n", "default", "--", "/bin/sh", "-c", "/bin/query </dev/null")
		require.NoError(t, err)
		q := testproc.LineWith(t, out, "QUERY")
		require.Equal(t, fmt.Sprint(6*GiB), q["cu_total"], "%s: %s", name, out)
	}
}
