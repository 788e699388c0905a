package bench

import (
	"math"
	"time"
)

// Controllers of `vgpu-bench throttle --controller`.
const (
	ControllerVgpud  = "vgpud"  // a real bin/vgpud per cell (default)
	ControllerInproc = "inproc" // an in-process enforcer.Controller on the simulator's counters
)

// ThrottleVgpudConfig records how the vgpud-mode figures were taken.
type ThrottleVgpudConfig struct {
	Controller string `json:"controller"`
	// Driver is "sim" (a fresh simulated node per cell) or "real" (GPU 0).
	Driver     string  `json:"driver"`
	SMs        int     `json:"sms"`
	NsPerBlock uint64  `json:"ns_per_block"` // of the cells that do not set their own
	Scale      float64 `json:"timeline_scale"`
	// The simulated node's NVML sample period and device queue (the
	// simulator's defaults), as its status reported them.
	SamplePeriodNs uint64  `json:"nvml_sample_period_ns"`
	DeviceQueueNs  uint64  `json:"device_queue_ns"`
	WindowS        float64 `json:"window_s"`
	AllowanceS     float64 `json:"allowance_s"`
	TolerancePts   float64 `json:"settle_tolerance_pts"`
	// Goals, reported per row.
	GoalSteadyErrPts     float64 `json:"goal_steady_error_pts"`
	GoalWindowErrPts     float64 `json:"goal_window_error_pts"`
	GoalSettleS          float64 `json:"goal_settle_s"`
	GoalFirstSecondRatio float64 `json:"goal_first_second_ratio"`
	// Kernels are the real GPU's kernels (KernelShort, KernelLong) as
	// calibrated alone.
	Kernels map[string]VgpudKernel `json:"kernels,omitempty"`
}

// VgpudKernel is a calibrated throttle_real kernel of the real-GPU cells.
type VgpudKernel struct {
	TargetMs float64 `json:"target_ms"`
	KernelNs uint64  `json:"kernel_ns"` // one kernel's device time alone
	Iters    uint64  `json:"iters"`
	Grid     int     `json:"grid"`
	Block    int     `json:"block"`
}

// VgpudEvent is a change in a cell: a tenant's start, a join, a leave, a
// retarget (`vgpuctl update --compute`: its share changed while it runs).
type VgpudEvent struct {
	AtS    float64 `json:"at_s"` // since the cell started
	Kind   string  `json:"kind"` // start, join, leave, retarget
	Tenant string  `json:"tenant"`
	// TargetPct is a retarget's new share.
	TargetPct float64 `json:"target_pct,omitempty"`
}

// VgpudSettle is how long a tenant took to settle after one change.
type VgpudSettle struct {
	Event string  `json:"event"` // "start", "join c50", "leave a20"
	AtS   float64 `json:"at_s"`
	// SettleS: from the change to the first instant from which every 1 s
	// window until the next change is within the tolerance; -1: never.
	// Judged is false when no window fits before the next change.
	SettleS float64 `json:"settle_s"`
	Judged  bool    `json:"judged"`
	Met     bool    `json:"met"`
}

// VgpudWindow is one sliding window of a tenant.
type VgpudWindow struct {
	StartS float64 `json:"start_s"`
	Pct    float64 `json:"pct"`
}

// VgpudTenant is one tenant's figures.
type VgpudTenant struct {
	Name      string  `json:"name"`
	Workload  string  `json:"workload"`
	Grid      int     `json:"grid"`
	Kernel    string  `json:"kernel,omitempty"` // real GPU: short or long
	Policy    string  `json:"policy"`
	Pid       int     `json:"pid"`
	TargetPct float64 `json:"target_pct"` // from its start
	// TargetsPct are its targets in turn, when it was retargeted (the steady
	// error is then against their time-weighted mean, each window's error
	// and each settle against the target in force).
	TargetsPct []float64 `json:"targets_pct,omitempty"`
	StartS     float64   `json:"start_s"`
	EndS       float64   `json:"end_s"`
	// The steady part: every span from Allowance after a change to the next.
	SteadyS      float64 `json:"steady_s"`
	AchievedPct  float64 `json:"achieved_pct"`
	SteadyErrPts float64 `json:"steady_error_pts"`
	// Windows after settling (inside the steady part): the largest |error|
	// (signed) and the mean |error|.
	SettledWindows   int     `json:"settled_windows"`
	WindowMaxErrPts  float64 `json:"window_max_error_pts"`
	WindowMeanErrPts float64 `json:"window_mean_abs_error_pts"`
	// The worst window of the tenant's life after its first second.
	WorstWindowErrPts float64       `json:"worst_window_error_pts"`
	WorstWindowAtS    float64       `json:"worst_window_at_s"`
	Settles           []VgpudSettle `json:"settles"`
	FirstSecondPct    float64       `json:"first_second_pct"`
	// Every window of its life, and its share per sample period from
	// SeriesStartS.
	Windows      []VgpudWindow `json:"windows"`
	SeriesStartS float64       `json:"series_start_s"`
	PeriodPct    []float64     `json:"period_pct"`
	// Goals.
	SteadyMet      bool `json:"steady_met"`
	WindowMet      bool `json:"window_met"`
	SettleMet      bool `json:"settle_met"`
	FirstSecondMet bool `json:"first_second_met"`
	Met            bool `json:"met"`
}

// VgpudCell is one cell's result.
type VgpudCell struct {
	Name       string  `json:"name"`
	About      string  `json:"about"`
	NsPerBlock uint64  `json:"ns_per_block"`
	DurationS  float64 `json:"duration_s"`
	// The node's NVML sample period and device queue depth.
	SamplePeriodNs uint64        `json:"nvml_sample_period_ns"`
	DeviceQueueNs  uint64        `json:"device_queue_ns"`
	Events         []VgpudEvent  `json:"events"`
	Tenants        []VgpudTenant `json:"tenants"`
}

// ThrottleVgpudReport is the result of `vgpu-bench throttle` (vgpud mode).
type ThrottleVgpudReport struct {
	Benchmark string              `json:"benchmark"` // "throttle"
	Machine   Machine             `json:"machine"`
	Config    ThrottleVgpudConfig `json:"config"`
	Cells     []VgpudCell         `json:"cells"`
	AllMet    bool                `json:"all_met"`
	Notes     []string            `json:"notes,omitempty"`
}

// Evaluate sets every tenant's goal fields and AllMet.
func (r *ThrottleVgpudReport) Evaluate() {
	c := r.Config
	all := len(r.Cells) > 0
	for i := range r.Cells {
		for j := range r.Cells[i].Tenants {
			t := &r.Cells[i].Tenants[j]
			t.SteadyMet = t.SteadyS > 0 && math.Abs(t.SteadyErrPts) <= c.GoalSteadyErrPts
			t.WindowMet = t.SettledWindows > 0 && math.Abs(t.WindowMaxErrPts) <= c.GoalWindowErrPts
			t.SettleMet = true
			for k := range t.Settles {
				s := &t.Settles[k]
				s.Met = !s.Judged || (s.SettleS >= 0 && s.SettleS <= c.GoalSettleS+1e-9)
				t.SettleMet = t.SettleMet && s.Met
			}
			t.FirstSecondMet = t.FirstSecondPct <= c.GoalFirstSecondRatio*t.TargetPct
			t.Met = t.SteadyMet && t.WindowMet && t.SettleMet && t.FirstSecondMet
			all = all && t.Met
		}
	}
	r.AllMet = all
}

// tenantSpan is what tenantFigures needs of a tenant besides its series: its
// target, life and the instants of the changes it lived through (its own
// start first), all CLOCK_MONOTONIC ns.
type tenantSpan struct {
	target     float64
	start, end int64
	changes    []int64
	labels     []string // per change
	// targets is the target in force from each change on; nil: target
	// throughout (no retarget).
	targets []float64
}

// targetAt is the target in force from change i on.
func (sp *tenantSpan) targetAt(i int) float64 {
	if sp.targets == nil {
		return sp.target
	}
	return sp.targets[i]
}

// windowErrorsIn are the windows of n periods in [from, to) with their error
// against want as Pct (windowErrors over them with want 0).
func windowErrorsIn(s *periodSeries, n int, from, to int64, want float64) []shareWindow {
	ws := s.windowsIn(n, from, to)
	for i := range ws {
		ws[i].Pct -= want
	}
	return ws
}

// lifeErrors are the window errors of the tenant's life after its first
// second, each window against the target in force throughout it (windows
// across a target change are left out: no one target judges them).
func (sp *tenantSpan) lifeErrors(s *periodSeries, n int) []shareWindow {
	var out []shareWindow
	from := sp.start + time.Second.Nanoseconds()
	for i := 0; i < len(sp.changes); {
		j := i + 1
		for j < len(sp.changes) && sp.targetAt(j) == sp.targetAt(i) {
			j++
		}
		to := sp.end
		if j < len(sp.changes) {
			to = sp.changes[j]
		}
		out = append(out, windowErrorsIn(s, n, max(from, sp.changes[i]), to, sp.targetAt(i))...)
		i = j
	}
	return out
}

// tenantFigures computes a tenant's figures from its series; t0 is the cell's
// start (the zero of the reported times).
func tenantFigures(s *periodSeries, sp tenantSpan, t0 int64, o ThrottleVgpudOptions) VgpudTenant {
	rel := func(ns int64) float64 { return float64(ns-t0) / 1e9 }
	n := windowPeriods(o.Window, s.period)
	out := VgpudTenant{TargetPct: sp.target, StartS: rel(sp.start), EndS: rel(sp.end)}
	var busy, length, want float64
	var settled []shareWindow // errors
	for i, c := range sp.changes {
		next := sp.end
		if i+1 < len(sp.changes) {
			next = sp.changes[i+1]
		}
		target := sp.targetAt(i)
		if sp.targets != nil && (i == 0 || target != sp.targetAt(i-1)) {
			out.TargetsPct = append(out.TargetsPct, target)
		}
		st, judged := settleAfter(s.windowsIn(n, c, next), c, target, o.Tolerance)
		out.Settles = append(out.Settles, VgpudSettle{Event: sp.labels[i], AtS: rel(c), SettleS: st.Seconds(),
			Judged: judged})
		if judged && st < 0 {
			out.Settles[i].SettleS = -1
		}
		if from := c + o.Allowance.Nanoseconds(); next > from {
			busy += s.busyBetween(from, next)
			length += float64(next - from)
			want += target * float64(next-from)
			settled = append(settled, windowErrorsIn(s, n, from, next, target)...)
		}
	}
	if length > 0 {
		out.SteadyS = length / 1e9
		out.AchievedPct = busy / length * 100
		out.SteadyErrPts = out.AchievedPct - want/length
	}
	out.SettledWindows = len(settled)
	out.WindowMaxErrPts, _, out.WindowMeanErrPts = windowErrors(settled, 0)
	worst, at, _ := windowErrors(sp.lifeErrors(s, n), 0)
	out.WorstWindowErrPts, out.WorstWindowAtS = worst, rel(at)
	out.FirstSecondPct = s.sharePct(sp.start, sp.start+time.Second.Nanoseconds())
	for _, w := range s.windowsIn(n, sp.start, sp.end) {
		out.Windows = append(out.Windows, VgpudWindow{StartS: round3(rel(w.Start)), Pct: round3(w.Pct)})
	}
	out.SeriesStartS = round3(rel(s.e0 * s.period))
	for _, b := range s.busy {
		out.PeriodPct = append(out.PeriodPct, round3(b/float64(s.period)*100))
	}
	return out
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
