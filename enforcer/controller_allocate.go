package enforcer

import (
	"math"

	"github.com/vgpu-project/vgpu/shm"
)

// How the controller divides a device among its slices each step, and the
// rates that enforce the division (see the overview in controller.go).

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
	burst = uint64(math.Max(float64(rate)*cfg.Burst.Seconds(), shm.TokenBurstMinWaves*shm.TokenWaveNs))
	return rate, burst
}
