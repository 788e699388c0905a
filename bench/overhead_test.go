package bench

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOverheadRunsOnTheSimulatedNode runs the whole benchmark with tiny settings on
// the simulated node: it checks that every row is produced from the expected number
// of samples, not how fast anything is (figures come from `vgpu-bench overhead`).
func TestOverheadRunsOnTheSimulatedNode(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	require.NoError(t, pathsAt(root).check(DriverSim), "the benchmark needs the built tree")

	opts := DefaultOverheadOptions(DriverSim)
	opts.Root = root
	opts.Iters, opts.Batch, opts.Warmup, opts.Rounds = 20, 10, 2, 2
	opts.InitProcs, opts.InitRounds = []int{1, 4}, 1
	opts.RunTimeout = time.Minute
	var log strings.Builder
	opts.Log = &log

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := RunOverhead(ctx, opts)
	require.NoError(t, err, "progress:\n%s", log.String())

	require.Equal(t, "simgpu", r.Machine.Driver)
	require.NotEmpty(t, r.Machine.GPU)
	require.NotZero(t, r.Machine.GPUMemory)
	require.Len(t, r.Calls, len(AllOps)*2)
	for _, c := range r.Calls {
		want := c.Threads * opts.Iters * opts.Rounds
		require.Equal(t, want, c.Bare.N, "%s/%d bare", c.Op, c.Threads)
		require.Equal(t, want, c.VGPU.N, "%s/%d libvgpu", c.Op, c.Threads)
		require.Positive(t, c.Bare.Median)
		require.Positive(t, c.VGPU.Median)
		require.Len(t, c.RoundAddedNS, opts.Rounds)
	}
	require.Len(t, r.Init, 2)
	for _, row := range r.Init {
		require.Equal(t, row.Procs, row.Bare.N)
		require.Equal(t, row.Procs, row.VGPU.N)
		require.Equal(t, row.Procs, row.VGPULoad.N, "every process reports its load time")
		require.Positive(t, row.VGPU.Median)
	}
	require.NotNil(t, r.Growth)
	md := r.Markdown()
	require.Contains(t, md, "| cuLaunchKernel | 2 |")
	require.Contains(t, md, "| 4 |")
}

// TestOverheadNeedsTheBuild: a root without the built artifacts is a clear error.
func TestOverheadNeedsTheBuild(t *testing.T) {
	opts := DefaultOverheadOptions(DriverSim)
	opts.Root = t.TempDir()
	_, err := RunOverhead(context.Background(), opts)
	require.ErrorContains(t, err, "make build")
}
