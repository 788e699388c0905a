package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// The throttle benchmark: tenants on a simulated node, each a slice
// with its own budget, run build/test/throttle_load under libvgpu while an
// in-process enforcer.Controller (what vgpud runs every tick) drives their token
// rates from the busy time the simulated driver measures per process. Achieved
// shares come from the same per-process busy time over a window of at least
// 10 s of wall time (= simulated device time: the simulated device runs in real
// time).

// Workloads of the throttle benchmark (throttle_load modes and sizes; a "wave"
// is one pass of a grid over the device's SMs).
const (
	WorkFlood = "flood" // cuLaunchKernel back to back, 100-wave kernels
	WorkSync  = "sync"  // launch, synchronize, repeat; 1000-wave kernels
	WorkGraph = "graph" // cuGraphLaunch of a 4-kernel graph (1000 waves), synchronize, repeat
	WorkMix   = "mix"   // 2 threads: kernel / Ex / cooperative / graph at random, 300-wave mean, 1 sync in 3
)

// AllWorkloads in report order.
var AllWorkloads = []string{WorkFlood, WorkSync, WorkGraph, WorkMix}

// Goals of the throttle benchmark (the ±2-point promise): reported, not asserted.
const (
	// GoalShareErrorPts: every tenant's achieved share within this many
	// percentage points of its target.
	GoalShareErrorPts = 2.0
	// GoalPriorityRatio: a high-priority tenant's throughput next to a
	// low-priority flood, relative to running alone.
	GoalPriorityRatio = 0.95
)

// ThrottleOptions configures RunThrottle.
type ThrottleOptions struct {
	// Root is the repository root holding build/ ("" = FindRoot).
	Root string
	// Workloads to run in every target cell.
	Workloads []string
	// Groups: which parts run ("alone", "pairs", "four", "settle", "priority").
	Groups []string
	// Window is the measured part of a cell; Warmup runs before it (the
	// controller learns the slice's scale there).
	Window, Warmup time.Duration
	// Tick is the controller's step (vgpud's enforcer interval).
	Tick time.Duration
	// SMs and NsPerBlock of the simulated device. The default wave time differs
	// from libvgpu's nominal one (shm.TokenWaveNs), so the static rates are
	// off and the controller has to measure the real scale.
	SMs        int
	NsPerBlock uint64
	// PriorityFloorBP is the floor the low-priority tenant is held to.
	PriorityFloorBP uint32
	// Controller tunes the controller (zero: its defaults).
	Controller enforcer.ControllerConfig
	// KeepTemp leaves the temp dirs behind.
	KeepTemp bool
	// StepLog receives one line per tenant per controller step (nil: none).
	StepLog io.Writer
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// Groups of the throttle benchmark.
const (
	GroupAlone    = "alone"
	GroupPairs    = "pairs"
	GroupFour     = "four"
	GroupSettle   = "settle"
	GroupPriority = "priority"
)

// AllGroups in report order.
var AllGroups = []string{GroupAlone, GroupPairs, GroupFour, GroupSettle, GroupPriority}

// DefaultThrottleOptions returns what `vgpu-bench throttle` runs.
func DefaultThrottleOptions() ThrottleOptions {
	return ThrottleOptions{
		Workloads:       append([]string(nil), AllWorkloads...),
		Groups:          append([]string(nil), AllGroups...),
		Window:          10 * time.Second,
		Warmup:          2 * time.Second,
		Tick:            50 * time.Millisecond,
		SMs:             132,
		NsPerBlock:      13000,
		PriorityFloorBP: 200,
	}
}

func (o *ThrottleOptions) validate() error {
	for _, w := range o.Workloads {
		if !contains(AllWorkloads, w) {
			return fmt.Errorf("unknown workload %q (want %s)", w, strings.Join(AllWorkloads, ", "))
		}
	}
	for _, g := range o.Groups {
		if !contains(AllGroups, g) {
			return fmt.Errorf("unknown group %q (want %s)", g, strings.Join(AllGroups, ", "))
		}
	}
	switch {
	case o.Window <= 0 || o.Warmup < 0:
		return fmt.Errorf("window %v must be > 0 and warmup %v >= 0", o.Window, o.Warmup)
	case o.Tick < time.Millisecond || o.Tick > time.Second:
		return fmt.Errorf("tick %v out of range 1ms..1s", o.Tick)
	case o.SMs < 1 || o.SMs > 100000:
		return fmt.Errorf("sms %d out of range", o.SMs)
	case o.NsPerBlock < 100:
		return fmt.Errorf("ns-per-block %d too small (< 100)", o.NsPerBlock)
	case o.PriorityFloorBP > shm.MaxShareBP:
		return fmt.Errorf("priority floor %d bp > %d", o.PriorityFloorBP, shm.MaxShareBP)
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// TenantSpec is one slice of a cell.
type TenantSpec struct {
	Name     string `json:"name"`
	ShareBP  uint32 `json:"share_bp"`
	FloorBP  uint32 `json:"floor_bp,omitempty"`
	Policy   string `json:"policy"` // "cap" or "share"
	Priority uint32 `json:"priority,omitempty"`
	Workload string `json:"workload"`
	// Processes of the slice running the workload (default 1).
	Processes int `json:"processes"`
	// Start delays the tenant's processes (its slice exists from the start).
	Start time.Duration `json:"-"`
}

// TargetChange changes a tenant's share at an offset from the cell's start.
type TargetChange struct {
	At      time.Duration
	Tenant  int
	ShareBP uint32
}

// cellSpec is one run: tenants on a fresh simulated node.
type cellSpec struct {
	Group    string
	Workload string
	Tenants  []TenantSpec
	Warmup   time.Duration // before the window
	Window   time.Duration
	Changes  []TargetChange
	// Trace records the per-tick series (settle analysis).
	Trace bool
}

// TenantResult is one tenant's figures over a cell's window.
type TenantResult struct {
	TenantSpec
	TargetPct   float64 `json:"target_pct"`   // share, percent
	AchievedPct float64 `json:"achieved_pct"` // busy time / window, percent
	ErrorPts    float64 `json:"error_pts"`    // achieved - target (cap, or contended share); 0 where not applicable
	Checked     bool    `json:"checked"`      // whether this tenant's error counts against the goal
	Launches    uint64  `json:"launches"`     // launches counted by libvgpu over the window
	WaitedPct   float64 `json:"waited_pct"`   // time its launchers waited for tokens / window (summed over threads)
	Scale       float64 `json:"scale"`        // device-ns per token the controller learnt
	Trim        float64 `json:"trim"`
	// SelfPct (real GPU only) is the programs' own estimate: completed kernels x
	// their calibrated device time / window, percent.
	SelfPct float64 `json:"self_pct,omitempty"`
}

// traceSample is one controller step as seen by the benchmark.
type traceSample struct {
	At   time.Duration // since the cell started
	Busy []uint64      // cumulative busy ns per tenant
}

// cellResult is what runCell measured.
type cellResult struct {
	Tenants []TenantResult
	Window  time.Duration
	Trace   []traceSample
	Ticks   int
	// MaxTickLate is the largest delay of a controller step behind its schedule.
	MaxTickLate time.Duration
}

type throttleRun struct {
	opts  ThrottleOptions
	paths Paths
	prog  string
	log   io.Writer
}

// tenantProc is a running throttle_load.
type tenantProc struct {
	cmd   *exec.Cmd
	ready chan error
	done  chan struct{}
	errb  strings.Builder
}

func (r *throttleRun) workloadArgs(work string, seconds float64) []string {
	return loadArgs(work, r.opts.SMs, 0, seconds)
}

// loadArgs are throttle_load's arguments for a workload on a device of sms
// SMs running for seconds; grid > 0 replaces the workload's kernel size.
func loadArgs(work string, sms, grid int, seconds float64) []string {
	s := strconv.FormatFloat(seconds, 'f', 3, 64)
	g := func(waves int) string {
		if grid > 0 {
			return strconv.Itoa(grid)
		}
		return strconv.Itoa(waves * sms)
	}
	switch work {
	case WorkFlood:
		return []string{"flood", s, "--grid", g(100)}
	case WorkSync:
		return []string{"sync", s, "--grid", g(1000)}
	case WorkGraph:
		return []string{"graphsync", s, "--grid", g(1000), "--nodes", "4"}
	case WorkMix:
		return []string{"mix", s, "--grid", g(300), "--threads", "2"}
	}
	panic("unknown workload " + work)
}

func (r *throttleRun) start(ctx context.Context, env []string, args []string) (*tenantProc, error) {
	return r.startWith(ctx, env, args, nil)
}

// startWith starts r.prog; onLine (if not nil) sees every line of its stdout,
// from the reader goroutine (the real-GPU mode reads the programs' own busy
// reports this way).
func (r *throttleRun) startWith(ctx context.Context, env []string, args []string, onLine func(string)) (*tenantProc, error) {
	cmd := exec.CommandContext(ctx, r.prog, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &tenantProc{cmd: cmd, ready: make(chan error, 1), done: make(chan struct{})}
	cmd.Stderr = &lockedBuilder{b: &p.errb}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", r.prog, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if onLine != nil {
				onLine(sc.Text())
			}
			if !sent && strings.HasPrefix(sc.Text(), "READY ") {
				p.ready <- nil
				sent = true
			}
		}
		_ = cmd.Wait()
		if !sent {
			p.ready <- fmt.Errorf("%s %s exited before READY (%v): %s", filepath.Base(r.prog),
				strings.Join(args, " "), cmd.ProcessState, strings.TrimSpace(p.errb.String()))
		}
		close(p.done)
	}()
	return p, nil
}

func (p *tenantProc) stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// stopWorkloads kills each tenant's workload (pids[i]; 0: never reported),
// then waits for each launcher (launchers[i], nil: never started) to end, 5 s
// each at most, and stops it.
func stopWorkloads(pids []int, launchers []*tenantProc) {
	for _, pid := range pids {
		if pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, p := range launchers {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		p.stop()
	}
}

// lockedBuilder collects a child's stderr (written by exec's copier goroutine,
// read after Wait).
type lockedBuilder struct{ b *strings.Builder }

func (w *lockedBuilder) Write(p []byte) (int, error) {
	if w.b.Len() > 1<<16 {
		return len(p), nil
	}
	return w.b.Write(p)
}

// tenantState is a tenant during a cell.
type tenantState struct {
	spec   TenantSpec
	dir    string
	slice  *shm.Slice
	budget *shm.BudgetRegion // writable
	procs  []*tenantProc
	pids   map[int]bool
	busy   uint64 // cumulative busy ns of its processes (exited ones included)
	seen   map[int]uint64
}

func policyCode(p string) uint32 {
	if p == "share" {
		return shm.PolicyShare
	}
	return shm.PolicyCap
}

// newTenant creates a tenant's slice in dir/slice-NAME and opens it; on error
// the returned tenant (possibly half set up) is still for closeTenants.
func newTenant(dir string, spec TenantSpec) (*tenantState, error) {
	if spec.Processes < 1 {
		spec.Processes = 1
	}
	t := &tenantState{spec: spec, dir: filepath.Join(dir, "slice-"+spec.Name),
		pids: map[int]bool{}, seen: map[int]uint64{}}
	// Created as vgpud would: with the static rate of its share, so it is
	// throttled before the controller's first step.
	rate, burst := shm.StaticTokenBucket(spec.ShareBP)
	if err := shm.CreateSlice(t.dir, shm.SliceSpec{
		ID: spec.Name, Priority: spec.Priority, Policy: policyCode(spec.Policy), Slots: 64,
		Devices: []shm.DeviceBudget{{Index: 0, MemoryLimit: 16 << 30, ComputeShareBP: spec.ShareBP,
			ComputeFloorBP: spec.FloorBP, TokenRate: rate, TokenBurst: burst}},
	}); err != nil {
		return t, fmt.Errorf("tenant %s: %w", spec.Name, err)
	}
	sl, err := shm.OpenSlice(t.dir)
	if err != nil {
		return t, fmt.Errorf("tenant %s: %w", spec.Name, err)
	}
	t.slice = sl
	if t.budget, err = shm.OpenBudget(filepath.Join(t.dir, shm.BudgetFile), true); err != nil {
		return t, fmt.Errorf("tenant %s: %w", spec.Name, err)
	}
	return t, nil
}

// closeTenants stops the tenants' processes and closes their regions.
func closeTenants(ts []*tenantState) {
	for _, t := range ts {
		if t == nil {
			continue
		}
		for _, p := range t.procs {
			p.stop()
		}
		if t.budget != nil {
			_ = t.budget.Close()
		}
		if t.slice != nil {
			_ = t.slice.Close()
		}
	}
}

// readBusy adds each tenant's processes' busy time since the last read.
func (r *throttleRun) readBusy(node string, ts []*tenantState) error {
	st, err := simgpu.Status(node)
	if err != nil {
		return err
	}
	if len(st.Devices) == 0 {
		return errors.New("simulated node has no device")
	}
	for _, p := range st.Devices[0].Processes {
		for _, t := range ts {
			if !t.pids[p.PID] {
				continue
			}
			if prev := t.seen[p.PID]; p.BusyNs > prev {
				t.busy += p.BusyNs - prev
				t.seen[p.PID] = p.BusyNs
			}
		}
	}
	return nil
}

// settleTime is how long after a change at `at` the tenant's share settled:
// the first controller step X at or after the change from which the share over
// every window of minWindow (sliding by one step) that ends by `until` is within
// tol points of want; -1: never, or no window fits. The trace's cumulative busy
// time becomes busy time per step (tick), and the arithmetic is the vgpud
// mode's (throttle_series.go: windowsIn, settleAfter). minWindow only has to
// hold enough kernels that one more or less stays inside the tolerance.
func settleTime(trace []traceSample, tenant int, at, until time.Duration, want, tol float64,
	minWindow, tick time.Duration) time.Duration {
	s := traceSeries(trace, tenant, tick)
	ws := s.windowsIn(windowPeriods(minWindow, s.period), at.Nanoseconds(), until.Nanoseconds())
	st, ok := settleAfter(ws, at.Nanoseconds(), want, tol)
	if !ok {
		return -1
	}
	return st
}

// traceSeries turns a trace's cumulative busy time into busy time per step of
// tick: the sample taken k steps after the start closes step k-1.
func traceSeries(trace []traceSample, tenant int, tick time.Duration) *periodSeries {
	p := tick.Nanoseconds()
	var end int64
	if len(trace) > 0 {
		end = trace[len(trace)-1].At.Nanoseconds()
	}
	s := newPeriodSeries(p, 0, end)
	var prev uint64
	var prevIdx int64
	for _, t := range trace {
		idx := (t.At.Nanoseconds() + p/2) / p
		s.add(prevIdx, max(idx-1, prevIdx), float64(t.Busy[tenant]-prev))
		prev, prevIdx = t.Busy[tenant], max(idx, prevIdx)
	}
	return s
}
