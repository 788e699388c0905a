package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// cellLoop is the controller side of a cell, the same on the simulated node
// and on a real GPU: every tick it gives each tenant's achieved share to an
// enforcer.Controller and writes the outputs into the slices' budgets, as
// vgpud does; after the warm-up it opens the measured window, and at the end
// turns the window into TenantResults. Where the busy time comes from is the
// caller's: the simulated driver's per-process figures, NVML or the programs'
// own reports.
type cellLoop struct {
	ts       []*tenantState
	tick     time.Duration
	ctl      *enforcer.Controller
	in       []enforcer.ControlInput
	outs     []enforcer.ControlOutput
	budgets  []*shm.BudgetRegion
	devs     []int    // device index per budget: always 0
	prevBusy []uint64 // each tenant's busy ns at the previous step
	t0, last time.Time
	res      *cellResult
	// The measured window: when it opened and each tenant's counters then
	// (winBusy nil: still warming up).
	winStart                    time.Time
	winBusy, winLaunch, winWait []uint64
}

func newCellLoop(ts []*tenantState, tick time.Duration, cfg enforcer.ControllerConfig) *cellLoop {
	l := &cellLoop{ts: ts, tick: tick, ctl: enforcer.NewController(cfg), res: &cellResult{},
		in: make([]enforcer.ControlInput, len(ts)), budgets: make([]*shm.BudgetRegion, len(ts)),
		devs: make([]int, len(ts)), prevBusy: make([]uint64, len(ts))}
	for i, t := range ts {
		l.budgets[i] = t.budget
	}
	l.t0 = time.Now()
	l.last = l.t0
	return l
}

// await sleeps until step's time and returns the time and how long the cell
// has run. Steps are on a fixed schedule from the start, so a late step does
// not push the later ones back; the lateness is recorded (MaxTickLate) because
// a loaded machine shows up there before it shows up in the shares.
func (l *cellLoop) await(ctx context.Context, step int) (time.Time, time.Duration, error) {
	due := l.t0.Add(time.Duration(step) * l.tick)
	if d := time.Until(due); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return time.Time{}, 0, ctx.Err()
		}
	}
	now := time.Now()
	if late := now.Sub(due); late > l.res.MaxTickLate {
		l.res.MaxTickLate = late
	}
	return now, now.Sub(l.t0), nil
}

// step feeds the controller each tenant's share since the previous step
// (busy(i): tenant i's cumulative busy ns; measured: whether that figure is a
// measurement at all this step) and keeps its outputs for apply.
func (l *cellLoop) step(now time.Time, busy func(i int) uint64, measured bool) {
	dt := now.Sub(l.last).Seconds()
	l.last = now
	for i, t := range l.ts {
		dev := t.budget.Device(0)
		b := busy(i)
		l.in[i] = enforcer.ControlInput{
			Slice: t.spec.Name, ShareBP: dev.ComputeShareBP, FloorBP: dev.ComputeFloorBP,
			Policy: t.budget.Policy(), Priority: t.budget.Priority(),
			Counters: t.slice.Usage.Throttle(0),
			Achieved: float64(b-l.prevBusy[i]) / 1e9 / dt, Measured: measured,
		}
		l.prevBusy[i] = b
	}
	l.outs = l.ctl.Step(now, l.in)
}

// logStep writes the step's inputs and outputs, one line per tenant; extra(i)
// ends tenant i's line (the real-GPU mode adds the programs' own figure).
func (l *cellLoop) logStep(w io.Writer, c cellSpec, el time.Duration, extra func(i int) string) {
	for i, o := range l.outs {
		fmt.Fprintf(w, "%s %s t=%.3f %s achieved=%.4f allowed=%.4f rate=%d burst=%d scale=%.4f "+
			"trim=%.4f throttled=%v active=%v held=%v spent=%d waited_ns=%d%s\n", c.Group, c.Workload,
			el.Seconds(), o.Slice, l.in[i].Achieved, o.Allowed, o.Rate, o.Burst, o.Scale, o.Trim, o.Throttled,
			o.Active, o.Held, l.in[i].Counters.Spent, l.in[i].Counters.ThrottledNs, extra(i))
	}
}

// apply writes the step's token rates into the budgets (what libvgpu reads).
func (l *cellLoop) apply() error {
	if err := enforcer.Apply(l.budgets, l.devs, l.outs); err != nil {
		return err
	}
	l.res.Ticks++
	return nil
}

// openWindow opens the measured window at the first step past the warm-up,
// taking each tenant's counters as the window's zero; true when it opened now.
func (l *cellLoop) openWindow(now time.Time, el, warmup time.Duration) bool {
	if l.winBusy != nil || el < warmup {
		return false
	}
	n := len(l.ts)
	l.winStart = now
	l.winBusy, l.winLaunch, l.winWait = make([]uint64, n), make([]uint64, n), make([]uint64, n)
	for i := range l.ts {
		l.winBusy[i] = l.prevBusy[i]
		l.winLaunch[i] = l.in[i].Counters.Launches
		l.winWait[i] = l.in[i].Counters.ThrottledNs
	}
	return true
}

// closeWindow ends the cell once the window is open and the cell has run for
// total: each tenant's figures over the window go into the result; false
// while the cell goes on.
func (l *cellLoop) closeWindow(now time.Time, el, total time.Duration) bool {
	if l.winBusy == nil || el < total {
		return false
	}
	w := now.Sub(l.winStart)
	l.res.Window = w
	for i, t := range l.ts {
		l.res.Tenants = append(l.res.Tenants, TenantResult{
			TenantSpec:  t.spec,
			TargetPct:   float64(t.budget.Device(0).ComputeShareBP) / 100,
			AchievedPct: float64(l.prevBusy[i]-l.winBusy[i]) / float64(w.Nanoseconds()) * 100,
			Launches:    l.in[i].Counters.Launches - l.winLaunch[i],
			WaitedPct:   float64(l.in[i].Counters.ThrottledNs-l.winWait[i]) / float64(w.Nanoseconds()) * 100,
			Scale:       l.outs[i].Scale,
			Trim:        l.outs[i].Trim,
		})
	}
	return true
}

// newTenants creates the cell's tenants (see newTenant). On error the ones
// made so far are returned too, for closeTenants.
func newTenants(dir string, specs []TenantSpec) ([]*tenantState, error) {
	ts := make([]*tenantState, 0, len(specs))
	for _, spec := range specs {
		t, err := newTenant(dir, spec)
		ts = append(ts, t)
		if err != nil {
			return ts, err
		}
	}
	return ts, nil
}
