package shm

import (
	"sync/atomic"
	"time"
)

// DefaultTokenBurstTime is how much work a slice may run ahead of its rate
// after a pause, as time at that rate: 1/TokenBurstDiv of a second. Short
// enough that a tenant waking up cannot flood the device queue in front of the
// others; long enough to cover a sleep step of a waiting launcher (libvgpu
// sleeps at most 10 ms at a time).
const DefaultTokenBurstTime = time.Second / TokenBurstDiv

// DefaultTokenBurst is VGPU_DEFAULT_TOKEN_BURST(rate): DefaultTokenBurstTime
// worth of rate, at least TokenBurstMinWaves waves so that a very low rate can
// still pass one launch without waiting on every call. libvgpu applies the
// same formula to a budget that names no burst (the ABI test checks both).
func DefaultTokenBurst(rate uint64) uint64 {
	return max(rate/TokenBurstDiv, TokenBurstMinWaves*TokenWaveNs)
}

// StaticTokenBucket returns the token rate and burst of a slice whose rate no
// controller sets (`vgpuctl slice create`, or the first instant of a slice vgpud
// creates): shareBP of the device's time at the nominal cost of a launch
// (TokenWaveNs per wave of blocks, vgpu_shm.h). It is an estimate: exact when
// kernels take TokenWaveNs per wave (the simulated node's default), otherwise off
// by the ratio of the real wave time to the nominal one, which vgpud's controller
// measures and corrects. A share of 0 or of the whole device means no throttling
// (rate 0).
func StaticTokenBucket(shareBP uint32) (rate, burst uint64) {
	if shareBP == 0 || shareBP >= MaxShareBP {
		return 0, 0
	}
	rate = uint64(shareBP) * (1e9 / MaxShareBP) // tokens (estimated device-ns) per second
	return rate, DefaultTokenBurst(rate)
}

// ThrottleCounters are one device's launch-throttle counters from a usage
// region, all cumulative (see vgpu_shm.h).
type ThrottleCounters struct {
	Spent       uint64 // tokens charged by launches
	Refilled    uint64 // tokens granted by refills
	Launches    uint64 // launches through the throttle (batched per thread: may lag)
	ThrottledNs uint64 // time launchers spent waiting for tokens, summed over threads
	// ABI 1.2, from libvgpu's completion markers (0 from an older libvgpu):
	Done             uint64 // tokens of launches the device has completed
	SampledTokens    uint64 // tokens of the launches libvgpu timed
	SampledNs        uint64 // their device time, ns
	InflightWaitedNs uint64 // time launchers waited for in-flight work to drain
}

// Credit is the bucket's current credit (negative: launchers are queued).
func (c ThrottleCounters) Credit() int64 { return int64(c.Refilled - c.Spent) }

// Throttle reads device d's throttle counters (each atomically; not one instant).
func (r *UsageRegion) Throttle(d int) ThrottleCounters {
	ud := r.dev(d)
	return ThrottleCounters{
		Spent:       atomic.LoadUint64(&ud.TokenSpent),
		Refilled:    atomic.LoadUint64(&ud.TokenRefilled),
		Launches:    atomic.LoadUint64(&ud.Launches),
		ThrottledNs: atomic.LoadUint64(&ud.ThrottledNs),

		Done:             atomic.LoadUint64(&ud.TokenDone),
		SampledTokens:    atomic.LoadUint64(&ud.SampledTokens),
		SampledNs:        atomic.LoadUint64(&ud.SampledNs),
		InflightWaitedNs: atomic.LoadUint64(&ud.InflightWaitedNs),
	}
}

// TokenBucket reads device d's current token rate and burst (as one seqlock
// read: both from the same change).
func (r *BudgetRegion) TokenBucket(d int) (rate, burst uint64) {
	bd := r.dev(d)
	for i := 0; ; i++ {
		g1 := atomic.LoadUint64(&r.b.Generation)
		rate = atomic.LoadUint64(&bd.TokenRate)
		burst = atomic.LoadUint64(&bd.TokenBurst)
		if g2 := atomic.LoadUint64(&r.b.Generation); (g1 == g2 && g1&1 == 0) || i >= 100 {
			// After 100 tries a writer died mid-change: each field is still whole.
			return rate, burst
		}
	}
}
