package daemon

import (
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/vgpu-project/vgpu/enforcer"
)

type sigRecorder struct {
	mu   sync.Mutex
	sent map[int][]syscall.Signal
}

func (r *sigRecorder) signal(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent[pid] = append(r.sent[pid], sig)
	return nil
}

func (r *sigRecorder) of(pid int) []syscall.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]syscall.Signal(nil), r.sent[pid]...)
}

// A slice measured above its allowed share (its bucket forged) is reported
// once; in enforce mode its member processes — and only they — are stopped
// for a growing part of each tick and continued after it; when it is back
// within its share, or gone, or vgpud stops, they are continued for good.
func TestComputeGuardDutyCycle(t *testing.T) {
	rec := &sigRecorder{sent: map[int][]syscall.Signal{}}
	g := newComputeGuard(zaptest.NewLogger(t), enforcer.ModeEnforce)
	g.signal = rec.signal
	outs := []enforcer.ControlOutput{{Slice: "forger", Allowed: 0.10, Rate: 1e6},
		{Slice: "honest", Allowed: 0.30, Rate: 3e6}}
	achieved := map[string]float64{"forger": 0.85, "honest": 0.30}
	avg := func(s string) (float64, bool) { return achieved[s], true }
	members := map[string][]int{"forger": {101, 102}, "honest": {201}}

	g.observe("GPU-a", outs, avg, members, 100*time.Millisecond)
	require.EqualValues(t, 1, g.events)
	require.Equal(t, []syscall.Signal{syscall.SIGSTOP}, rec.of(101))
	require.Equal(t, []syscall.Signal{syscall.SIGSTOP}, rec.of(102))
	require.Empty(t, rec.of(201), "a slice within its share is never signalled")
	first := g.cycles[sliceDev{"forger", "GPU-a"}].stopped
	require.Greater(t, first, 0.0)
	require.Eventually(t, func() bool { return len(rec.of(101)) == 2 }, time.Second, time.Millisecond)
	require.Equal(t, syscall.SIGCONT, rec.of(101)[1], "continued after its part of the tick")

	g.observe("GPU-a", outs, avg, members, 100*time.Millisecond)
	require.Greater(t, g.cycles[sliceDev{"forger", "GPU-a"}].stopped, first, "still over: stopped longer")
	require.EqualValues(t, 1, g.events, "one report per episode")

	// Back within its share: the stopped part shrinks to nothing, then the
	// cycle ends with a last continue.
	achieved["forger"] = 0.0
	for i := 0; i < 100 && g.cycles[sliceDev{"forger", "GPU-a"}] != nil; i++ {
		g.observe("GPU-a", outs, avg, members, 100*time.Millisecond)
	}
	require.Nil(t, g.cycles[sliceDev{"forger", "GPU-a"}])
	sigs := rec.of(102)
	require.Equal(t, syscall.SIGCONT, sigs[len(sigs)-1])

	// Over again, then the slice leaves: continued at once.
	achieved["forger"] = 0.9
	g.observe("GPU-a", outs, avg, members, 100*time.Millisecond)
	require.EqualValues(t, 2, g.events)
	g.forget(map[sliceDev]bool{{"honest", "GPU-a"}: true})
	require.Empty(t, g.cycles)
	sigs = rec.of(101)
	require.Equal(t, syscall.SIGCONT, sigs[len(sigs)-1])
	require.Empty(t, rec.of(201))
}

// Report mode reports and signals nobody; off mode does nothing.
func TestComputeGuardReportAndOff(t *testing.T) {
	for _, mode := range []enforcer.Mode{enforcer.ModeReport, enforcer.ModeOff} {
		rec := &sigRecorder{sent: map[int][]syscall.Signal{}}
		g := newComputeGuard(zaptest.NewLogger(t), mode)
		g.signal = rec.signal
		outs := []enforcer.ControlOutput{{Slice: "forger", Allowed: 0.10, Rate: 1e6}}
		avg := func(string) (float64, bool) { return 0.85, true }
		for i := 0; i < 3; i++ {
			g.observe("GPU-a", outs, avg, map[string][]int{"forger": {101}}, 100*time.Millisecond)
		}
		require.Empty(t, rec.of(101), mode)
		if mode == enforcer.ModeReport {
			require.EqualValues(t, 1, g.events)
		} else {
			require.Zero(t, g.events)
		}
	}
}
