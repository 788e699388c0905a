package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildPassthrough compiles test/cprog/passthrough_interposer.c as a shared
// object (the Makefile builds every file there as a program) into a temp dir.
func buildPassthrough(t *testing.T, root string) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	so := filepath.Join(t.TempDir(), "passthrough.so")
	out, err := exec.Command(cc, "-shared", "-fPIC", "-DPASSTHROUGH_SHARED", "-O2", "-Wall", "-Wextra", "-Werror",
		"-I"+filepath.Join(root, "libvgpu", "include"), "-o", so,
		filepath.Join(root, "test", "cprog", "passthrough_interposer.c"), "-ldl").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return so
}

func TestParsePeer(t *testing.T) {
	so := filepath.Join(t.TempDir(), "x.so")
	require.NoError(t, os.WriteFile(so, nil, 0o644))
	p, err := ParsePeer("other=" + so + ",A=1,B=x=y")
	require.NoError(t, err)
	require.Equal(t, Peer{Name: "other", Lib: so, Env: []string{"A=1", "B=x=y"}}, p)
	for _, bad := range []string{"", "other", "=" + so, "other=", "other=/no/such.so", "a b=" + so,
		"bare=" + so, "vgpu-mem=" + so, "other=" + so + ",NOEQ", "other=" + so + ",LD_PRELOAD=x"} {
		_, err := ParsePeer(bad)
		require.Error(t, err, bad)
	}
	_, err = ParsePeers([]string{"a=" + so, "a=" + so})
	require.ErrorContains(t, err, "twice")
}

func TestRotationAndRatio(t *testing.T) {
	require.Equal(t, []int{0, 1, 2}, rotation(3, 0))
	require.Equal(t, []int{2, 1, 0}, rotation(3, 1))
	require.Nil(t, PeerRatio(5, 0))
	require.InDelta(t, 2.5, *PeerRatio(5, 2), 1e-9)
}

// TestWorkloadComparesAPeer runs the workload benchmark with tiny settings and a
// pass-through interposer as --compare peer: the report carries the peer's row.
// It checks the rows, not how fast anything is.
func TestWorkloadComparesAPeer(t *testing.T) {
	root := builtRoot(t, "build/test/workload_step")
	peer, err := ParsePeer("passthrough=" + buildPassthrough(t, root) + ",PASSTHROUGH_COUNT=1")
	require.NoError(t, err)

	opts := DefaultWorkloadOptions()
	opts.Root, opts.Rounds, opts.Steps, opts.Warmup = root, 2, 5, 1
	opts.Launches, opts.GraphNodes, opts.NsPerBlock = 4, 2, 1000
	opts.Peers = []Peer{peer}
	var log strings.Builder
	opts.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunWorkload(ctx, opts)
	require.NoError(t, err, "progress:\n%s", log.String())

	require.Len(t, r.Rows, 4)
	for i, mode := range []string{ModeBare, ModeVGPUMem, ModeVGPUShare, "passthrough"} {
		row := r.Rows[i]
		require.Equal(t, mode, row.Mode)
		require.Equal(t, opts.Rounds*opts.Steps, row.Step.N, mode)
		require.Positive(t, row.Step.Median, mode)
	}
	require.True(t, r.Rows[3].Peer)
	require.Nil(t, r.Rows[3].Met, "peers have no goal")
	require.NotNil(t, r.Rows[1].Met)
	require.Len(t, r.Rows[3].RoundAddedPct, opts.Rounds)
	require.Equal(t, 1+4+1+2, r.Config.CallsPerStep) // HtoD, launches, graph, DtoH, sync
	md := r.Markdown()
	require.Contains(t, md, "| passthrough | 10 |")
	require.Contains(t, md, "peer passthrough: LD_PRELOAD="+peer.Lib+" PASSTHROUGH_COUNT=1")
	require.Contains(t, md, "| vgpu-share100 |")
}

// TestOverheadComparesAPeer: `overhead --compare` adds the peer's per-call rows.
func TestOverheadComparesAPeer(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	require.NoError(t, pathsAt(root).check(DriverSim), "the benchmark needs the built tree")
	peer, err := ParsePeer("passthrough=" + buildPassthrough(t, root))
	require.NoError(t, err)

	opts := DefaultOverheadOptions(DriverSim)
	opts.Root = root
	opts.Ops, opts.Threads = []string{OpLaunch, OpAlloc}, []int{1}
	opts.Iters, opts.Batch, opts.Warmup, opts.Rounds = 10, 10, 1, 2
	opts.InitProcs = nil
	opts.RunTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunOverheadCompare(ctx, opts, []Peer{peer})
	require.NoError(t, err)
	require.Len(t, r.Compare, 2)
	for _, row := range r.Compare {
		require.Equal(t, "passthrough", row.Peer)
		require.Equal(t, opts.Iters*opts.Rounds, row.Other.N)
		require.Len(t, row.RoundPeerAddedNS, opts.Rounds)
	}
	md := r.Markdown()
	require.Contains(t, md, "| passthrough | cuLaunchKernel | 1 |")
	require.Contains(t, md, "| passthrough | cuMemAlloc+cuMemFree (1 MiB) | 1 |")
}

func TestWorkloadEvaluate(t *testing.T) {
	r := &WorkloadReport{Rows: []WorkloadRow{
		{Mode: ModeBare, Step: Summary{Median: 1000, P99: 2000}},
		{Mode: ModeVGPUMem, Step: Summary{Median: 1004, P99: 2100}},
		{Mode: ModeVGPUShare, Step: Summary{Median: 1010, P99: 2000}},
		{Mode: "peer", Peer: true, Step: Summary{Median: 1008, P99: 2000}},
	}}
	r.Evaluate()
	require.InDelta(t, 0.4, r.Rows[1].AddedMedianPct, 1e-9)
	require.InDelta(t, 5, r.Rows[1].AddedP99Pct, 1e-9)
	require.True(t, *r.Rows[1].Met)
	require.False(t, *r.Rows[2].Met)
	require.False(t, r.AllMet)
	require.InDelta(t, 2, *r.Rows[3].RatioToVGPU, 1e-9)
	require.Contains(t, r.Markdown(), "2.00× libvgpu's added")
}
