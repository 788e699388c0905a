package enforcer

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/vgpu-project/vgpu/shm"
)

// The compute-share controller.
//
// libvgpu throttles launches with a token bucket per slice and device whose
// tokens are *estimated* device-ns: a launch costs its waves of blocks
// (ceil(blocks/SMs)) times a nominal wave time (vgpu_shm.h). How long a wave
// really takes depends on the kernel, so a rate set from the share alone is off
// by an unknown factor. The controller closes the loop with what the driver
// measures:
//
//  1. Calibration (feed-forward). Each step it learns, per slice, the device-ns
//     one token really bought: achieved busy time / tokens spent over the step
//     (an exponentially weighted average, weighted by time). The rate that gives
//     an allowed share a is then a / scale tokens per second. This is a ratio of
//     two measured quantities, so the loop's gain does not depend on the GPU's
//     SM count, on the nominal wave time or on how many processes the slice has
//     (they all share one bucket), and a change of target takes effect in one
//     step once the scale is known.
//  2. Trim (integral action) for what calibration cannot see: a slice whose
//     launches spend fewer tokens than the rate grants while it nonetheless
//     waits for tokens (credit clipped by the bucket's depth while its kernels
//     sit in a crowded queue, sleep granularity). It integrates, with a fixed
//     gain per second, the shortfall of the grant actually spent, only while the
//     slice is throttled, and is clamped to [1, 2] (anti-windup); otherwise it
//     leaks back to 1. It reads only the bucket's counters, so neither a
//     calibration transient nor a slice that simply asks for less (it is then
//     not throttled) can wind it up.
//
// Allocation per device, each step:
//   - a slice counts as active for ActiveHold after its last launch;
//   - while a slice of higher priority is active, lower ones are held to their
//     floor (compute_floor_bp, never above their share);
//   - policy cap: allowed = share, even alone on the device;
//   - policy share: the share is guaranteed — reserved for the slice whenever
//     it is active, used or not; idle capacity (Capacity minus the bases of
//     the active slices) is split among the share-policy slices that want
//     more, by their shares. A throttled slice wants as much as it can get; a
//     share slice that is not throttled wants what it uses plus Headroom, so it
//     can grow one step at a time;
//   - a slice with no activity keeps a rate for its base share, so its first
//     launches are throttled right away.
//
// Launch-synchronize-launch workloads need nothing special: the bucket refills
// by wall time while the program waits for its kernel, so the time spent
// synchronizing is part of the share (libvgpu/src/throttle.c).

// Trim limits (anti-windup) and the error below which it does not pull down.
const (
	minTrim      = 1
	maxTrim      = 2
	trimDeadband = 0.01
	trimLeak     = 5 * time.Second
)

// ControllerConfig tunes a Controller. Zero fields take the defaults.
type ControllerConfig struct {
	// Capacity is the device share handed out in total (default 1.0).
	Capacity float64
	// Burst is the bucket depth as time at the slice's rate (default DefaultTokenBurst).
	Burst time.Duration
	// ActiveHold: a slice counts as active this long after its last launch
	// (default 1s). It decides priority holds and who shares idle capacity.
	ActiveHold time.Duration
	// CalibrationTau is the time constant of the calibration average (default 1s).
	CalibrationTau time.Duration
	// TrimGain is the integral gain on the relative error, per second: the trim
	// moves by a factor exp(TrimGain * error * step) (default 0.5).
	TrimGain float64
	// Headroom is added to what a non-throttled share-policy slice uses (default 0.05).
	Headroom float64
	// MinShare is the least share any slice is allowed, so a slice held to a floor
	// of 0 still trickles (its processes can exit cleanly) (default 0.001).
	MinShare float64
	// ThrottledFraction: a slice whose launchers waited at least this fraction of
	// the step (summed over threads) is throttled, i.e. wants more (default 0.02).
	ThrottledFraction float64
}

func (c ControllerConfig) withDefaults() ControllerConfig {
	if c.Capacity <= 0 {
		c.Capacity = 1
	}
	if c.Burst <= 0 {
		c.Burst = shm.DefaultTokenBurst
	}
	if c.ActiveHold <= 0 {
		c.ActiveHold = time.Second
	}
	if c.CalibrationTau <= 0 {
		c.CalibrationTau = time.Second
	}
	if c.TrimGain <= 0 {
		c.TrimGain = 0.5
	}
	if c.Headroom <= 0 {
		c.Headroom = 0.05
	}
	if c.MinShare <= 0 {
		c.MinShare = 0.001
	}
	if c.ThrottledFraction <= 0 {
		c.ThrottledFraction = 0.02
	}
	return c
}

// ControlInput is one slice's state on the controller's device at a step.
type ControlInput struct {
	Slice    string // slice ID: the key of the controller's memory of the slice
	ShareBP  uint32 // compute_share_bp (10000 = the whole device)
	FloorBP  uint32 // compute_floor_bp: what it is held to under a higher priority
	Policy   uint32 // PolicyCap or PolicyShare
	Priority uint32 // higher wins
	// Counters are the slice's throttle counters on this device (usage region),
	// cumulative.
	Counters shm.ThrottleCounters
	// Achieved is the fraction of the device's time the slice's processes used
	// since the previous step, as the driver measures it (NVML per-process
	// utilization or busy time, summed over the slice's processes by host pid).
	Achieved float64
	// Measured is false when the driver gave no figure this step: the controller
	// then keeps its calibration and trim as they are.
	Measured bool
}

// ControlOutput is what the controller decided for one slice.
type ControlOutput struct {
	Slice string
	// Rate and Burst go to the budget (BudgetRegion.SetTokenBucket). Rate 0 means
	// not throttled (a share of the whole device).
	Rate, Burst uint64
	Target      float64 // the configured share (0..1)
	Allowed     float64 // the share allowed from now on (0..1)
	Achieved    float64 // as given
	Scale       float64 // learnt device-ns per token
	Trim        float64 // the integral correction (1 = none)
	Active      bool    // launched within ActiveHold
	Throttled   bool    // its launchers waited for tokens during the step
	Held        bool    // held to its floor by an active higher-priority slice
}

type sliceCtl struct {
	prev       shm.ThrottleCounters
	havePrev   bool
	scale      float64 // device-ns per token
	scaleKnown bool
	trim       float64
	lastActive time.Time
	allowed    float64 // what the rate in force was computed for
	// Time-weighted averages of busy ns and tokens spent per step (the scale is
	// their ratio), and how much of the average is filled (starts at 0).
	avgBusy, avgSpent, calWeight float64
	// avgAchieved is the achieved share averaged the same way (what a share
	// slice that is not throttled uses: per-step figures come in lumps).
	avgAchieved float64
	// Time-weighted averages of the tokens granted and spent per throttled step
	// (the trim's error), and how much of the average is filled.
	avgGrant, avgGrantSpent, grantWeight float64
	rate                                 uint64 // the rate last output
	seen                                 bool   // present in the last step's input
}

// Controller computes the token rates of the slices on one device. It is not
// safe for concurrent use; call Step from one goroutine (the enforcer tick).
type Controller struct {
	cfg    ControllerConfig
	last   time.Time
	slices map[string]*sliceCtl
}

// NewController returns a controller for one device.
func NewController(cfg ControllerConfig) *Controller {
	return &Controller{cfg: cfg.withDefaults(), slices: map[string]*sliceCtl{}}
}

// Config returns the controller's configuration with defaults filled in.
func (c *Controller) Config() ControllerConfig { return c.cfg }

// Forget drops what the controller learnt about a slice (it was deleted).
func (c *Controller) Forget(slice string) { delete(c.slices, slice) }

// Step takes one measurement of every slice on the device and returns the rates
// to apply, in the order of in. Slices absent from in are forgotten. now must
// not go backwards; the first step (and a step at the same instant) measures
// nothing and returns rates from the shares and what was learnt so far.
func (c *Controller) Step(now time.Time, in []ControlInput) []ControlOutput {
	dt, measure := c.advanceClock(now)
	v := stepView{
		states:    make([]*sliceCtl, len(in)),
		out:       make([]ControlOutput, len(in)),
		throttled: make([]bool, len(in)),
		active:    make([]bool, len(in)),
	}
	c.observeAll(now, dt, measure, in, &v)
	c.reserveBases(in, &v)
	c.lendIdle(in, &v)
	c.setRates(in, &v)
	return v.out
}

// stepView is one step's working state, one entry per input slice in the
// order of in.
type stepView struct {
	states    []*sliceCtl
	out       []ControlOutput
	throttled []bool // its launchers waited for tokens during the step
	active    []bool // launched within ActiveHold
	held      []bool // held to its floor by an active higher-priority slice
	// base is what the slice is guaranteed this step: its share, or its floor
	// when held, never below MinShare.
	base []float64
	// allowed starts at base and grows by the idle capacity lent to the slice.
	allowed []float64
}

// advanceClock returns the time since the previous step and whether this step
// measures: the first step has no previous counters to subtract, and a step at
// the same instant (or earlier) would divide by a zero interval. Such a step
// leaves the clock where it was, so the next one measures over the whole time.
func (c *Controller) advanceClock(now time.Time) (time.Duration, bool) {
	dt := now.Sub(c.last)
	measure := !c.last.IsZero() && dt > 0
	if measure || c.last.IsZero() {
		c.last = now
	}
	return dt, measure
}

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
	if x.Measured {
		s.calibrate(cfg, x.Achieved, achieved, spent, dtNs)
	}
	s.updateTrim(cfg, throttled, spent, dt)
	return throttled
}

// calibrate learns the device-ns one token buys: the ratio of the averaged
// busy time to the averaged spending — not an average of per-step ratios: a
// launch counted by the driver in one step and by the bucket in the next would
// make those swing wildly, and their mean would be biased. rawAchieved is the
// driver's figure as given, achieved the same clamped to [0, 1].
func (s *sliceCtl) calibrate(cfg *ControllerConfig, rawAchieved, achieved float64, spent uint64, dtNs float64) {
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
	s.avgSpent += a * (float64(spent) - s.avgSpent)
	s.calWeight += a * (1 - s.calWeight)
	// Enough spending to mean something: 0.5% of the device at the nominal
	// cost, averaged.
	if s.avgSpent >= 0.005*dtNs*s.calWeight && s.avgBusy > 0 {
		s.scale, s.scaleKnown = s.avgBusy/s.avgSpent, true
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

// reserveBases sets each slice's target (its configured share) and base:
// while any slice of the device is active, those of lower priority than the
// highest active one are held to their floor, so that the important work gets
// the device whatever the others ask for.
func (c *Controller) reserveBases(in []ControlInput, v *stepView) {
	top, anyActive := uint32(0), false
	for i := range in {
		if v.active[i] && (!anyActive || in[i].Priority > top) {
			top, anyActive = in[i].Priority, true
		}
	}
	v.base = make([]float64, len(in))
	v.held = make([]bool, len(in))
	for i := range in {
		share := float64(min(in[i].ShareBP, shm.MaxShareBP)) / shm.MaxShareBP
		b := share
		if anyActive && in[i].Priority < top {
			v.held[i] = true
			b = math.Min(float64(in[i].FloorBP)/shm.MaxShareBP, share)
		}
		// MinShare even for a floor of 0: a held slice still trickles, so its
		// processes can exit cleanly.
		v.base[i] = math.Max(b, c.cfg.MinShare)
		v.out[i].Target = share
	}
}

// lendIdle sets what each slice is allowed: its base, plus a part of the idle
// capacity for the share-policy slices that want more.
//
// Every active slice keeps its base (share, or floor when held) reserved,
// whether or not it uses it now: a slice running one kernel at a time is
// slowed by whatever else sits in the device's queue, and lending its unused
// share to a flood would squeeze it further, so its guarantee holds only if it
// is never lent while it is active. What is left (capacity nobody reserved,
// and the bases of inactive slices) is idle capacity: the share-policy slices
// that want more divide it by their shares (water-filling, waterFill).
func (c *Controller) lendIdle(in []ControlInput, v *stepView) {
	v.allowed = make([]float64, len(in))
	copy(v.allowed, v.base)
	spare := c.cfg.Capacity
	var want []int
	wantMore := make([]float64, len(in))
	for i := range in {
		if !v.active[i] {
			continue
		}
		spare -= v.base[i]
		if in[i].Policy != shm.PolicyShare || v.held[i] {
			continue
		}
		if more := c.wantsMore(&in[i], v.states[i], v.throttled[i], v.base[i]); more > 0 {
			wantMore[i] = more
			want = append(want, i)
		}
	}
	waterFill(spare, want, wantMore, v.base, v.allowed)
	for i := range v.allowed {
		v.allowed[i] = math.Min(v.allowed[i], c.cfg.Capacity)
	}
}

// wantsMore is how much more than its base an active share-policy slice asks
// for: a throttled slice as much as it can get; one that is not throttled what
// it uses plus Headroom, so that it grows a step at a time rather than taking
// idle capacity it would leave unused; nothing when the driver gave no figure
// to tell what it uses.
func (c *Controller) wantsMore(x *ControlInput, s *sliceCtl, throttled bool, base float64) float64 {
	if throttled {
		return math.Inf(1)
	}
	if !x.Measured {
		return 0
	}
	return s.avgAchieved/math.Max(s.calWeight, 1e-9) + c.cfg.Headroom - base
}

// waterFill divides spare among the slices listed in want in proportion to
// their bases, none getting more than its wantMore. What a satisfied slice
// leaves goes round again to the others until none is left or everyone took a
// full part. It adds each slice's part to allowed (and uses up wantMore and
// want's backing array).
func waterFill(spare float64, want []int, wantMore, base, allowed []float64) {
	for spare > 1e-9 && len(want) > 0 {
		weight := 0.0
		for _, i := range want {
			weight += base[i]
		}
		next := want[:0]
		given := 0.0
		for _, i := range want {
			g := spare * base[i] / weight
			if g >= wantMore[i] {
				g = wantMore[i] // satisfied: its remainder goes round again
			} else {
				next = append(next, i)
			}
			allowed[i] += g
			wantMore[i] -= g
			given += g
		}
		spare -= given
		if len(next) == len(want) {
			break // everyone took a full part: nothing left over
		}
		want = next
	}
}

// setRates turns each slice's allowed share into the token rate and burst of
// its bucket and fills the outputs.
func (c *Controller) setRates(in []ControlInput, v *stepView) {
	for i := range in {
		s := v.states[i]
		s.allowed = v.allowed[i]
		rate, burst := s.bucketFor(&c.cfg, in[i].ShareBP, v.held[i])
		s.rate = rate
		v.out[i] = ControlOutput{
			Slice: in[i].Slice, Rate: rate, Burst: burst, Target: v.out[i].Target,
			Allowed: v.allowed[i], Achieved: in[i].Achieved, Scale: s.scale, Trim: s.trim,
			Active: v.active[i], Throttled: v.throttled[i], Held: v.held[i],
		}
	}
}

// bucketFor is the token rate and burst that let the slice use s.allowed of
// the device: allowed/scale tokens per second (calibration), times the trim.
// A slice entitled to the whole device and not held is not throttled (rate 0).
// Any other rate is at least 1000, since 0 would mean not throttled at all,
// and at most 1e15, so that a tiny learnt scale cannot overflow the
// conversion. The burst is Burst at that rate, at least a few waves so that a
// very low rate can still pass one launch without waiting on every call.
func (s *sliceCtl) bucketFor(cfg *ControllerConfig, shareBP uint32, held bool) (rate, burst uint64) {
	if shareBP >= shm.MaxShareBP && !held {
		return 0, 0
	}
	r := s.allowed * 1e9 / s.scale * s.trim
	rate = uint64(math.Max(math.Min(r, 1e15), 1000))
	burst = uint64(math.Max(float64(rate)*cfg.Burst.Seconds(), 4*shm.TokenWaveNs))
	return rate, burst
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

// Apply writes the outputs into the slices' budgets: outs[i] to budgets[i],
// device index devs[i]. Budgets already holding the same rate and burst are
// left alone (no generation bump, so launches keep their fast path).
func Apply(budgets []*shm.BudgetRegion, devs []int, outs []ControlOutput) error {
	if len(budgets) != len(outs) || len(devs) != len(outs) {
		return fmt.Errorf("apply token rates: %d budgets, %d devices, %d outputs", len(budgets), len(devs), len(outs))
	}
	for i, o := range outs {
		rate, burst := budgets[i].TokenBucket(devs[i])
		if rate == o.Rate && burst == o.Burst {
			continue
		}
		if err := budgets[i].SetTokenBucket(devs[i], o.Rate, o.Burst); err != nil {
			return fmt.Errorf("slice %s: %w", o.Slice, err)
		}
	}
	return nil
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
