package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The throttle benchmark through a real vgpud (`vgpu-bench throttle`, the
// default --controller vgpud): every cell is a fresh simulated node with its
// own bin/vgpud, whose controller reads the simulated NVML through go-nvml as
// on a real node; every tenant is `bin/vgpuctl run --compute P
// --compute-policy cap -- build/test/throttle_load ...`, the user's path. What
// the tenants get is measured by the benchmark itself, from NVML's
// per-process utilization (a sampler child, throttle_sampler.go), per sample
// period, and judged over sliding 1 s windows (throttle_series.go).

// Goals of the vgpud mode, reported per row, never asserted.
const (
	GoalSteadyErrPts     = 2.0 // |achieved − target| over the steady part
	GoalWindowErrPts     = 3.0 // every 1 s window after settling
	GoalSettle           = time.Second
	GoalFirstSecondRatio = 1.5 // share in the tenant's first second / target
)

// ThrottleVgpudOptions configures RunThrottleVgpud.
type ThrottleVgpudOptions struct {
	// Root is the repository root holding bin/ and build/ ("" = FindRoot).
	Root string
	// Cells to run (names of VgpudCellNames); empty: all.
	Cells []string
	// Scale stretches every cell's timeline (durations, joins, leaves); the
	// default 1, --quick 0.5.
	Scale float64
	// Window is the length of the judged windows; Tolerance the settle band
	// (points); Allowance the time after a change before the steady part
	// begins (the settle goal).
	Window, Allowance time.Duration
	Tolerance         float64
	// SMs and NsPerBlock of the node of the cells that do not set their own.
	SMs        int
	NsPerBlock uint64
	// Driver is DriverSim (a fresh simulated node per cell) or DriverReal
	// (the machine's GPU 0, realVgpudCells).
	Driver string
	// Real GPU: the throttle_real binary ("" = build/test/throttle_real), the
	// NVML library ("" = through the loader), the device time of the short
	// and the long kernel to calibrate for, threads per block and kernels
	// queued between synchronizations.
	Prog                        string
	NVMLLib                     string
	ShortKernelMs, LongKernelMs float64
	Block, SyncEvery            int
	KeepTemp                    bool
	Log                         io.Writer
}

// DefaultThrottleVgpudOptions returns what `vgpu-bench throttle` runs.
func DefaultThrottleVgpudOptions() ThrottleVgpudOptions {
	return ThrottleVgpudOptions{Scale: 1, Window: time.Second, Allowance: GoalSettle,
		Tolerance: GoalShareErrorPts, SMs: 132, NsPerBlock: 13000, Driver: DriverSim,
		ShortKernelMs: 0.2, LongKernelMs: 20, Block: 128, SyncEvery: 4}
}

func (o *ThrottleVgpudOptions) validate() error {
	if o.Driver != DriverSim && o.Driver != DriverReal {
		return fmt.Errorf("driver %q: want %s or %s", o.Driver, DriverSim, DriverReal)
	}
	names := vgpudCellNames(o.Driver)
	for _, c := range o.Cells {
		if !contains(names, c) {
			return fmt.Errorf("unknown cell %q (want %s)", c, strings.Join(names, ", "))
		}
	}
	switch {
	case o.Scale < 0.2 || o.Scale > 10:
		return fmt.Errorf("scale %g out of range 0.2..10", o.Scale)
	case o.Window < 100*time.Millisecond || o.Allowance < 0 || o.Tolerance <= 0:
		return fmt.Errorf("window %v (>= 100ms), allowance %v (>= 0), tolerance %g (> 0)", o.Window, o.Allowance, o.Tolerance)
	case o.SMs < 1 || o.SMs > 100000:
		return fmt.Errorf("sms %d out of range", o.SMs)
	case o.NsPerBlock < 100:
		return fmt.Errorf("ns-per-block %d too small (< 100)", o.NsPerBlock)
	case o.Driver == DriverReal && !(o.ShortKernelMs > 0 && o.ShortKernelMs < o.LongKernelMs && o.LongKernelMs <= 1000):
		return fmt.Errorf("kernel lengths %g ms and %g ms: want 0 < short < long <= 1000", o.ShortKernelMs, o.LongKernelMs)
	case o.Driver == DriverReal && (o.Block < 1 || o.Block > 1024 || o.SyncEvery < 1):
		return fmt.Errorf("block %d (1..1024), sync-every %d (>= 1)", o.Block, o.SyncEvery)
	}
	return nil
}

// vgpudTenantSpec is one tenant of a vgpud-mode cell.
type vgpudTenantSpec struct {
	Name     string
	SharePct float64
	Workload string
	Grid     int           // blocks per kernel; 0: the workload's default
	Kernel   string        // real GPU: KernelShort or KernelLong
	Start    time.Duration // from the cell's start
	Stop     time.Duration // killed then; 0: runs to the end
	// Retargets change its share while it runs (`vgpuctl update --compute`).
	Retargets []vgpudRetarget
}

// vgpudRetarget is a change of a running tenant's share.
type vgpudRetarget struct {
	At       time.Duration // from the cell's start
	SharePct float64
}

// vgpudCellSpec is one cell of the vgpud mode.
type vgpudCellSpec struct {
	Name, About string
	NsPerBlock  uint64 // 0: the options'
	Duration    time.Duration
	Tenants     []vgpudTenantSpec
}

// VgpudCellNames are the cells of the simulated node in report order.
func VgpudCellNames() []string { return vgpudCellNames(DriverSim) }

// VgpudRealCellNames are the cells of the real GPU in report order.
func VgpudRealCellNames() []string { return vgpudCellNames(DriverReal) }

func vgpudCellNames(driver string) []string {
	o := DefaultThrottleVgpudOptions()
	o.Driver = driver
	var out []string
	for _, c := range vgpudCells(o) {
		out = append(out, c.Name)
	}
	return out
}

// vgpudCells are the cells of the vgpud mode on o's driver, at o's scale.
func vgpudCells(o ThrottleVgpudOptions) []vgpudCellSpec {
	sc := func(s float64) time.Duration { return time.Duration(s * o.Scale * float64(time.Second)) }
	if o.Driver == DriverReal {
		return realVgpudCells(sc)
	}
	flood := func(name string, pct float64) vgpudTenantSpec {
		return vgpudTenantSpec{Name: name, SharePct: pct, Workload: WorkFlood}
	}
	// A ~20 ms kernel on the default node.
	big := int(math.Ceil(20e6/float64(o.NsPerBlock))) * o.SMs
	eight := make([]vgpudTenantSpec, 8)
	for i := range eight {
		eight[i] = flood(fmt.Sprintf("t%d", i+1), 12)
	}
	churn := []vgpudTenantSpec{flood("a20", 20), flood("b30", 30), flood("c50", 50)}
	churn[2].Start, churn[0].Stop = sc(5), sc(12)
	retarget := flood("r30", 30)
	retarget.Retargets = []vgpudRetarget{{At: sc(5), SharePct: 70}, {At: sc(10), SharePct: 10}}
	return []vgpudCellSpec{
		{Name: "alone-2us", About: "one tenant, 2 µs per wave (100-wave kernels: 0.2 ms)", NsPerBlock: 2000,
			Duration: sc(10), Tenants: []vgpudTenantSpec{flood("a30", 30)}},
		{Name: "alone-80us", About: "one tenant, 80 µs per wave (100-wave kernels: 8 ms)", NsPerBlock: 80000,
			Duration: sc(10), Tenants: []vgpudTenantSpec{flood("a30", 30)}},
		{Name: "hetero", About: "1-block kernels (one wave) next to ~20 ms kernels", Duration: sc(15),
			Tenants: []vgpudTenantSpec{{Name: "tiny30", SharePct: 30, Workload: WorkFlood, Grid: 1},
				{Name: "big60", SharePct: 60, Workload: WorkFlood, Grid: big}}},
		{Name: "churn", About: "20% and 30% running; 50% joins at 5 s; the 20% one is killed at 12 s",
			Duration: sc(18), Tenants: churn},
		{Name: "retarget", About: "one 30% tenant moved to 70% at 5 s and to 10% at 10 s (`vgpuctl update --compute`)",
			Duration: sc(15), Tenants: []vgpudTenantSpec{retarget}},
		{Name: "eight", About: "8 tenants at 12%", Duration: sc(12), Tenants: eight},
		{Name: "sync-graph", About: "launch–synchronize (13 ms kernels) next to a 4-kernel graph + synchronize",
			Duration: sc(15), Tenants: []vgpudTenantSpec{{Name: "sync30", SharePct: 30, Workload: WorkSync},
				{Name: "graph60", SharePct: 60, Workload: WorkGraph}}},
		{Name: "mix", About: "2 threads each: kernel / Ex / cooperative / graph at random, 1 sync in 3",
			Duration: sc(15), Tenants: []vgpudTenantSpec{{Name: "mix30", SharePct: 30, Workload: WorkMix},
				{Name: "mix60", SharePct: 60, Workload: WorkMix}}},
	}
}

// RunThrottleVgpud runs the vgpud-mode cells.
func RunThrottleVgpud(ctx context.Context, opts ThrottleVgpudOptions) (*ThrottleVgpudReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("throttle options: %w", err)
	}
	r, err := newVgpudRun(ctx, opts)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "vgpu-bench-throttle-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(r.log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	rep := r.newReport(ctx)
	for i, c := range vgpudCells(opts) {
		if len(opts.Cells) > 0 && !contains(opts.Cells, c.Name) {
			continue
		}
		fmt.Fprintf(r.log, "bench: throttle: cell %s (%.0f s)\n", c.Name, c.Duration.Seconds())
		res, err := r.runCell(ctx, filepath.Join(tmp, fmt.Sprintf("cell%d", i)), c)
		if err != nil {
			return nil, fmt.Errorf("cell %s: %w", c.Name, err)
		}
		for _, t := range res.Tenants {
			fmt.Fprintf(r.log, "bench: throttle:   %s target %.0f%% achieved %.2f%% (windows after settling: max error %+.2f)\n",
				t.Name, t.TargetPct, t.AchievedPct, t.WindowMaxErrPts)
		}
		rep.Cells = append(rep.Cells, *res)
	}
	if len(rep.Cells) > 0 {
		rep.Config.SamplePeriodNs, rep.Config.DeviceQueueNs = rep.Cells[0].SamplePeriodNs, rep.Cells[0].DeviceQueueNs
	}
	rep.Evaluate()
	return rep, nil
}

// vgpudRun is one run of the vgpud mode.
type vgpudRun struct {
	opts ThrottleVgpudOptions
	vgpudTools
	node cellNode
}

// vgpudTools are what a benchmark running tenants under a real vgpud on a
// simulated node needs: the daemon, vgpuctl, the simulated driver, libvgpu
// and its load program.
type vgpudTools struct {
	paths                  Paths
	vgpud, vgpuctl, simLib string
	load                   string // build/test/<the benchmark's load program>
	log                    io.Writer
}

// findVgpudTools finds them under root (opts' Root, or found from here) and
// checks that each was built; log nil discards.
func findVgpudTools(root, load string, log io.Writer) (vgpudTools, error) {
	root, err := repositoryRoot(root, findDaemonRoot)
	if err != nil {
		return vgpudTools{}, err
	}
	t := vgpudTools{paths: pathsAt(root), vgpud: filepath.Join(root, "bin", "vgpud"),
		vgpuctl: filepath.Join(root, "bin", "vgpuctl"), simLib: filepath.Join(root, "build", "simgpu", "libnvidia-ml.so.1"),
		load: filepath.Join(root, "build", "test", load), log: log}
	if t.log == nil {
		t.log = io.Discard
	}
	for _, f := range []string{t.vgpud, t.vgpuctl, t.simLib, t.load, t.paths.LibVGPU,
		filepath.Join(t.paths.SimLibDir, "libcuda.so.1")} {
		if !fileExists(f) {
			return vgpudTools{}, fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	return t, nil
}

func newVgpudRun(ctx context.Context, opts ThrottleVgpudOptions) (*vgpudRun, error) {
	if opts.Driver == DriverReal {
		return newRealVgpudRun(ctx, opts)
	}
	tools, err := findVgpudTools(opts.Root, "throttle_load", opts.Log)
	if err != nil {
		return nil, err
	}
	r := &vgpudRun{opts: opts, vgpudTools: tools}
	r.node = &simNode{r: r}
	return r, nil
}

// newRealVgpudRun finds bin/vgpud, bin/vgpuctl, libvgpu and throttle_real
// (none of the simulator) and calibrates the real GPU's kernels.
func newRealVgpudRun(ctx context.Context, opts ThrottleVgpudOptions) (*vgpudRun, error) {
	root, err := repositoryRoot(opts.Root, findDaemonRoot)
	if err != nil {
		return nil, err
	}
	if opts.Prog == "" {
		opts.Prog = filepath.Join(root, "build", "test", "throttle_real")
	}
	t := vgpudTools{paths: pathsAt(root), vgpud: filepath.Join(root, "bin", "vgpud"),
		vgpuctl: filepath.Join(root, "bin", "vgpuctl"), load: opts.Prog, log: opts.Log}
	if t.log == nil {
		t.log = io.Discard
	}
	for _, f := range []string{t.vgpud, t.vgpuctl, t.load, t.paths.LibVGPU} {
		if !fileExists(f) {
			return nil, fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	r := &vgpudRun{opts: opts, vgpudTools: t}
	if r.node, err = newRealNode(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *vgpudRun) newReport(ctx context.Context) *ThrottleVgpudReport {
	m := hostMachine(ctx, r.paths.Root, time.Now())
	m.Driver = DriverSim
	o := r.opts
	rep := &ThrottleVgpudReport{Benchmark: "throttle", Machine: m, Config: ThrottleVgpudConfig{
		Controller: ControllerVgpud, Driver: o.Driver, SMs: o.SMs, NsPerBlock: o.NsPerBlock, Scale: o.Scale,
		WindowS: o.Window.Seconds(), AllowanceS: o.Allowance.Seconds(), TolerancePts: o.Tolerance,
		GoalSteadyErrPts: GoalSteadyErrPts, GoalWindowErrPts: GoalWindowErrPts,
		GoalSettleS: GoalSettle.Seconds(), GoalFirstSecondRatio: GoalFirstSecondRatio,
	}, Notes: []string{"NVML reports a whole percent (at least 1) per process and sample period: ±0.5 point per period, " +
		"about ±0.2 over a 1 s window; a tenant's start is its READY line (before its first launch)",
		"a tenant killed mid-cell is judged up to the last sample period the benchmark's sampler had read " +
			"before the kill: NVML lists live processes only, so a period read after the kill is lost with the process"}}
	if n, ok := r.node.(*realNode); ok {
		if m.Driver = nvidiaDriverVersion(ctx); m.Driver == "" {
			m.Driver = "nvidia (version unknown)"
		}
		rep.Machine.Driver, rep.Machine.GPU = m.Driver, n.gpuName
		rep.Config.SMs, rep.Config.NsPerBlock = n.kernels[KernelShort].SMs, 0
		rep.Config.Kernels = map[string]VgpudKernel{}
		for name, k := range n.kernels {
			rep.Config.Kernels[name] = VgpudKernel{TargetMs: k.KernelMsTarget, KernelNs: k.KernelNs, Iters: k.Iters,
				Grid: k.Grid, Block: k.Block}
		}
		rep.Notes = append(rep.Notes, "real GPU: the sampler reads NVML's samples as vgpud does (each stands for "+
			"the time since the process's previous sample, at most 1 s) and cuts them into 1/6 s periods")
	}
	return rep
}
