package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/internal/testproc"
)

// TestNodeWithoutCDISpecFailsTheRun: through containerd, a vGPU container on
// a node whose GPUs have no CDI spec (the simulated node's removed), or a
// malformed one, fails at create with the runtime's message, which says how
// to generate the spec, and no slice is left. The spec back, the same request
// runs.
func TestNodeWithoutCDISpecFailsTheRun(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB})
	spec := filepath.Join(n.cdiDir(), "nvidia.json")
	good, err := os.ReadFile(spec)
	require.NoError(t, err)
	require.NoError(t, os.Remove(spec))

	res := n.run(run{id: "nospec", vgpu: true, annotations: []string{"vgpu.io/memory=1GiB"}, args: []string{"/bin/query"}})
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.ctr, "no CDI device of kind nvidia.com/gpu")
	require.Contains(t, res.ctr, "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml")
	require.Empty(t, n.slices())

	require.NoError(t, os.WriteFile(spec, []byte(`{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [`), 0o644))
	res = n.run(run{id: "badspec", vgpu: true, annotations: []string{"vgpu.io/memory=1GiB"}, args: []string{"/bin/query"}})
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.ctr, "could not be loaded")
	require.Contains(t, res.ctr, spec)
	require.Empty(t, n.slices())

	require.NoError(t, os.WriteFile(spec, good, 0o644))
	res = n.run(run{id: "withspec", vgpu: true, annotations: []string{"vgpu.io/memory=1GiB"}, args: []string{"/bin/query"}})
	require.Equal(t, 0, res.code, "ctr: %s\noutput:\n%s", res.ctr, res.output)
	require.Equal(t, 1*GiB, num(t, testproc.LineWith(t, res.output, "QUERY"), "cu_total"))
	require.Empty(t, n.slices())
}
