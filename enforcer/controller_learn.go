package enforcer

import (
	"math"
	"sort"
	"time"

	"github.com/vgpu-project/vgpu/shm"
)

// What the controller learns each step from a slice's counters and the
// driver's figure: activity, throttling, the calibration scale and the trim
// (see the overview in controller.go).

// observeAll updates the controller's memory of every input slice from the
// step's counters and driver figures, and forgets the slices no longer given.
func (c *Controller) observeAll(now time.Time, dt time.Duration, measure bool, in []ControlInput, v *stepView) {
	for _, s := range c.slices {
		s.seen = false
	}
	// Computed before any new slice joins, so new slices of one step all start
	// from what the device's established slices learnt.
	prior := c.priorScale()
	for i := range in {
		x := &in[i]
		s := c.slices[x.Slice]
		if s == nil {
			s = &sliceCtl{scale: prior, trim: 1}
			c.slices[x.Slice] = s
		}
		s.seen = true
		v.states[i] = s
		if measure && s.havePrev {
			v.throttled[i] = s.observe(&c.cfg, x, now, dt)
		}
		s.guessScale(x)
		if measure || !s.havePrev {
			s.prev, s.havePrev = x.Counters, true
		}
		v.active[i] = !s.lastActive.IsZero() && now.Sub(s.lastActive) <= c.cfg.ActiveHold
	}
	for id, s := range c.slices {
		if !s.seen {
			delete(c.slices, id)
		}
	}
}

// observe takes one step's measurement of a slice: whether it was active and
// throttled, then feeds the calibration and the trim. It returns whether the
// slice was throttled.
func (s *sliceCtl) observe(cfg *ControllerConfig, x *ControlInput, now time.Time, dt time.Duration) bool {
	dtNs := float64(dt.Nanoseconds())
	spent := delta(x.Counters.Spent, s.prev.Spent)
	waited := delta(x.Counters.ThrottledNs, s.prev.ThrottledNs)
	launched := delta(x.Counters.Launches, s.prev.Launches)
	achieved := clamp01(x.Achieved)
	// Any sign of work counts as activity: the launch counter lags (libvgpu
	// batches it per thread), and the driver and the bucket can count the same
	// launch in different steps.
	if spent > 0 || launched > 0 || (x.Measured && achieved > 0.002) {
		s.lastActive = now
	}
	throttled := float64(waited) >= cfg.ThrottledFraction*dtNs
	// A slice whose completed work over this span is unknown (its history
	// does not reach back to the span's start, or no marker has come back
	// yet) is not calibrated from its spending instead: at a slice's start
	// the tokens spent run far ahead of the work done, and a scale learnt
	// from them lets it overrun its share for seconds. Only a slice that has
	// spent markerless strides without a single completion (a libvgpu older
	// than the markers) is calibrated from its spending.
	if x.Measured && (x.DoneKnown || withoutMarkers(x.Counters)) {
		// Both sides over one interval: the work completed within the span
		// the driver measured, when libvgpu's markers say; else the tokens
		// spent during the step.
		span, work := dt, float64(spent)
		if x.Span > 0 {
			span = x.Span
		}
		if x.DoneKnown {
			work = float64(x.Done)
		} else if x.Span > 0 {
			work *= float64(x.Span) / dtNs // the step's spending, per span
		}
		s.calibrate(cfg, x.Achieved, achieved, work, float64(span.Nanoseconds()))
		s.measuredFor += span
	}
	s.updateTrim(cfg, throttled, spent, dt)
	return throttled
}

// calibrate learns the device-ns one token buys: the ratio of the averaged
// busy time to the averaged spending — not an average of per-step ratios: a
// launch counted by the driver in one step and by the bucket in the next would
// make those swing wildly, and their mean would be biased. rawAchieved is the
// driver's figure as given, achieved the same clamped to [0, 1].
func (s *sliceCtl) calibrate(cfg *ControllerConfig, rawAchieved, achieved, spent, dtNs float64) {
	// Not clipped at 1: a step's figure can exceed the step when long kernels
	// land in it (busy time counted at launch); clipping would bias the scale
	// low.
	busy := math.Max(0, rawAchieved) * dtNs
	if math.IsNaN(busy) || math.IsInf(busy, 0) {
		busy = 0
	}
	a := 1 - math.Exp(-dtNs/float64(cfg.CalibrationTau.Nanoseconds()))
	s.avgBusy += a * (busy - s.avgBusy)
	s.avgAchieved += a * (achieved - s.avgAchieved)
	s.avgSpent += a * (spent - s.avgSpent)
	s.calWeight += a * (1 - s.calWeight)
	// Enough spending to mean something: 0.5% of the device at the nominal
	// cost, averaged.
	if s.avgSpent >= 0.005*dtNs*s.calWeight && s.avgBusy > 0 {
		s.scale, s.scaleKnown = s.avgBusy/s.avgSpent, true
	}
}

// withoutMarkers tells a slice whose libvgpu writes no completion markers: it
// has spent enough tokens for several markers and none came back.
func withoutMarkers(c shm.ThrottleCounters) bool {
	return c.Done == 0 && c.SampledTokens == 0 && c.Spent >= markerlessStrides*shm.MarkerStride
}

// markerlessStrides is how many marker strides a slice spends before, with no
// completion back, it counts as one without markers (a marker comes back
// within a stride or two of launches, after the in-flight work drains).
const markerlessStrides = 16

// minTrustedSpan is how much driver-measured time a slice's calibration needs
// before its scale replaces the first guess from libvgpu's own timings: the
// driver publishes a figure per sample period (1/6 s on current drivers), and
// a single period that cuts a long kernel in two, or catches the queue of
// work launched before the slice's first rate, is not yet the slice's cost.
const minTrustedSpan = 300 * time.Millisecond

// Plausible scales for libvgpu's own timings (device-ns per token): a tenant
// writes them, so a value outside is ignored rather than followed.
const minGuessScale, maxGuessScale = 1e-3, 1e3

// guessScale takes libvgpu's own timing of the slice's launches (events
// around sampled launches, summed in the usage region) as the slice's scale
// until the driver's measurement is trusted. It starts the slice at about the
// right rate in its first step, long before the first driver sample: without
// it a new slice runs at the device's prior (another slice's kernels, or the
// nominal wave time) and a tenant whose waves take 8x the nominal cost gets
// 8x its share until the driver has spoken. Under contention the timings
// include waiting behind other slices' work, so the guess errs low, never
// high. Tenant-written: it only ever sets the start; the driver's figure
// decides after minTrustedSpan, and the compute backstop bounds the rest.
func (s *sliceCtl) guessScale(x *ControlInput) {
	c := x.Counters
	if s.measuredFor >= minTrustedSpan || c.SampledTokens == 0 {
		return
	}
	g := float64(c.SampledNs) / float64(c.SampledTokens)
	if g >= minGuessScale && g <= maxGuessScale {
		s.scale = g
	}
}

// updateTrim corrects for how much of its grant a throttled slice actually
// spends. The bucket granted rate*dt tokens during the step; a slice that
// waited for tokens yet spent less (the bucket's depth clipped credit while its
// kernels sat in a crowded queue, sleep granularity) falls short of its
// allowance by that fraction f, whatever the calibration. The trim integrates
// e = 1 - trim*(1-f) (averaged: one step of a few long kernels is noisy), so it
// settles at 1/(1-f); this looks only at the bucket's own counters, so a
// calibration transient cannot wind it up. Not throttled, it leaks back to 1
// (nothing to compensate). Either way it stays within [minTrim, maxTrim]
// (anti-windup).
func (s *sliceCtl) updateTrim(cfg *ControllerConfig, throttled bool, spent uint64, dt time.Duration) {
	dtNs := float64(dt.Nanoseconds())
	k := cfg.TrimGain * dt.Seconds()
	if throttled && s.rate > 0 {
		a := 1 - math.Exp(-dtNs/float64(cfg.CalibrationTau.Nanoseconds()))
		grant := float64(s.rate) * dt.Seconds()
		s.avgGrant += a * (grant - s.avgGrant)
		s.avgGrantSpent += a * (float64(spent) - s.avgGrantSpent)
		s.grantWeight += a * (1 - s.grantWeight)
		// Half filled: one step's grant alone is too noisy to act on.
		if s.grantWeight >= 0.5 && s.avgGrant > 0 {
			e := 1 - s.trim*s.avgGrantSpent/s.avgGrant
			if math.Abs(e) > trimDeadband {
				s.trim *= math.Exp(k * math.Max(-1, math.Min(1, e)))
			}
		}
	} else {
		s.trim += (1 - s.trim) * (1 - math.Exp(-dt.Seconds()/trimLeak.Seconds()))
		s.grantWeight = 0
		s.avgGrant, s.avgGrantSpent = 0, 0
	}
	s.trim = math.Max(minTrim, math.Min(maxTrim, s.trim))
}

// priorScale is the scale a new slice starts from: the median of what the
// device's other slices learnt (the same GPU, often the same kind of kernels),
// or 1 (the nominal wave time is right) when none has learnt one.
func (c *Controller) priorScale() float64 {
	var xs []float64
	for _, s := range c.slices {
		if s.scaleKnown {
			xs = append(xs, s.scale)
		}
	}
	if len(xs) == 0 {
		return 1
	}
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func delta(cur, prev uint64) uint64 {
	if cur < prev { // the region was recreated: start over
		return 0
	}
	return cur - prev
}

func clamp01(x float64) float64 {
	if math.IsNaN(x) || x < 0 {
		return 0
	}
	if x > 1 {
		return 1
	}
	return x
}
