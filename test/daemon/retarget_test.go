package daemon

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// TestRetargetRunningSlice: a flooding tenant under `vgpuctl run --compute
// 30` is moved to 70% with `vgpuctl update` while it runs; its share of the
// device, measured from the simulator's busy time per process, is 70 ± 3
// within a few seconds, and `vgpuctl slices`, top and /metrics show the new
// target. The device queue is kept 100 ms deep (as in share_test.go) so that
// what the tenant has queued at a window's ends moves its measured share by
// under a point.
func TestRetargetRunningSlice(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	require.NoError(t, simgpu.Init(nd.state, simgpu.Config{Devices: 1, Memory: 16 * GiB, SMs: 132,
		MaxBacklog: 100 * time.Millisecond, Force: true}))
	d := nd.start("--enforcer-interval", "50ms")
	p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--compute", "30", "--id", "rt",
		"--", "build/test/throttle_load", "flood", "60")
	p.expect("READY")
	pid := childOf(t, p.pid())
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		p.drain()
	})
	time.Sleep(2 * time.Second)
	_, before := deviceShares(t, nd, 3*time.Second, pid)
	t.Logf("at 30%%: %.1f%%", before[0]*100)
	require.InDelta(t, 0.30, before[0], 0.03)

	out, errOut, code := nd.ctl("update", "rt", "--compute", "70")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "rt compute 70% policy cap\n", out)
	changed := time.Now()

	// Settled within a few seconds: a 3 s window from 1.5 s after the change.
	time.Sleep(1500 * time.Millisecond)
	_, after := deviceShares(t, nd, 3*time.Second, pid)
	t.Logf("at 70%% (from %.1f s after the update): %.1f%%", 1.5, after[0]*100)
	require.InDelta(t, 0.70, after[0], 0.03)
	require.Less(t, time.Since(changed), 6*time.Second)

	out, errOut, code = nd.ctl("slices")
	require.Equal(t, 0, code, errOut)
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[0] == "rt" {
			row = f
		}
	}
	require.NotNil(t, row, out)
	require.Equal(t, "70%", row[3], "COMPUTE in vgpuctl slices:\n%s", out)
	top, err := nd.client.Top(bg())
	require.NoError(t, err)
	require.Len(t, top, 1)
	require.Equal(t, 70.0, top[0].Compute[0].TargetPercent)
	body := scrape(t, d)
	labels := `{qos="guaranteed",slice="rt",uuid="` + top[0].Compute[0].UUID + `"}`
	require.Equal(t, 0.7, metricValue(body, "vgpu_slice_compute_target_ratio"+labels))

	// Refused beyond the device, changing nothing.
	_, errOut, code = nd.ctl("update", "rt", "--compute", "100.5")
	require.Equal(t, 2, code, errOut)
	_, err = nd.client.Alloc(bg(), api.AllocRequest{MemoryBytes: GiB, ComputePercent: 31})
	require.Error(t, err, "70% booked: 31% more does not fit")
}
