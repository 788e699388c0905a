package enforcer

import (
	"fmt"
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
//     step once the scale is known. The driver counts work when it runs, long
//     after its tokens were spent when the device queue is deep, so both sides
//     are taken over the span the driver measured, the tokens as the work
//     libvgpu's completion markers saw complete within it (token_done); and
//     libvgpu itself bounds a slice's in-flight work, so a rate change acts
//     within tens of ms. Until the driver has measured minTrustedSpan of a new
//     slice, its scale is libvgpu's own timing of its launches (guessScale).
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
	// Burst is the bucket depth as time at the slice's rate (default
	// shm.DefaultTokenBurstTime, the contract's default).
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
		c.Burst = shm.DefaultTokenBurstTime
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
	// Span is the interval Achieved covers (the driver's sample periods since
	// its previous figure); 0: the time since the previous step.
	Span time.Duration
	// Done is the tokens of the slice's launches that completed within Span
	// (from the token_done counter of libvgpu's completion markers); valid
	// when DoneKnown. Both sides of the scale are then counted when work runs,
	// over the same interval, however deep the device queue. Without it the
	// scale is learnt from the tokens spent during the step, which run ahead
	// of the driver's figure by the slice's queue.
	Done      uint64
	DoneKnown bool
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
	// measuredFor is the driver-measured time the calibration has seen; the
	// scale it learnt is trusted (replaces the prior) from minTrustedSpan on.
	measuredFor time.Duration
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

// Apply writes the outputs into the slices' budgets: outs[i] to budgets[i],
// device index devs[i], and marks each budget managed (shm.BudgetFlagManaged:
// its rates are scaled by a controller, so libvgpu charges launches their
// nominal cost rather than costs it measured itself). Budgets already holding
// the same rate and burst are left alone (no generation bump, so launches keep
// their fast path).
func Apply(budgets []*shm.BudgetRegion, devs []int, outs []ControlOutput) error {
	if len(budgets) != len(outs) || len(devs) != len(outs) {
		return fmt.Errorf("apply token rates: %d budgets, %d devices, %d outputs", len(budgets), len(devs), len(outs))
	}
	for i, o := range outs {
		if f := budgets[i].Flags(); f&shm.BudgetFlagManaged == 0 {
			if err := budgets[i].SetFlags(f | shm.BudgetFlagManaged); err != nil {
				return fmt.Errorf("slice %s: mark managed: %w", o.Slice, err)
			}
		}
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
