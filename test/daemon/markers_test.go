package daemon

import (
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// A tenant forges its completion markers (usage token_done far ahead of what
// ran, its sampled launch timings absurdly cheap), so that vgpud's controller
// would learn that its tokens cost nothing and lift its rate. The controller
// ignores the implausible timings; the forged completions do lift the rate,
// and the compute backstop, which judges the slice from NVML alone, holds the
// forger near its share from outside. Its honest neighbour keeps its share
// within 3 points (it measured 47.8–48.2 %: between stops the forger's bursts
// fill the device queue its launches then wait behind) and vgpud stays up.
func TestAttackForgedMarkersHurtNoNeighbour(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	require.NoError(t, simgpu.Init(nd.state, simgpu.Config{Devices: 1, Memory: 16 * GiB, SMs: 132,
		MaxBacklog: 100 * time.Millisecond, Force: true}))
	d := nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	flood := func(id, compute string) int {
		p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--compute", compute, "--id", id,
			"--", "build/test/throttle_load", "flood", "120")
		p.expect("READY")
		pid := childOf(t, p.pid())
		t.Cleanup(func() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			p.drain()
		})
		return pid
	}
	neighbour := flood("honest", "50")
	forger := flood("forger", "10")
	sl, err := nd.client.Get(bg(), "forger")
	require.NoError(t, err)
	u, err := shm.OpenUsage(filepath.Join(sl.Dir, shm.UsageFile))
	require.NoError(t, err)
	defer u.Close()
	stop, forged := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(forged)
		ud := &u.Raw().Dev[0]
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			atomic.AddUint64(&ud.TokenDone, 1<<36) // "completed": far more than ran
			atomic.StoreUint64(&ud.SampledTokens, 1<<62)
			atomic.StoreUint64(&ud.SampledNs, 1)
		}
	}()
	defer func() { close(stop); <-forged }()

	time.Sleep(8 * time.Second) // the controller and the backstop settle
	_, shares := deviceShares(t, nd, 10*time.Second, forger, neighbour)
	t.Logf("forger %.1f%% (share 10%%), honest neighbour %.1f%% (share 50%%)", shares[0]*100, shares[1]*100)
	recs := d.logRecords("compute backstop: slice runs above its share (its token bucket does not hold it)")
	require.NotEmpty(t, recs, "the forgery lifts the forger's rate and the overrun is caught; log:\n%s", d.log())
	require.Equal(t, "forger", recs[0]["slice"])
	require.LessOrEqual(t, shares[0], 0.15, "held near its share from outside")
	require.InDelta(t, 0.50, shares[1], 0.03, "the neighbour keeps its share")
	require.NoError(t, d.cmd.Process.Signal(syscall.Signal(0)), "vgpud is up")
}
