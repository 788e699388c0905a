package enforcer

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/shm"
)

// A device with a queue, as vgpud meets it on a node: a flooding slice's
// launches spend tokens at once, the device runs the queued work later (at
// most the whole device per step), the driver credits work when it runs and
// publishes a figure once per sample period (3 steps), and libvgpu's
// completion markers count the tokens whose work has completed (token_done)
// and the device time of sampled launches.
type queuedPlant struct {
	scale    float64 // device-ns one token buys
	queue    float64 // queued device-ns (ahead of now)
	maxQueue float64 // the device blocks launches beyond this (ns)
	counters shm.ThrottleCounters
	run      []float64 // device-ns executed per step, newest last
	markers  bool      // libvgpu reports token_done and sampled launches
	period   int       // steps per driver sample
}

// advance runs one step at the given rate (0: unthrottled) and returns the
// controller's input.
func (p *queuedPlant) advance(rate uint64, k int, dt time.Duration) ControlInput {
	dtNs := float64(dt.Nanoseconds())
	spend := math.Max(0, (p.maxQueue-p.queue)/p.scale) // a flood fills the queue
	if rate != 0 {
		spend = math.Min(spend, float64(rate)*dt.Seconds())
	}
	p.queue += spend * p.scale
	ran := math.Min(p.queue, dtNs)
	p.queue -= ran
	p.run = append(p.run, ran)
	p.counters.Spent += uint64(spend)
	p.counters.Refilled = p.counters.Spent
	p.counters.Launches++
	if rate != 0 {
		p.counters.ThrottledNs += uint64(dt)
	}
	if p.markers {
		p.counters.Done += uint64(ran / p.scale)
		p.counters.SampledTokens += 1000
		p.counters.SampledNs += uint64(1000 * p.scale)
	}
	in := ControlInput{Slice: "a", ShareBP: 3000, Policy: shm.PolicyCap, Counters: p.counters}
	if (k+1)%p.period == 0 {
		busy := 0.0
		for _, r := range p.run[len(p.run)-p.period:] {
			busy += r
		}
		span := time.Duration(p.period) * dt
		in.Measured, in.Span, in.Achieved = true, span, busy/float64(span.Nanoseconds())
		if p.markers {
			in.Done, in.DoneKnown = uint64(busy/p.scale), true
		}
	}
	return in
}

// share is the device share the slice ran over steps [from, to).
func (p *queuedPlant) share(from, to int, dt time.Duration) float64 {
	sum := 0.0
	for _, r := range p.run[from:to] {
		sum += r
	}
	return sum / float64(to-from) / float64(dt.Nanoseconds())
}

// With completion markers the controller starts a slice whose waves cost 8x
// the nominal time near its share in its first second and holds it there,
// although its first launches queue a second of work: the guess from
// libvgpu's own timings sets the first rate, and the scale is learnt from
// work completed within each measured span, not from tokens spent ahead of it.
func TestControllerNotFooledByTheQueue(t *testing.T) {
	const steps = 100 // 5 s
	p := &queuedPlant{scale: 8, maxQueue: float64(time.Second), markers: true, period: 3}
	c := NewController(ControllerConfig{})
	now := t0
	rate := uint64(0.3e9) // the static rate a new slice starts with
	for k := 0; k < steps; k++ {
		in := p.advance(rate, k, step)
		now = now.Add(step)
		rate = c.Step(now, []ControlInput{in})[0].Rate
	}
	first := p.share(0, 20, step)
	t.Logf("first second %.1f%%, then per second: %.1f %.1f %.1f %.1f", first*100,
		p.share(20, 40, step)*100, p.share(40, 60, step)*100, p.share(60, 80, step)*100, p.share(80, 100, step)*100)
	require.LessOrEqual(t, first, 0.45, "first second within 1.5x of the share")
	for s := 1; s < 5; s++ {
		require.InDelta(t, 0.30, p.share(20*s, 20*s+20, step), 0.02, "second %d", s+1)
	}
}

// Without markers (an older libvgpu) the controller still converges: the
// spending of the step stands in for the completed work.
func TestControllerWithoutMarkersConverges(t *testing.T) {
	p := &queuedPlant{scale: 8, maxQueue: float64(50 * time.Millisecond), period: 3}
	c := NewController(ControllerConfig{})
	now := t0
	rate := uint64(0.3e9)
	for k := 0; k < 300; k++ {
		in := p.advance(rate, k, step)
		now = now.Add(step)
		rate = c.Step(now, []ControlInput{in})[0].Rate
	}
	require.InDelta(t, 0.30, p.share(240, 300, step), 0.02)
}

// A tenant's forged timings (absurd, or zero tokens) never become the scale.
func TestControllerIgnoresImplausibleGuess(t *testing.T) {
	for _, c := range []shm.ThrottleCounters{
		{SampledTokens: 1, SampledNs: 1 << 62},
		{SampledTokens: 1 << 62, SampledNs: 1},
		{SampledTokens: 0, SampledNs: 1000},
	} {
		ctl := NewController(ControllerConfig{})
		out := ctl.Step(t0, []ControlInput{{Slice: "a", ShareBP: 3000, Counters: c}})
		require.Equal(t, 1.0, out[0].Scale)
	}
	ctl := NewController(ControllerConfig{})
	out := ctl.Step(t0, []ControlInput{{Slice: "a", ShareBP: 3000,
		Counters: shm.ThrottleCounters{SampledTokens: 1000, SampledNs: 8000}}})
	require.InDelta(t, 8.0, out[0].Scale, 1e-9, "a plausible guess starts the slice")
}
