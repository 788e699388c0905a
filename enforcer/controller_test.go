package enforcer

import (
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/shm"
)

// A deterministic model of a device and its slices (no sleeping, no processes):
// each step every slice wants `demand` of the device (1 = a flood), its bucket
// grants rate*dt tokens, a token buys `scale` device-ns (the kernel's real wave
// time over the nominal one — what differs between GPUs with different SM counts
// or kernels), and a device asked for more than it has serves everyone in
// proportion to what they submit (a FIFO queue).
type plantSlice struct {
	in     ControlInput
	demand float64
	// lost is the fraction of its grant a throttled slice fails to spend (the
	// bucket's depth clipping credit, sleep granularity).
	lost     float64
	counters shm.ThrottleCounters
	history  []float64 // achieved per step, newest last
}

type plant struct {
	scale  float64
	slices []*plantSlice
	// lag averages the measurement over this many steps (NVML reports over a
	// sliding window); 0 or 1: the step itself.
	lag int
}

const step = 50 * time.Millisecond

// advance runs the device for one step under the given outputs and fills the
// slices' inputs for the controller.
func (p *plant) advance(outs []ControlOutput) {
	dt := step.Seconds()
	spend := make([]float64, len(p.slices)) // tokens per second
	use := 0.0
	for i, s := range p.slices {
		want := s.demand * 1e9 / p.scale
		grant := math.Inf(1)
		if outs != nil && outs[i].Rate != 0 {
			grant = float64(outs[i].Rate)
		}
		throttled := want > grant
		spend[i] = math.Min(want, grant)
		if throttled {
			spend[i] *= 1 - s.lost
			s.counters.ThrottledNs += uint64(step)
		}
		use += spend[i] * p.scale / 1e9
	}
	if use > 1 {
		for i := range spend {
			spend[i] /= use
		}
	}
	for i, s := range p.slices {
		tokens := spend[i] * dt
		s.counters.Spent += uint64(tokens)
		s.counters.Refilled += uint64(tokens)
		if tokens > 0 {
			s.counters.Launches++
		}
		s.history = append(s.history, spend[i]*p.scale/1e9)
		n := max(p.lag, 1)
		if n > len(s.history) {
			n = len(s.history)
		}
		sum := 0.0
		for _, v := range s.history[len(s.history)-n:] {
			sum += v
		}
		if p.lag <= 1 {
			// libvgpu's completion markers: the step's work, done within it.
			s.counters.Done += uint64(tokens)
			s.in.Done, s.in.DoneKnown = uint64(tokens), true
		}
		s.in.Counters = s.counters
		s.in.Achieved = sum / float64(n)
		s.in.Measured = true
	}
}

func (p *plant) inputs() []ControlInput {
	in := make([]ControlInput, len(p.slices))
	for i, s := range p.slices {
		in[i] = s.in
	}
	return in
}

// run steps controller and plant n times from t, returning the last outputs and
// the new time.
func (p *plant) run(t *testing.T, c *Controller, now time.Time, n int, outs []ControlOutput,
	check func(k int, outs []ControlOutput)) ([]ControlOutput, time.Time) {
	t.Helper()
	for k := 0; k < n; k++ {
		p.advance(outs)
		now = now.Add(step)
		outs = c.Step(now, p.inputs())
		require.Len(t, outs, len(p.slices))
		if check != nil {
			check(k, outs)
		}
	}
	return outs, now
}

func slice(id string, shareBP uint32, policy uint32, demand float64) *plantSlice {
	return &plantSlice{in: ControlInput{Slice: id, ShareBP: shareBP, Policy: policy}, demand: demand}
}

func achieved(p *plant, i int) float64 { return p.slices[i].history[len(p.slices[i].history)-1] }

var t0 = time.Unix(1000, 0)

// The loop's gain does not depend on what a token buys: with kernels 0.3x, 1x
// or 3.7x the nominal wave time (a GPU with more or fewer SMs than the estimate
// assumes, longer kernels...) a cap converges along the same path, in the same
// number of steps, to the same share.
func TestControllerGainIndependentOfScale(t *testing.T) {
	var paths [][]float64
	for _, scale := range []float64{0.3, 1, 3.7} {
		p := &plant{scale: scale, slices: []*plantSlice{slice("a", 3000, shm.PolicyCap, 1)}}
		c := NewController(ControllerConfig{})
		outs := c.Step(t0, p.inputs())
		var path []float64
		p.run(t, c, t0, 40, outs, func(k int, o []ControlOutput) { path = append(path, achieved(p, 0)) })
		require.InDelta(t, 0.30, path[len(path)-1], 0.001, "scale %g", scale)
		require.InDelta(t, scale, c.slices["a"].scale, scale*0.001, "the controller learns the scale")
		paths = append(paths, path)
	}
	// After the first step (which ran on the static rate, wrong by the scale),
	// the achieved shares are the same at every step.
	for k := 2; k < len(paths[0]); k++ {
		require.InDelta(t, paths[1][k], paths[0][k], 1e-6, "step %d", k)
		require.InDelta(t, paths[1][k], paths[2][k], 1e-6, "step %d", k)
	}
}

// How many processes a slice has does not enter the loop: they share one
// bucket and the controller sees only the slice's counters. A slice of 8
// processes (8 demands adding up to a flood) is driven exactly like 1.
func TestControllerIndependentOfProcessCount(t *testing.T) {
	run := func(procs int) []float64 {
		p := &plant{scale: 2, slices: []*plantSlice{slice("a", 4000, shm.PolicyCap, float64(procs)*0.9)}}
		c := NewController(ControllerConfig{})
		outs := c.Step(t0, p.inputs())
		var path []float64
		p.run(t, c, t0, 20, outs, func(int, []ControlOutput) { path = append(path, achieved(p, 0)) })
		return path
	}
	one, eight := run(2), run(8) // both want more than the share
	require.InDeltaSlice(t, one[1:], eight[1:], 1e-9)
	require.InDelta(t, 0.40, one[len(one)-1], 0.001)
}

// A cap is never exceeded even alone on an idle device, and a change of target
// takes effect at the next step once the scale is known.
func TestControllerCapAndTargetChange(t *testing.T) {
	p := &plant{scale: 1.3, slices: []*plantSlice{slice("a", 3000, shm.PolicyCap, 1)}}
	c := NewController(ControllerConfig{})
	outs := c.Step(t0, p.inputs())
	outs, now := p.run(t, c, t0, 20, outs, func(k int, o []ControlOutput) {
		require.LessOrEqual(t, o[0].Allowed, 0.30+1e-12, "a cap is never allowed above its share")
	})
	require.InDelta(t, 0.30, achieved(p, 0), 0.001)

	// The controller sees the new target at its next step; the step after runs
	// at it.
	p.slices[0].in.ShareBP = 7000
	outs, now = p.run(t, c, now, 2, outs, nil)
	require.InDelta(t, 0.70, achieved(p, 0), 0.001, "settled one step after the change")

	p.slices[0].in.ShareBP = 1000
	p.run(t, c, now, 2, outs, nil)
	require.InDelta(t, 0.10, achieved(p, 0), 0.001)
}

// share policy: alone, a slice uses the idle device; when a second one becomes
// active both get their shares; when the second goes idle again, the first
// takes the capacity back.
func TestControllerSharePolicyUsesIdleCapacity(t *testing.T) {
	a := slice("a", 3000, shm.PolicyShare, 1)
	b := slice("b", 7000, shm.PolicyShare, 0)
	p := &plant{scale: 0.8, slices: []*plantSlice{a, b}}
	c := NewController(ControllerConfig{})
	outs := c.Step(t0, p.inputs())
	outs, now := p.run(t, c, t0, 40, outs, nil)
	require.Greater(t, achieved(p, 0), 0.97, "alone, a share slice uses the idle device")

	b.demand = 1
	outs, now = p.run(t, c, now, 20, outs, nil)
	require.InDelta(t, 0.30, achieved(p, 0), 0.002)
	require.InDelta(t, 0.70, achieved(p, 1), 0.002)

	b.demand = 0
	outs, _ = p.run(t, c, now, 40, outs, nil)
	require.Greater(t, achieved(p, 0), 0.97, "b's share is lent again once b is idle")
	require.False(t, outs[1].Active)
}

// An active share slice keeps its share reserved even while it uses less: a
// flood next to it is not lent the difference (a light, latency-bound tenant
// would otherwise be squeezed by the flood's queue).
func TestControllerActiveShareIsNotLent(t *testing.T) {
	light := slice("light", 5000, shm.PolicyShare, 0.2)
	flood := slice("flood", 5000, shm.PolicyShare, 1)
	p := &plant{scale: 1, slices: []*plantSlice{light, flood}}
	c := NewController(ControllerConfig{})
	outs := c.Step(t0, p.inputs())
	outs, _ = p.run(t, c, t0, 40, outs, nil)
	require.InDelta(t, 0.5, outs[1].Allowed, 1e-9)
	require.InDelta(t, 0.5, achieved(p, 1), 0.002)
	require.InDelta(t, 0.2, achieved(p, 0), 0.002)
	require.GreaterOrEqual(t, outs[0].Allowed, 0.5, "the light slice keeps its guarantee")
}

// Two caps and four caps split the device at their targets.
func TestControllerSeveralCaps(t *testing.T) {
	for _, shares := range [][]uint32{{3000, 7000}, {1000, 9000}, {1000, 2000, 3000, 4000}} {
		p := &plant{scale: 1.7}
		for i, s := range shares {
			p.slices = append(p.slices, slice(string(rune('a'+i)), s, shm.PolicyCap, 1))
		}
		c := NewController(ControllerConfig{})
		outs := c.Step(t0, p.inputs())
		p.run(t, c, t0, 40, outs, nil)
		for i, s := range shares {
			require.InDelta(t, float64(s)/shm.MaxShareBP, achieved(p, i), 0.002, "shares %v slice %d", shares, i)
		}
	}
}

// While a higher-priority slice is active, lower ones are held to their floor;
// once it has been idle for ActiveHold they get their share back.
func TestControllerPriorityHold(t *testing.T) {
	high := slice("high", 6000, shm.PolicyCap, 1)
	high.in.Priority = 10
	low := slice("low", 4000, shm.PolicyShare, 1)
	low.in.FloorBP = 500
	p := &plant{scale: 1, slices: []*plantSlice{high, low}}
	c := NewController(ControllerConfig{ActiveHold: 500 * time.Millisecond})
	outs := c.Step(t0, p.inputs())
	outs, now := p.run(t, c, t0, 20, outs, nil)
	require.True(t, outs[1].Held)
	require.False(t, outs[0].Held)
	require.InDelta(t, 0.05, achieved(p, 1), 0.001, "held to its floor")
	require.InDelta(t, 0.60, achieved(p, 0), 0.001)

	high.demand = 0
	outs, now = p.run(t, c, now, 5, outs, nil) // 250 ms: still within ActiveHold
	require.True(t, outs[1].Held)
	outs, _ = p.run(t, c, now, 30, outs, nil)
	require.False(t, outs[1].Held)
	require.Greater(t, achieved(p, 1), 0.97, "share policy: the whole idle device")

	// A floor of 0 still trickles (MinShare), never "rate 0" (= unthrottled).
	low.in.FloorBP = 0
	high.demand = 1
	outs, _ = p.run(t, c, t0.Add(time.Hour), 10, outs, nil)
	require.True(t, outs[1].Held)
	require.NotZero(t, outs[1].Rate)
	require.Less(t, achieved(p, 1), 0.002)
}

// A slice that waits for tokens yet leaves part of its grant unspent falls
// short of its target; the trim makes it up.
func TestControllerTrimCompensatesUnspentGrant(t *testing.T) {
	s := slice("a", 4000, shm.PolicyCap, 1)
	s.lost = 0.1
	p := &plant{scale: 1, slices: []*plantSlice{s}}
	c := NewController(ControllerConfig{})
	outs := c.Step(t0, p.inputs())
	outs, _ = p.run(t, c, t0, 400, outs, nil)
	require.InDelta(t, 1/0.9, outs[0].Trim, 0.02)
	require.InDelta(t, 0.40, achieved(p, 0), 0.005)
}

// Anti-windup: a slice asking less than its cap is not throttled and winds
// nothing up, so when it starts to flood it goes straight to the cap, not
// above it.
func TestControllerNoWindup(t *testing.T) {
	s := slice("a", 5000, shm.PolicyCap, 0.2)
	p := &plant{scale: 2.5, slices: []*plantSlice{s}}
	c := NewController(ControllerConfig{})
	outs := c.Step(t0, p.inputs())
	outs, now := p.run(t, c, t0, 200, outs, nil)
	require.Equal(t, 1.0, outs[0].Trim)
	require.InDelta(t, 0.2, achieved(p, 0), 1e-9)

	s.demand = 1
	p.run(t, c, now, 40, outs, func(k int, o []ControlOutput) {
		require.LessOrEqual(t, achieved(p, 0), 0.5+1e-6, "step %d after the jump", k)
	})
	require.InDelta(t, 0.5, achieved(p, 0), 1e-6)
}

// A measurement that lags (NVML reports over a sliding window) still converges.
func TestControllerLaggedMeasurement(t *testing.T) {
	p := &plant{scale: 3, lag: 20, slices: []*plantSlice{slice("a", 3000, shm.PolicyCap, 1)}}
	c := NewController(ControllerConfig{})
	outs := c.Step(t0, p.inputs())
	p.run(t, c, t0, 200, outs, nil)
	require.InDelta(t, 0.30, achieved(p, 0), 0.005)
}

// Without a figure from the driver the controller keeps what it learnt.
func TestControllerUnmeasuredStepKeepsRates(t *testing.T) {
	p := &plant{scale: 2, slices: []*plantSlice{slice("a", 3000, shm.PolicyCap, 1)}}
	c := NewController(ControllerConfig{})
	outs := c.Step(t0, p.inputs())
	outs, now := p.run(t, c, t0, 40, outs, nil)
	before := outs[0].Rate
	in := p.inputs()
	in[0].Measured, in[0].Achieved = false, 0
	outs = c.Step(now.Add(step), in)
	require.InDelta(t, float64(before), float64(outs[0].Rate), float64(before)*1e-3)
}

// A share of the whole device means no throttling (rate 0) unless held; a
// throttled slice never gets rate 0; counters that go backwards (a recreated
// usage file) do not upset it; slices no longer listed are forgotten.
func TestControllerEdges(t *testing.T) {
	c := NewController(ControllerConfig{})
	in := []ControlInput{
		{Slice: "whole", ShareBP: shm.MaxShareBP, Policy: shm.PolicyCap},
		{Slice: "tiny", ShareBP: 1, Policy: shm.PolicyCap},
	}
	outs := c.Step(t0, in)
	require.Zero(t, outs[0].Rate)
	require.NotZero(t, outs[1].Rate)
	require.GreaterOrEqual(t, outs[1].Burst, uint64(4*shm.TokenWaveNs))

	in[1].Counters = shm.ThrottleCounters{Spent: 1 << 40, Launches: 10}
	in[1].Measured, in[1].Achieved = true, 0.5
	c.Step(t0.Add(step), in)
	in[1].Counters = shm.ThrottleCounters{} // recreated
	outs = c.Step(t0.Add(2*step), in)
	require.NotZero(t, outs[1].Rate)

	c.Step(t0.Add(3*step), in[:1])
	require.Len(t, c.slices, 1)

	// The same instant twice measures nothing and does not divide by zero.
	outs = c.Step(t0.Add(3*step), in[:1])
	require.Len(t, outs, 1)
}

// Apply writes changed rates only, so an unchanged budget keeps its generation
// (and launches keep their fast path).
func TestApplyWritesOnlyChanges(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	require.NoError(t, shm.CreateSlice(dir, shm.SliceSpec{ID: "s", Devices: []shm.DeviceBudget{{MemoryLimit: 1 << 30,
		ComputeShareBP: 3000}}}))
	b, err := shm.OpenBudget(filepath.Join(dir, shm.BudgetFile), true)
	require.NoError(t, err)
	defer b.Close()
	g0 := b.Generation()
	require.Zero(t, b.Flags()&shm.BudgetFlagManaged, "a slice made without vgpud is not managed")
	outs := []ControlOutput{{Slice: "s", Rate: 123, Burst: 456}}
	require.NoError(t, Apply([]*shm.BudgetRegion{b}, []int{0}, outs))
	require.NotZero(t, b.Flags()&shm.BudgetFlagManaged, "a controller's rates mark the slice managed")
	rate, burst := b.TokenBucket(0)
	require.Equal(t, uint64(123), rate)
	require.Equal(t, uint64(456), burst)
	g1 := b.Generation()
	require.Greater(t, g1, g0)
	require.NoError(t, Apply([]*shm.BudgetRegion{b}, []int{0}, outs))
	require.Equal(t, g1, b.Generation())
	require.Error(t, Apply([]*shm.BudgetRegion{b}, []int{0}, nil))

	ro, err := shm.OpenBudget(filepath.Join(dir, shm.BudgetFile), false)
	require.NoError(t, err)
	defer ro.Close()
	require.ErrorIs(t, Apply([]*shm.BudgetRegion{ro}, []int{0}, []ControlOutput{{Rate: 1}}), shm.ErrReadOnly)
}
