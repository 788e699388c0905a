package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/internal/testproc"
)

// A PyTorch-like tenant in a real container (grows its tensors, caches its
// temporaries, empties its cache on OOM and retries) that needs 4 GiB: with
// vgpu.io/memory=2GiB alone it stops cleanly at its cap (its OutOfMemoryError,
// exit 3); with vgpu.io/memory-max=6GiB it asks vgpud through its usage
// region, is granted memory no slice reserved, and completes.
func TestContainerElasticMemory(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB})
	args := []string{"/bin/torchlike", "4294967296", "268435456"}

	res := n.run(run{id: "capped", vgpu: true, annotations: []string{"vgpu.io/memory=2GiB", "vgpu.io/qos=burstable"},
		args: args})
	require.Equal(t, 3, res.code, "ctr: %s\noutput:\n%s", res.ctr, res.output)
	oom := testproc.LineWith(t, res.output, "OOM")
	require.Equal(t, 2*GiB-ctxMem, num(t, oom, "live"), "up to its 2 GiB, its context included")

	res = n.run(run{id: "elastic", vgpu: true,
		annotations: []string{"vgpu.io/memory=2GiB", "vgpu.io/memory-max=6GiB", "vgpu.io/qos=burstable"}, args: args})
	require.Equal(t, 0, res.code, "ctr: %s\noutput:\n%s", res.ctr, res.output)
	done := testproc.LineWith(t, res.output, "DONE")
	require.Equal(t, 4*GiB, num(t, done, "live"))
	require.Empty(t, n.slices(), "the slice is released with its container")
	require.Equal(t, uint64(0), n.deviceUsed(0))
}
