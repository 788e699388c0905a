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
// for the part of each period that brings its share to the allowed one, and
// continued after it; when it is back within its share, or gone, or vgpud
// stops, they are continued for good.
func TestComputeGuardDutyCycle(t *testing.T) {
	rec := &sigRecorder{sent: map[int][]syscall.Signal{}}
	g := newComputeGuard(zaptest.NewLogger(t), enforcer.ModeEnforce)
	g.signal = rec.signal
	g.period = 200 * time.Millisecond
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }
	achieved := map[string]float64{"forger": 0.80, "honest": 0.30}
	step := func() {
		outs := []enforcer.ControlOutput{{Slice: "forger", Allowed: 0.10, Rate: 1e6, Achieved: achieved["forger"]},
			{Slice: "honest", Allowed: 0.30, Rate: 3e6, Achieved: achieved["honest"]}}
		avg := func(s string) (float64, bool) { return achieved[s], true }
		g.observe("GPU-a", outs, 50*time.Millisecond, avg, map[string][]int{"forger": {101, 102}, "honest": {201}})
		now = now.Add(50 * time.Millisecond)
	}
	key := sliceDev{"forger", "GPU-a"}

	step()
	require.EqualValues(t, 1, g.events)
	require.Equal(t, []syscall.Signal{syscall.SIGSTOP}, rec.of(101))
	require.Equal(t, []syscall.Signal{syscall.SIGSTOP}, rec.of(102))
	require.Empty(t, rec.of(201), "a slice within its share is never signalled")
	require.InDelta(t, 1-0.10/0.80, g.cycles[key].stopped, 1e-9, "runs the part of the period its share allows")
	require.Eventually(t, func() bool { return len(rec.of(101)) == 2 }, time.Second, time.Millisecond)
	require.Equal(t, syscall.SIGCONT, rec.of(101)[1], "continued after its part of the period")

	// Next period: measured at twice its share while running an eighth of the
	// time: it runs half as long.
	achieved["forger"] = 0.20
	for i := 0; i < 4; i++ {
		step()
	}
	require.InDelta(t, 1-0.125*0.10/0.20, g.cycles[key].stopped, 1e-9)
	require.EqualValues(t, 1, g.events, "one report per episode")

	// Within its share: it runs more and more, then freely, and the cycle ends
	// with a last continue.
	achieved["forger"] = 0.05
	for i := 0; i < 200 && g.cycles[key] != nil; i++ {
		step()
	}
	require.Nil(t, g.cycles[key])
	sigs := rec.of(102)
	require.Equal(t, syscall.SIGCONT, sigs[len(sigs)-1])

	// Over again, then the slice leaves: continued at once.
	achieved["forger"] = 0.9
	step()
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
			g.observe("GPU-a", outs, 100*time.Millisecond, avg, map[string][]int{"forger": {101}})
		}
		require.Empty(t, rec.of(101), mode)
		if mode == enforcer.ModeReport {
			require.EqualValues(t, 1, g.events)
		} else {
			require.Zero(t, g.events)
		}
	}
}

// A slice still over its share while stopped for most of each period has a
// device queue deeper than the period: the period doubles, up to its bound.
func TestComputeGuardPeriodGrowsWithADeepQueue(t *testing.T) {
	rec := &sigRecorder{sent: map[int][]syscall.Signal{}}
	g := newComputeGuard(zaptest.NewLogger(t), enforcer.ModeEnforce)
	g.signal = rec.signal
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }
	outs := []enforcer.ControlOutput{{Slice: "forger", Allowed: 0.10, Rate: 1e6, Achieved: 0.9}}
	avg := func(string) (float64, bool) { return 0.9, true } // the queue keeps it busy
	key := sliceDev{"forger", "GPU-a"}
	var lengths []time.Duration
	for i := 0; i < 1000; i++ {
		g.observe("GPU-a", outs, 50*time.Millisecond, avg, map[string][]int{"forger": {101}})
		if l := g.cycles[key].length; len(lengths) == 0 || lengths[len(lengths)-1] != l {
			lengths = append(lengths, l)
		}
		now = now.Add(50 * time.Millisecond)
	}
	require.Equal(t, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}, lengths)
	require.InDelta(t, maxStopped, g.cycles[key].stopped, 1e-9)
	g.close()
	require.Empty(t, g.cycles)
}

// The first tick of a vgpud continues every member of every slice once (a
// vgpud killed mid-stop left them stopped), in enforce mode only.
func TestComputeGuardResumesOnce(t *testing.T) {
	rec := &sigRecorder{sent: map[int][]syscall.Signal{}}
	g := newComputeGuard(zaptest.NewLogger(t), enforcer.ModeEnforce)
	g.signal = rec.signal
	members := map[string][]int{"a": {11, 12}, "b": {21}}
	g.resumeOnce(members)
	g.resumeOnce(members)
	for _, pid := range []int{11, 12, 21} {
		require.Equal(t, []syscall.Signal{syscall.SIGCONT}, rec.of(pid))
	}
	r := newComputeGuard(zaptest.NewLogger(t), enforcer.ModeReport)
	r.signal = rec.signal
	r.resumeOnce(map[string][]int{"c": {31}})
	require.Empty(t, rec.of(31), "report mode signals nobody")
}
