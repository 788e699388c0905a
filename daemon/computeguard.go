package daemon

import (
	"errors"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/enforcer"
)

// The compute backstop. libvgpu's token bucket lives in the tenant's usage
// region, so a tenant can forge it (keep token_refilled ahead of token_spent)
// and launch as fast as it likes. The controller's figures come from the
// driver, though: when a slice's measured share stays above what the
// controller allows it (plus computeTolerance) over the averaging window
// while its bucket was supposed to hold it back, the slice is over its share
// whatever its region says. In report mode that is logged and counted; in
// enforce mode the slice's processes (those the kernel places in it and that
// hold the GPU) are stopped from outside for a duty cycle sized to the
// overrun: SIGSTOP for part of each period, SIGCONT for the rest. No process
// outside the slice is signalled, and every stopped process is continued when
// the overrun ends, the slice goes, or vgpud stops.
//
// Stopping a process stops its launches, not the work it already queued on
// the device, so a stop only idles the device once the queue has drained: the
// period must be well above the device queue's depth (a GPU runs up to its
// pending-launch limit ahead; the simulated node up to its --max-backlog). The
// stopped fraction is integral control on the measured share, so a queue that
// drains slowly is made up for by stopping longer.

const (
	// computeTolerance is how far above its allowed share a slice may run
	// (averaged over about a second) before the backstop acts.
	computeTolerance = 0.05
	// dutyPeriod is the duty cycle's first period: one stop and one run each.
	// A slice still over its share with its processes stopped for most of
	// the period has a deeper queue than the period: its period doubles, up
	// to maxDutyPeriod.
	dutyPeriod    = 2 * time.Second
	maxDutyPeriod = 16 * time.Second
	// maxStopped bounds the stopped fraction, so a stopped process still
	// gets to run (and to exit) a little every period.
	maxStopped = 0.98
)

// dutyCycle is one slice device's outside throttle.
type dutyCycle struct {
	stopped  float64       // fraction of each period the slice's processes are stopped
	pids     []int         // the processes last stopped/continued
	reported bool          // the overrun was reported (once per episode)
	period   time.Time     // when the current period began (zero: none yet)
	length   time.Duration // the period's length
	// busy and seen accumulate the measured share over the current period
	// (share-seconds, seconds).
	busy, seen float64
}

// computeGuard runs the duty cycles. It is used by the enforcer loop's
// goroutine only.
type computeGuard struct {
	log    *zap.Logger
	mode   enforcer.Mode
	signal func(pid int, sig syscall.Signal) error
	now    func() time.Time
	period time.Duration
	cycles map[sliceDev]*dutyCycle
	events uint64 // overruns reported
	// resumed: the members found on the first tick were continued once, in
	// case a previous vgpud died while it had them stopped.
	resumed bool
}

func newComputeGuard(log *zap.Logger, mode enforcer.Mode) *computeGuard {
	return &computeGuard{log: log, mode: mode, cycles: map[sliceDev]*dutyCycle{},
		signal: syscall.Kill, now: time.Now, period: dutyPeriod}
}

// observe takes one device's controller outputs (span: the time their
// Achieved was measured over, 0 for an unmeasured step) with each slice's
// averaged achieved share and its member processes, and runs each slice's
// duty cycle.
func (g *computeGuard) observe(uuid string, outs []enforcer.ControlOutput, span time.Duration,
	avg func(slice string) (float64, bool), members map[string][]int) {
	if g.mode == enforcer.ModeOff {
		return
	}
	for _, o := range outs {
		key := sliceDev{o.Slice, uuid}
		achieved, ok := avg(o.Slice)
		if !ok || o.Rate == 0 {
			g.release(key) // unmeasured, or not throttled at all: nothing to hold it to
			continue
		}
		over := achieved - o.Allowed
		dc := g.cycles[key]
		if dc == nil {
			if over <= computeTolerance {
				continue
			}
			dc = &dutyCycle{}
			g.cycles[key] = dc
		}
		g.report(dc, o, uuid, achieved)
		if g.mode != enforcer.ModeEnforce {
			if over <= 0 {
				delete(g.cycles, key) // the episode is over: the next one is reported again
			}
			continue
		}
		// Weighted by the span each figure covers: while the slice is
		// stopped the driver has no sample of it, and the next figure
		// covers the whole stop.
		dc.busy += o.Achieved * span.Seconds()
		dc.seen += span.Seconds()
		if g.nextPeriod(dc, members[o.Slice], achieved, o.Allowed) {
			g.release(key) // run freely for a whole period and still within: over
		}
	}
}

// nextPeriod starts a new period of dc's duty cycle when the current one is
// over, and says whether the cycle can end (the slice ran freely for a whole
// period within its share).
//
// The run fraction of the new period is the last one scaled by allowed over
// what the slice achieved in the last period (the first period starts from
// the averaged share): a slice's share is about proportional to the time its
// launchers run. A period whose stops could not bring the slice down (stopped
// to the maximum and still over) is shorter than the device queue: the next
// one is twice as long. The member processes are stopped for the stopped
// part of the period, from its start.
func (g *computeGuard) nextPeriod(dc *dutyCycle, pids []int, avg, allowed float64) (done bool) {
	now := g.now()
	if !dc.period.IsZero() && now.Sub(dc.period) < dc.length {
		return false
	}
	achieved := avg
	if dc.seen > 0 {
		achieved = dc.busy / dc.seen
	}
	first := dc.period.IsZero()
	if first {
		dc.length = g.period
	} else if dc.stopped == 0 && achieved <= allowed {
		return true
	}
	run := 1 - dc.stopped
	if achieved > 0 {
		run = min(max(run*allowed/achieved, 1-maxStopped), 1)
	}
	if !first && dc.stopped >= maxStopped && achieved > allowed+computeTolerance {
		dc.length = min(2*dc.length, maxDutyPeriod)
	}
	dc.stopped = 1 - run
	dc.busy, dc.seen = 0, 0
	dc.period = now
	dc.pids = append(dc.pids[:0], pids...)
	g.pulse(dc.pids, time.Duration(dc.stopped*float64(dc.length)))
	return false
}

// report logs and counts an overrun once per episode.
func (g *computeGuard) report(dc *dutyCycle, o enforcer.ControlOutput, uuid string, achieved float64) {
	if dc.reported {
		return
	}
	dc.reported = true
	g.events++
	action := "reported"
	if g.mode == enforcer.ModeEnforce {
		action = "throttled from outside"
	}
	g.log.Warn("compute backstop: slice runs above its share (its token bucket does not hold it)",
		zap.String("slice", o.Slice), zap.String("uuid", uuid), zap.Float64("achieved_pct", achieved*100),
		zap.Float64("allowed_pct", o.Allowed*100), zap.Float64("tolerance_pct", computeTolerance*100),
		zap.String("action", action))
}

// pulse stops pids now and continues them after d (0: not at all). The
// continue runs on a timer of its own, so it happens even if the loop stalls.
func (g *computeGuard) pulse(pids []int, d time.Duration) {
	if d <= 0 || len(pids) == 0 {
		return
	}
	own := append([]int(nil), pids...)
	g.send(own, syscall.SIGSTOP)
	time.AfterFunc(d, func() { g.send(own, syscall.SIGCONT) })
}

func (g *computeGuard) send(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		if err := g.signal(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			g.log.Debug("compute backstop: signal", zap.Int("host_pid", pid), zap.Stringer("signal", sig), zap.Error(err))
		}
	}
}

// release ends a slice device's duty cycle, continuing its processes.
func (g *computeGuard) release(key sliceDev) {
	dc := g.cycles[key]
	if dc == nil {
		return
	}
	g.send(dc.pids, syscall.SIGCONT)
	delete(g.cycles, key)
}

// forget ends the duty cycles of slices not in seen (released, or off the
// device).
func (g *computeGuard) forget(seen map[sliceDev]bool) {
	for key := range g.cycles {
		if !seen[key] {
			g.release(key)
		}
	}
}

// resumeOnce continues, on vgpud's first tick, every member process of every
// slice: a vgpud killed in the middle of a stop (SIGKILL, a crash) cannot have
// continued them itself. A process that was not stopped ignores it.
func (g *computeGuard) resumeOnce(members map[string][]int) {
	if g.resumed || g.mode != enforcer.ModeEnforce {
		return
	}
	g.resumed = true
	for _, pids := range members {
		g.send(pids, syscall.SIGCONT)
	}
}

// close continues every process the guard may have stopped (vgpud stops).
func (g *computeGuard) close() {
	for key := range g.cycles {
		g.release(key)
	}
}
