package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// ThrottleReport is the result of RunThrottle.
type ThrottleReport struct {
	Benchmark string          `json:"benchmark"` // "throttle"
	Machine   Machine         `json:"machine"`
	Config    ThrottleConfig  `json:"config"`
	Cells     []ThrottleCell  `json:"cells"`
	Settle    []SettleResult  `json:"settle,omitempty"`
	Priority  []PriorityCase  `json:"priority,omitempty"`
	Summary   ThrottleSummary `json:"summary"`
	Notes     []string        `json:"notes,omitempty"`
}

// ThrottleConfig records how the figures were taken.
type ThrottleConfig struct {
	Driver          string                    `json:"driver"` // "sim"
	SMs             int                       `json:"sms"`
	NsPerBlock      uint64                    `json:"ns_per_block"`
	NominalWaveNs   uint64                    `json:"nominal_wave_ns"` // libvgpu's estimate per wave
	WindowSeconds   float64                   `json:"window_seconds"`
	WarmupSeconds   float64                   `json:"warmup_seconds"`
	TickMs          float64                   `json:"tick_ms"`
	Workloads       []string                  `json:"workloads"`
	Groups          []string                  `json:"groups"`
	PriorityFloorBP uint32                    `json:"priority_floor_bp"`
	Controller      enforcer.ControllerConfig `json:"controller"`
	Notes           string                    `json:"notes"`
	// Real is set on a real GPU (--driver real): the kernel and how achieved
	// shares were measured.
	Real *RealThrottleConfig `json:"real,omitempty"`
}

// ThrottleCell is one run of tenants with fixed targets.
type ThrottleCell struct {
	Group         string         `json:"group"`
	Workload      string         `json:"workload"`
	WindowSeconds float64        `json:"window_seconds"`
	Tenants       []TenantResult `json:"tenants"`
	MaxErrorPts   float64        `json:"max_error_pts"`
	Met           bool           `json:"met"`
	MaxTickLateMs float64        `json:"max_tick_late_ms"`
}

// SettleResult is the time a tenant's share took to reach a new target.
type SettleResult struct {
	Workload     string  `json:"workload"`
	Change       string  `json:"change"` // e.g. "start -> 30", "30 -> 70"
	FromPct      float64 `json:"from_pct"`
	ToPct        float64 `json:"to_pct"`
	SettleMs     float64 `json:"settle_ms"` // -1: not within the run
	WindowMs     float64 `json:"window_ms"` // trailing window the share is measured over
	TolerancePts float64 `json:"tolerance_pts"`
}

// PriorityCase is the high-priority tenant's throughput in one setting.
type PriorityCase struct {
	Case         string  `json:"case"`
	HighPct      float64 `json:"high_achieved_pct"`
	LowPct       float64 `json:"low_achieved_pct,omitempty"`
	RatioToAlone float64 `json:"ratio_to_alone"`
	HighLaunches uint64  `json:"high_launches"`
	Goal         bool    `json:"goal"` // this case is the one the goal applies to
	Met          bool    `json:"met"`
}

// ThrottleSummary sums the report up.
type ThrottleSummary struct {
	Cells         int     `json:"cells"`
	CellsMet      int     `json:"cells_met"`
	MaxErrorPts   float64 `json:"max_error_pts"`
	MeanAbsErrPts float64 `json:"mean_abs_error_pts"`
	PriorityRatio float64 `json:"priority_ratio"`
	PriorityMet   bool    `json:"priority_met"`
	AllMet        bool    `json:"all_met"`
}

// RunThrottle runs the throttle benchmark on simulated nodes.
func RunThrottle(ctx context.Context, opts ThrottleOptions) (*ThrottleReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("throttle options: %w", err)
	}
	root, err := repositoryRoot(opts.Root, FindRoot)
	if err != nil {
		return nil, err
	}
	paths := pathsAt(root)
	run := &throttleRun{opts: opts, paths: paths, prog: filepath.Join(root, "build", "test", "throttle_load"),
		log: opts.Log}
	if run.log == nil {
		run.log = io.Discard
	}
	for _, f := range []string{run.prog, paths.LibVGPU, filepath.Join(paths.SimLibDir, "libcuda.so.1")} {
		if !fileExists(f) {
			return nil, fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	tmp, err := os.MkdirTemp("", "vgpu-bench-throttle-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(run.log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	rep := run.newReport(ctx, root)
	if err := run.groups(ctx, tmp, rep); err != nil {
		return nil, err
	}
	rep.Evaluate()
	return rep, nil
}

// newReport is the report's machine and configuration, before any cell.
func (r *throttleRun) newReport(ctx context.Context, root string) *ThrottleReport {
	opts := r.opts
	m := hostMachine(ctx, root, time.Now())
	m.Driver = "simgpu"
	m.GPU = "simulated, " + strconv.Itoa(opts.SMs) + " SMs"
	rep := &ThrottleReport{
		Benchmark: "throttle",
		Machine:   m,
		Config: ThrottleConfig{
			Driver: DriverSim, SMs: opts.SMs, NsPerBlock: opts.NsPerBlock, NominalWaveNs: shm.TokenWaveNs,
			WindowSeconds: opts.Window.Seconds(), WarmupSeconds: opts.Warmup.Seconds(),
			TickMs: float64(opts.Tick) / 1e6, Workloads: opts.Workloads, Groups: opts.Groups,
			PriorityFloorBP: opts.PriorityFloorBP, Controller: enforcer.NewController(opts.Controller).Config(),
			Notes: "Each cell: a fresh simulated node; one slice per tenant, created with the static rate of its share; " +
				"an in-process enforcer.Controller steps every tick on the per-process busy time the simulated driver " +
				"records, and writes the token rates into the budgets. Achieved = the tenant's busy time over the " +
				"window / the window (wall time, which is simulated device time). Error = achieved - target.",
		},
	}
	if _, err := os.Stat(shm.ContainerSliceDir); err == nil {
		rep.Notes = append(rep.Notes, shm.ContainerSliceDir+" exists on this machine: libvgpu uses it instead of the benchmark's slices")
	}
	return rep
}

// groups runs the chosen groups in order, every cell in its own directory
// under tmp (cell001, cell002, ...).
func (r *throttleRun) groups(ctx context.Context, tmp string, rep *ThrottleReport) error {
	n := 0
	cell := func(c cellSpec) (*cellResult, error) {
		n++
		dir := filepath.Join(tmp, fmt.Sprintf("cell%03d", n))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		var names []string
		for _, t := range c.Tenants {
			names = append(names, fmt.Sprintf("%s:%s%g%%", t.Name, t.Policy, float64(t.ShareBP)/100))
		}
		fmt.Fprintf(r.log, "bench: throttle %s %s [%s] (%v)\n", c.Group, c.Workload, strings.Join(names, " "),
			c.Warmup+c.Window)
		return r.runCell(ctx, dir, c)
	}
	for _, g := range r.opts.Groups {
		var err error
		switch g {
		case GroupAlone:
			err = r.targetCells(cell, rep, g, [][]int{{10}, {30}, {50}, {70}, {90}})
		case GroupPairs:
			err = r.targetCells(cell, rep, g, [][]int{{30, 70}, {10, 90}, {50, 50}})
		case GroupFour:
			err = r.targetCells(cell, rep, g, [][]int{{10, 20, 30, 40}})
		case GroupSettle:
			err = r.settle(ctx, cell, rep)
		case GroupPriority:
			err = r.priority(ctx, cell, rep)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// targetCells runs a cell of cap tenants at each set of percentages, with
// every workload.
func (r *throttleRun) targetCells(cell func(cellSpec) (*cellResult, error), rep *ThrottleReport, group string,
	sets [][]int) error {
	for _, set := range sets {
		for _, w := range r.opts.Workloads {
			res, err := cell(cellSpec{Group: group, Workload: w, Tenants: capTenants(w, set...),
				Warmup: r.opts.Warmup, Window: r.opts.Window})
			if err != nil {
				return fmt.Errorf("%s %s %v: %w", group, w, set, err)
			}
			rep.Cells = append(rep.Cells, evaluateCell(group, w, res))
		}
	}
	return nil
}

// capTenants are tenants A, B, ... with the cap policy at pcts percent.
func capTenants(work string, pcts ...int) []TenantSpec {
	var ts []TenantSpec
	for i, p := range pcts {
		ts = append(ts, TenantSpec{Name: string(rune('A' + i)), ShareBP: uint32(p * 100), Policy: "cap",
			Workload: work, Processes: 1})
	}
	return ts
}

// evaluateCell turns a cell's result into a report row. Every tenant here is a
// cap: its error counts.
func evaluateCell(group, work string, res *cellResult) ThrottleCell {
	c := ThrottleCell{Group: group, Workload: work, WindowSeconds: res.Window.Seconds(),
		MaxTickLateMs: float64(res.MaxTickLate) / 1e6}
	for _, t := range res.Tenants {
		t.ErrorPts = t.AchievedPct - t.TargetPct
		t.Checked = true
		c.MaxErrorPts = math.Max(c.MaxErrorPts, math.Abs(t.ErrorPts))
		c.Tenants = append(c.Tenants, t)
	}
	c.Met = c.MaxErrorPts <= GoalShareErrorPts
	return c
}

// settle: one cap tenant whose target moves 30 -> 70 -> 10; the time each move
// takes, and the time from the slice's creation (static rate, unknown scale).
func (r *throttleRun) settle(ctx context.Context, cell func(cellSpec) (*cellResult, error), rep *ThrottleReport) error {
	const seg = 4 * time.Second
	for _, w := range r.opts.Workloads {
		if w == WorkMix {
			continue // random sizes: a short window's share is too noisy to time a settle
		}
		// The window must hold enough kernels that one more or less is well
		// within the tolerance: 1.3 ms kernels for flood, 13 ms for the others.
		win := 250 * time.Millisecond
		if w != WorkFlood {
			win = time.Second
		}
		res, err := cell(cellSpec{Group: GroupSettle, Workload: w,
			Tenants: []TenantSpec{{Name: "A", ShareBP: 3000, Policy: "cap", Workload: w, Processes: 1}},
			Warmup:  0, Window: 3 * seg, Trace: true,
			Changes: []TargetChange{{At: seg, Tenant: 0, ShareBP: 7000}, {At: 2 * seg, Tenant: 0, ShareBP: 1000}}})
		if err != nil {
			return fmt.Errorf("settle %s: %w", w, err)
		}
		steps := []struct {
			name     string
			from, to float64
			at       time.Duration
		}{{"created -> 30", 0, 30, 0}, {"30 -> 70", 30, 70, seg}, {"70 -> 10", 70, 10, 2 * seg}}
		for i, s := range steps {
			until := time.Duration(i+1) * seg
			st := settleTime(res.Trace, 0, s.at, until, s.to, GoalShareErrorPts, win, r.opts.Tick)
			ms := -1.0
			if st >= 0 {
				ms = float64(st) / 1e6
			}
			rep.Settle = append(rep.Settle, SettleResult{Workload: w, Change: s.name, FromPct: s.from, ToPct: s.to,
				SettleMs: ms, WindowMs: float64(win) / 1e6, TolerancePts: GoalShareErrorPts})
		}
	}
	return nil
}

// priority: a high-priority tenant (share policy, 50%, launch-sync-launch) alone,
// next to a low-priority flood (share policy, 50%, held to its floor), and next to
// the same flood at equal priority (for comparison: no hold).
func (r *throttleRun) priority(ctx context.Context, cell func(cellSpec) (*cellResult, error), rep *ThrottleReport) error {
	high := TenantSpec{Name: "H", ShareBP: 5000, Policy: "share", Priority: 10, Workload: WorkSync, Processes: 1}
	low := TenantSpec{Name: "L", ShareBP: 5000, FloorBP: r.opts.PriorityFloorBP, Policy: "share", Priority: 0,
		Workload: WorkFlood, Processes: 1}
	same := low
	same.Priority = high.Priority
	cases := []struct {
		name    string
		tenants []TenantSpec
		goal    bool
	}{
		{"high alone", []TenantSpec{high}, false},
		{fmt.Sprintf("high + low-priority flood (floor %g%%)", float64(r.opts.PriorityFloorBP)/100), []TenantSpec{high, low}, true},
		{"high + equal-priority flood (no hold)", []TenantSpec{high, same}, false},
	}
	var alone float64
	for _, c := range cases {
		res, err := cell(cellSpec{Group: GroupPriority, Workload: WorkSync, Tenants: c.tenants,
			Warmup: r.opts.Warmup, Window: r.opts.Window})
		if err != nil {
			return fmt.Errorf("priority %s: %w", c.name, err)
		}
		pc := PriorityCase{Case: c.name, HighPct: res.Tenants[0].AchievedPct, HighLaunches: res.Tenants[0].Launches,
			Goal: c.goal}
		if len(res.Tenants) > 1 {
			pc.LowPct = res.Tenants[1].AchievedPct
		}
		if alone == 0 {
			alone = pc.HighPct
		}
		if alone > 0 {
			pc.RatioToAlone = pc.HighPct / alone
		}
		pc.Met = pc.RatioToAlone >= GoalPriorityRatio
		rep.Priority = append(rep.Priority, pc)
	}
	return nil
}

// Evaluate fills the summary.
func (r *ThrottleReport) Evaluate() {
	s := ThrottleSummary{Cells: len(r.Cells), PriorityMet: true}
	var sum float64
	var n int
	for _, c := range r.Cells {
		if c.Met {
			s.CellsMet++
		}
		for _, t := range c.Tenants {
			if t.Checked {
				s.MaxErrorPts = math.Max(s.MaxErrorPts, math.Abs(t.ErrorPts))
				sum += math.Abs(t.ErrorPts)
				n++
			}
		}
	}
	if n > 0 {
		s.MeanAbsErrPts = sum / float64(n)
	}
	for _, p := range r.Priority {
		if p.Goal {
			s.PriorityRatio = p.RatioToAlone
			s.PriorityMet = p.Met
		}
	}
	s.AllMet = s.CellsMet == s.Cells && s.PriorityMet
	r.Summary = s
}
