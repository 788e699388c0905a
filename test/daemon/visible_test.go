package daemon

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

// TestRunSeesOnlyItsSlice: a `vgpuctl run` slice forced onto GPU 1 of a
// two-GPU node runs its command with CUDA_VISIBLE_DEVICES=<GPU 1's uuid>, so
// the command's CUDA device 0 is GPU 1: it allocates there up to its 1 GiB
// (its context's 256 MiB included) and the driver shows nothing on GPU 0.
// Before vgpuctl set it, the command ran on GPU 0, outside its slice, and
// libvgpu refused every allocation.
func TestRunSeesOnlyItsSlice(t *testing.T) {
	nd := newNode(t, 2, 16*GiB)
	nd.start()
	st, err := simgpu.Status(nd.state)
	require.NoError(t, err)
	gpu1 := st.Devices[1].UUID

	// The caller's own CUDA_VISIBLE_DEVICES is replaced by the slice's.
	p := nd.startProc(nd.env("CUDA_VISIBLE_DEVICES=0"), "bin/vgpuctl", "run", "--uuid", gpu1, "--memory", "1GiB",
		"--id", "on1", "--", "build/test/alloc", "--api", "alloc", "--chunk", "64MiB", "--until-oom", "--step")
	p.expect("PHASE ready")
	p.next()
	res := p.expect("RESULT")
	p.expect("PHASE allocated")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"], p.stderr())
	admitted, err := strconv.ParseUint(res["admitted"], 10, 64)
	require.NoError(t, err)
	require.Equal(t, 1*GiB, admitted+256*MiB, "allocations + the context's 256 MiB fill the 1 GiB slice")

	st, err = simgpu.Status(nd.state)
	require.NoError(t, err)
	require.Equal(t, 1*GiB, st.Devices[1].Used, "the driver holds the slice's 1 GiB on GPU 1")
	require.Equal(t, uint64(0), st.Devices[0].Used, "nothing on GPU 0, not even a context")
	require.Empty(t, st.Devices[0].Processes)

	eventually(t, lineTimeout, "top shows the slice's device charged", func() bool {
		top, err := nd.client.Top(bg())
		require.NoError(t, err)
		require.Len(t, top, 1)
		require.Equal(t, gpu1, top[0].Slice.Devices[0].UUID)
		return top[0].UsedBytes[0] == 1*GiB
	})

	p.next()
	require.Equal(t, 0, p.wait(), p.stderr())
	require.Contains(t, p.stderr(), "vgpuctl: slice on1 (1GiB on GPU 1)")
}
