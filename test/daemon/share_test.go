package daemon

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

// A `share` slice alone on a device uses the idle capacity (more than its
// share); when a second tenant takes the rest of the device it drops to its
// share (±2 points). Shares are measured from the simulated device's busy time
// per process, which the simulator books when a kernel is queued: the device
// queue is kept 100 ms deep so that what each tenant has queued at the ends of
// the 10 s window cannot move its measured share by more than a point.
func TestSharePolicyUsesIdleCapacity(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	require.NoError(t, simgpu.Init(nd.state, simgpu.Config{Devices: 1, Memory: 16 * GiB, SMs: 132,
		MaxBacklog: 100 * time.Millisecond, Force: true}))
	nd.start("--enforcer-interval", "50ms")
	flood := func(id, compute, policy string) int {
		p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--compute", compute,
			"--compute-policy", policy, "--id", id, "--", "build/test/throttle_load", "flood", "120")
		p.expect("READY")
		pid := childOf(t, p.pid())
		t.Cleanup(func() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			p.drain()
		})
		return pid
	}
	a := flood("a", "40", "share")
	time.Sleep(4 * time.Second)
	_, shares := deviceShares(t, nd, 10*time.Second, a)
	alone := shares[0]
	t.Logf("share slice alone: %.1f%% (share 40%%)", alone*100)
	require.Greater(t, alone, 0.45, "alone, a share slice uses idle capacity")

	b := flood("b", "60", "cap")
	time.Sleep(4 * time.Second)
	_, both := deviceShares(t, nd, 10*time.Second, a, b)
	t.Logf("with a 60%% neighbour: a %.1f%%, b %.1f%%", both[0]*100, both[1]*100)
	require.InDelta(t, 0.40, both[0], 0.02)
	require.InDelta(t, 0.60, both[1], 0.03)
}
