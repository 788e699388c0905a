package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRuntimeEvaluate(t *testing.T) {
	r := &RuntimeReport{
		Benchmark:   "runtime",
		Machine:     Machine{Hostname: "h", CPUModel: "cpu", Cores: 2, GoVersion: "go1.26", Driver: "simgpu"},
		Runc:        Summary{N: 20, Median: 25},
		Passthrough: Summary{N: 20, Median: 26},
		VGPU:        Summary{N: 20, Median: 34.5},
	}
	r.Evaluate()
	require.InDelta(t, 9.5, r.AddedMS, 1e-9)
	require.InDelta(t, 1.0, r.PassthroughAddedMS, 1e-9)
	require.True(t, r.Met)
	require.True(t, r.AllMet)
	md := r.Markdown()
	require.Contains(t, md, "| vgpu-runtime, vgpu.io/memory=1GiB | 20 | 34.50 |")
	require.Contains(t, md, "| +9.50 | ≤ 20 | met |")
	require.Contains(t, md, "All goals met")

	r.VGPU.Median = 46
	r.Evaluate()
	require.False(t, r.Met)
	require.Contains(t, r.Markdown(), "NOT met")
}

// The benchmark runs end to end (a handful of creates; its figures are not
// judged here). Root and runc: `make test` runs as root with runc installed.
func TestRunRuntimeSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the runtime benchmark creates real containers: it needs root (`make test` runs as root)")
	}
	_, err := exec.LookPath("runc")
	require.NoError(t, err, "runc is needed (`make deps` installs it)")
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	opts := DefaultRuntimeOptions()
	opts.Root, opts.Creates, opts.Warmup = root, 2, 0
	rep, err := RunRuntime(context.Background(), opts)
	require.NoError(t, err)
	require.Equal(t, 2, rep.Runc.N)
	require.Equal(t, 2, rep.Passthrough.N)
	require.Equal(t, 2, rep.VGPU.N)
	require.Greater(t, rep.VGPU.Median, 0.0)
}
