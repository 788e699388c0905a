package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// TestTopShowsComputeShare: a queue-flooding tenant under `vgpuctl run
// --compute 30` on the simulated node; vgpud's controller measures it through
// NVML's per-process utilization, and `vgpuctl top` and /metrics report its
// target (30%) and an achieved share near it. The band is generous (15–45):
// this checks the figures are wired through, not the controller's accuracy
// (vgpu-bench throttle measures that).
func TestTopShowsComputeShare(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	_, err := os.Stat(filepath.Join(nd.root, "build/test/throttle_load"))
	require.NoError(t, err, "build/test/throttle_load is missing: run `make build`")
	d := nd.start()
	p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--compute", "30", "--id", "thr", "--",
		"build/test/throttle_load", "flood", "60")
	t.Cleanup(func() {
		// On failure: SIGTERM, which vgpuctl passes on, so the workload (which
		// holds the output pipe) ends too; the helper's SIGKILL would orphan it.
		if !p.exited() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.drain()
		}
	})
	p.expect("READY")

	var cu api.ComputeUsage
	eventually(t, 30*time.Second, "top reports an achieved share between 15% and 45%", func() bool {
		top, err := nd.client.Top(bg())
		require.NoError(t, err)
		if len(top) != 1 || len(top[0].Compute) != 1 {
			return false
		}
		cu = top[0].Compute[0]
		return cu.Measured && cu.AchievedPercent >= 15 && cu.AchievedPercent <= 45
	})
	// Then it stays there: a couple of seconds later, a second's readings.
	time.Sleep(2 * time.Second)
	for i := 0; i < 5; i++ {
		top, err := nd.client.Top(bg())
		require.NoError(t, err)
		require.Len(t, top, 1)
		cu = top[0].Compute[0]
		require.True(t, cu.Measured)
		require.InDelta(t, 30, cu.AchievedPercent, 15, "achieved share, reading %d", i)
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("compute of slice thr: %+v", cu)
	require.Equal(t, 30.0, cu.TargetPercent)
	require.NotZero(t, cu.AllowedPercent)
	require.NotZero(t, cu.TokenRate, "a throttled slice has a token rate")

	// The table shows the target and a measured figure in the same row.
	out, errOut, code := nd.ctl("--socket", nd.socket, "top")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "TARGET")
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "thr" {
			row = f
			break // the slice table comes first, then the processes
		}
	}
	// 13 columns, the last (STATE) "active 3s": two fields.
	require.Len(t, row, 14, "top's row of slice thr:\n%s", out)
	require.Equal(t, "-", row[3], "ELASTIC: no ceiling")
	require.Equal(t, "30%", row[7], "TARGET")
	require.NotEqual(t, "-", row[9], "ACHIEVED is measured")
	require.Equal(t, "cap", row[10], "POLICY: vgpud's default")
	require.Equal(t, "active", row[12], "STATE: it floods the device")

	eventually(t, 30*time.Second, "metrics report target 0.3 and an achieved share in 0.15..0.45", func() bool {
		body := scrape(t, d)
		labels := `{qos="guaranteed",slice="thr",uuid="` + cu.UUID + `"}`
		a := metricValue(body, "vgpu_slice_compute_achieved_ratio"+labels)
		return metricValue(body, "vgpu_slice_compute_target_ratio"+labels) == 0.3 &&
			metricValue(body, "vgpu_slice_token_rate"+labels) > 0 && a >= 0.15 && a <= 0.45
	})

	// vgpuctl run passes SIGTERM on to the workload and releases the slice.
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitExit()
	_, err = nd.client.Get(bg(), "thr")
	require.True(t, api.IsNotFound(err), "released after the run: %v", err)
}
