package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// The throttle benchmark on a real GPU (issue 5, part 5; `vgpu-bench throttle
// --driver real`, run by test/gpu/run.sh): the same cells as on the simulated
// node — one cap tenant alone at 50%, two cap tenants at 30/70 — with a real
// kernel (build/test/throttle_real: an embedded PTX busy loop loaded with
// cuModuleLoadData), launched directly or through a CUDA graph. Each tenant is a
// slice running throttle_real under libvgpu; an in-process enforcer.Controller
// drives the slices' token rates every tick exactly as in the simulated mode
// (and as vgpud does). What differs is the measurement: the achieved share comes
// from NVML's per-process utilization, as vgpud reads it, or — where NVML does
// not name the benchmark's processes (a pid namespace: NVML reports host pids) —
// from the programs' own reports (completed kernels x the device time of one
// kernel, calibrated alone at the start). Both figures are reported.

// WorkKernel is the real-GPU workload without graphs: cuLaunchKernel back to
// back, synchronizing every SyncEvery launches. The graph workload (WorkGraph)
// launches a graph of Nodes kernel nodes, synchronizing every SyncEvery/Nodes
// graph launches, so both queue the same work between synchronizations.
const WorkKernel = "kernel"

// RealWorkloads are the workloads of the real-GPU mode, in report order.
var RealWorkloads = []string{WorkKernel, WorkGraph}

// RealGroups are the groups the real-GPU mode runs.
var RealGroups = []string{GroupAlone, GroupPairs}

// Where the real-GPU mode's achieved shares come from.
const (
	MeasureAuto = "auto" // NVML when it names the benchmark's processes, else self
	MeasureNVML = "nvml" // NVML per-process utilization (what vgpud uses)
	MeasureSelf = "self" // the programs' own reports
)

// ThrottleRealOptions configures RunThrottleReal.
type ThrottleRealOptions struct {
	// Root is the repository root holding build/ ("" = FindRoot).
	Root string
	// Prog is the throttle_real binary ("" = build/test/throttle_real); run.sh
	// passes one linked against the machine's own libcuda.
	Prog      string
	Workloads []string // of RealWorkloads
	Groups    []string // of RealGroups
	// Window is the measured part of a cell; Warmup runs before it.
	Window, Warmup time.Duration
	// Tick is the controller's step (vgpud's enforcer interval).
	Tick time.Duration
	// Waves: a kernel's grid is Waves blocks per SM; Block threads per block.
	Waves, Block int
	// KernelMs is the device time calibration aims at for one kernel.
	KernelMs float64
	// SyncEvery: kernels queued between synchronizations; Nodes: kernel nodes of
	// the graph.
	SyncEvery, Nodes int
	// Measure is MeasureAuto, MeasureNVML or MeasureSelf.
	Measure string
	// NVMLLib is the NVML library ("" = libnvidia-ml.so.1 through the loader).
	NVMLLib    string
	Controller enforcer.ControllerConfig
	KeepTemp   bool
	StepLog    io.Writer
	Log        io.Writer
}

// DefaultThrottleRealOptions returns what `vgpu-bench throttle --driver real` runs:
// 4 cells of 3 s + 10 s, about a minute in all.
func DefaultThrottleRealOptions() ThrottleRealOptions {
	return ThrottleRealOptions{
		Workloads: append([]string(nil), RealWorkloads...),
		Groups:    append([]string(nil), RealGroups...),
		Window:    10 * time.Second,
		Warmup:    3 * time.Second,
		Tick:      50 * time.Millisecond,
		Waves:     1,
		Block:     128,
		KernelMs:  2,
		SyncEvery: 4,
		Nodes:     4,
		Measure:   MeasureAuto,
	}
}

func (o *ThrottleRealOptions) validate() error {
	for _, w := range o.Workloads {
		if !contains(RealWorkloads, w) {
			return fmt.Errorf("unknown workload %q for a real GPU (want %s)", w, strings.Join(RealWorkloads, ", "))
		}
	}
	for _, g := range o.Groups {
		if !contains(RealGroups, g) {
			return fmt.Errorf("unknown group %q for a real GPU (want %s)", g, strings.Join(RealGroups, ", "))
		}
	}
	switch {
	case o.Window <= 0 || o.Warmup < 0:
		return fmt.Errorf("window %v must be > 0 and warmup %v >= 0", o.Window, o.Warmup)
	case o.Tick < time.Millisecond || o.Tick > time.Second:
		return fmt.Errorf("tick %v out of range 1ms..1s", o.Tick)
	case o.Waves < 1 || o.Waves > 1<<20:
		return fmt.Errorf("waves %d out of range 1..%d", o.Waves, 1<<20)
	case o.Block < 1 || o.Block > 1024:
		return fmt.Errorf("block %d out of range 1..1024", o.Block)
	case !(o.KernelMs > 0) || o.KernelMs > 1000:
		return fmt.Errorf("kernel-ms %g out of range (0, 1000]", o.KernelMs)
	case o.SyncEvery < 1 || o.Nodes < 1 || o.Nodes > 64:
		return fmt.Errorf("sync-every %d must be >= 1 and nodes %d in 1..64", o.SyncEvery, o.Nodes)
	case o.Measure != MeasureAuto && o.Measure != MeasureNVML && o.Measure != MeasureSelf:
		return fmt.Errorf("measure %q: want %s, %s or %s", o.Measure, MeasureAuto, MeasureNVML, MeasureSelf)
	}
	return nil
}

// RealThrottleConfig is the real-GPU part of ThrottleConfig.
type RealThrottleConfig struct {
	Prog string `json:"prog"`
	GPU  string `json:"gpu"`
	UUID string `json:"uuid,omitempty"`
	// Measure is what achieved_pct is: "nvml" or "self" (self_pct is always
	// the programs' own figure).
	Measure     string `json:"measure"`
	MeasureNote string `json:"measure_note,omitempty"`
	// NVMLSawCalibration: NVML's per-process samples named the calibration run's pid.
	NVMLSawCalibration bool    `json:"nvml_saw_calibration"`
	SMs                int     `json:"sms"`
	Grid               int     `json:"grid"`
	Block              int     `json:"block"`
	Iters              uint64  `json:"iters"`
	KernelNs           uint64  `json:"kernel_ns"` // one kernel's device time alone
	KernelMsTarget     float64 `json:"kernel_ms_target"`
	SyncEvery          int     `json:"sync_every"`
	Nodes              int     `json:"nodes"`
}

// realRun is the state of RunThrottleReal shared by its cells.
type realRun struct {
	*throttleRun
	ropts ThrottleRealOptions
	cal   RealThrottleConfig
	nvml  *devices.NVML // nil when not measuring with NVML
}

// RunThrottleReal runs the throttle benchmark on the machine's GPU 0.
func RunThrottleReal(ctx context.Context, opts ThrottleRealOptions) (*ThrottleReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("throttle options: %w", err)
	}
	root, err := repositoryRoot(opts.Root, FindRoot)
	if err != nil {
		return nil, err
	}
	paths := pathsAt(root)
	prog := opts.Prog
	if prog == "" {
		prog = filepath.Join(root, "build", "test", "throttle_real")
	}
	for _, f := range []string{prog, paths.LibVGPU} {
		if !fileExists(f) {
			return nil, fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	run := &realRun{
		throttleRun: &throttleRun{paths: paths, prog: prog, log: log,
			opts: ThrottleOptions{Tick: opts.Tick, Controller: opts.Controller, StepLog: opts.StepLog}},
		ropts: opts,
	}
	tmp, err := os.MkdirTemp("", "vgpu-bench-throttle-real-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	var notes []string
	gpuName := ""
	if opts.Measure != MeasureSelf {
		n, uuid, name, err := openNVML(opts.NVMLLib)
		if err != nil {
			if opts.Measure == MeasureNVML {
				return nil, err
			}
			notes = append(notes, fmt.Sprintf("NVML unusable (%v): achieved shares are the programs' own figures", err))
		} else {
			defer n.Close()
			run.nvml, run.cal.UUID, gpuName = n, uuid, name
		}
	}
	if err := run.calibrate(ctx); err != nil {
		return nil, err
	}
	run.cal.Prog, run.cal.GPU = prog, gpuName
	switch {
	case run.nvml != nil && (run.cal.NVMLSawCalibration || opts.Measure == MeasureNVML):
		run.cal.Measure = MeasureNVML
		if !run.cal.NVMLSawCalibration {
			run.cal.MeasureNote = "NVML did not name the calibration run's pid; NVML asked for anyway (--measure nvml)"
		}
	default:
		if run.nvml != nil {
			run.cal.MeasureNote = "NVML's per-process utilization did not name this benchmark's processes " +
				"(a pid namespace: NVML reports host pids), so achieved shares are the programs' own figures"
			_ = run.nvml.Close()
			run.nvml = nil
		}
		run.cal.Measure = MeasureSelf
	}
	fmt.Fprintf(log, "bench: throttle real: %s, %d SMs, grid %d x %d threads, %d iterations = %.3f ms per kernel; "+
		"achieved from %s\n", orDash(gpuName), run.cal.SMs, run.cal.Grid, run.cal.Block, run.cal.Iters,
		float64(run.cal.KernelNs)/1e6, run.cal.Measure)

	m := hostMachine(ctx, root, time.Now())
	if m.Driver = nvidiaDriverVersion(ctx); m.Driver == "" {
		m.Driver = "nvidia (version unknown)"
	}
	m.GPU = gpuName
	cal := run.cal
	rep := &ThrottleReport{
		Benchmark: "throttle",
		Machine:   m,
		Config: ThrottleConfig{
			Driver: DriverReal, SMs: cal.SMs, NominalWaveNs: shm.TokenWaveNs,
			WindowSeconds: opts.Window.Seconds(), WarmupSeconds: opts.Warmup.Seconds(),
			TickMs: float64(opts.Tick) / 1e6, Workloads: opts.Workloads, Groups: opts.Groups,
			Controller: enforcer.NewController(opts.Controller).Config(),
			Notes: "Each cell: one slice per tenant, created with the static rate of its share; every tenant runs " +
				"throttle_real under libvgpu; an in-process enforcer.Controller steps every tick on the achieved " +
				"share (" + cal.Measure + ") and writes the token rates into the budgets, as vgpud does. " +
				"Achieved = the tenant's busy time over the window / the window. Error = achieved - target.",
			Real: &cal,
		},
		Notes: notes,
	}
	if _, err := os.Stat(shm.ContainerSliceDir); err == nil {
		rep.Notes = append(rep.Notes, shm.ContainerSliceDir+" exists on this machine: libvgpu uses it instead of the benchmark's slices")
	}

	n := 0
	for _, g := range opts.Groups {
		sets := [][]int{{50}}
		if g == GroupPairs {
			sets = [][]int{{30, 70}}
		}
		for _, set := range sets {
			for _, w := range opts.Workloads {
				var ts []TenantSpec
				var names []string
				for i, p := range set {
					ts = append(ts, TenantSpec{Name: string(rune('A' + i)), ShareBP: uint32(p * 100), Policy: "cap",
						Workload: w, Processes: 1})
					names = append(names, fmt.Sprintf("%s:cap%d%%", ts[i].Name, p))
				}
				n++
				dir := filepath.Join(tmp, fmt.Sprintf("cell%03d", n))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return nil, err
				}
				fmt.Fprintf(log, "bench: throttle real %s %s [%s] (%v)\n", g, w, strings.Join(names, " "),
					opts.Warmup+opts.Window)
				res, err := run.cell(ctx, dir, cellSpec{Group: g, Workload: w, Tenants: ts, Warmup: opts.Warmup,
					Window: opts.Window})
				if err != nil {
					return nil, fmt.Errorf("%s %s %v: %w", g, w, set, err)
				}
				rep.Cells = append(rep.Cells, evaluateCell(g, w, res))
			}
		}
	}
	rep.Evaluate()
	return rep, nil
}

// openNVML opens NVML and returns GPU 0's UUID and name (tenants run with
// CUDA_DEVICE_ORDER=PCI_BUS_ID, so CUDA ordinal 0 is NVML index 0).
func openNVML(lib string) (*devices.NVML, string, string, error) {
	n, err := devices.Open(lib)
	if err != nil {
		return nil, "", "", err
	}
	devs, err := n.Devices()
	if err == nil && len(devs) == 0 {
		err = devices.ErrNoDevices
	}
	if err != nil {
		_ = n.Close()
		return nil, "", "", fmt.Errorf("NVML devices: %w", err)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Index < devs[j].Index })
	return n, devs[0].UUID, devs[0].Name, nil
}

// env is the environment of a benchmark program: the caller's (its
// LD_LIBRARY_PATH, and VGPU_SIM_STATE when rehearsing on the simulated node),
// with libvgpu preloaded on slice dir when dir is not "".
func (r *realRun) env(dir string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "CUDA_DEVICE_ORDER" || (strings.HasPrefix(k, "VGPU_") && k != "VGPU_SIM_STATE") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "CUDA_DEVICE_ORDER=PCI_BUS_ID")
	if dir != "" {
		out = append(out, "LD_PRELOAD="+r.paths.LibVGPU, "VGPU_SLICE_DIR="+dir, "VGPU_FAIL_MODE=refuse")
	}
	return out
}

func (r *realRun) geometry() []string {
	return []string{"--block", strconv.Itoa(r.ropts.Block), "--sync-every", strconv.Itoa(r.ropts.SyncEvery),
		"--nodes", strconv.Itoa(r.ropts.Nodes)}
}

// calibrate runs `throttle_real calibrate` bare (no libvgpu, nothing else on the
// GPU): the iterations for a kernel of KernelMs, and its device time alone. It
// then keeps the GPU busy for 2 s while NVML is asked whether it names the
// process.
func (r *realRun) calibrate(ctx context.Context) error {
	const hold = 2 * time.Second
	args := []string{"calibrate", "--kernel-ms", strconv.FormatFloat(r.ropts.KernelMs, 'f', -1, 64),
		"--block", strconv.Itoa(r.ropts.Block)}
	// The program's default grid is one block per SM; a grid of more waves needs
	// the SM count, so it is calibrated by a second run once the first said it.
	calLine := make(chan string, 1)
	onLine := func(l string) {
		if strings.HasPrefix(l, "CALIBRATE ") {
			select {
			case calLine <- l:
			default:
			}
		}
	}
	parse := func(l string) error {
		f := lineFields(l)
		var err error
		get := func(k string) uint64 {
			v, e := strconv.ParseUint(f[k], 10, 64)
			if e != nil && err == nil {
				err = fmt.Errorf("calibration line %q: %s: %w", l, k, e)
			}
			return v
		}
		r.cal.Iters, r.cal.KernelNs = get("iters"), get("kernel_ns")
		r.cal.SMs, r.cal.Grid, r.cal.Block = int(get("sms")), int(get("grid")), int(get("block"))
		if err == nil && (r.cal.KernelNs == 0 || r.cal.Iters == 0) {
			err = fmt.Errorf("calibration line %q: zero kernel time or iterations", l)
		}
		return err
	}
	runOnce := func(holdGPU bool, extra ...string) error {
		a := append(append([]string(nil), args...), extra...)
		if holdGPU {
			a = append(a, "--seconds", strconv.FormatFloat(hold.Seconds(), 'f', 3, 64))
		}
		p, err := r.startWith(ctx, r.env(""), a, onLine)
		if err != nil {
			return err
		}
		defer p.stop()
		var l string
		select {
		case l = <-calLine:
		case <-p.done:
			select {
			case l = <-calLine:
			default:
				return fmt.Errorf("throttle_real calibrate exited without calibrating (%v): %s",
					p.cmd.ProcessState, strings.TrimSpace(p.errb.String()))
			}
		case <-time.After(60 * time.Second):
			return errors.New("throttle_real calibrate: no result within 60s")
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := parse(l); err != nil {
			return err
		}
		// While it holds the GPU: does NVML attribute it?
		pid := p.cmd.Process.Pid
		deadline := time.Now().Add(hold)
		for r.nvml != nil && !r.cal.NVMLSawCalibration && time.Now().Before(deadline) {
			samples, err := r.nvml.ProcessUtilization(r.cal.UUID, 0)
			if err == nil {
				for _, s := range samples {
					if s.HostPID == pid && s.SMPercent > 0 {
						r.cal.NVMLSawCalibration = true
					}
				}
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-p.done:
				deadline = time.Time{}
			}
		}
		select {
		case <-p.done:
		case <-time.After(hold + 30*time.Second):
			return errors.New("throttle_real calibrate did not finish")
		case <-ctx.Done():
			return ctx.Err()
		}
		if p.cmd.ProcessState == nil || !p.cmd.ProcessState.Success() {
			return fmt.Errorf("throttle_real calibrate failed (%v): %s", p.cmd.ProcessState, strings.TrimSpace(p.errb.String()))
		}
		return nil
	}
	if err := runOnce(r.ropts.Waves == 1); err != nil {
		return err
	}
	if r.ropts.Waves > 1 {
		if err := runOnce(true, "--grid", strconv.Itoa(r.ropts.Waves*r.cal.SMs)); err != nil {
			return err
		}
	}
	r.cal.KernelMsTarget, r.cal.SyncEvery, r.cal.Nodes = r.ropts.KernelMs, r.ropts.SyncEvery, r.ropts.Nodes
	return nil
}

// lineFields parses "WORD k=v k=v ...".
func lineFields(l string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(l) {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = v
		}
	}
	return out
}

// utilTracker turns NVML's per-process samples into busy ns per host pid, as
// vgpud does (daemon/compute.go): a sample stands for the time since the pid's
// previous sample, or since the previous query for its first one, at most a second.
type utilTracker struct {
	lastUs uint64
	pidUs  map[int]uint64
}

func (u *utilTracker) add(samples []devices.ProcessUtil, busy map[int]float64) {
	sort.Slice(samples, func(i, j int) bool { return samples[i].TimeStampUs < samples[j].TimeStampUs })
	since := u.lastUs
	for _, s := range samples {
		if s.TimeStampUs <= since {
			continue
		}
		prev := max(u.pidUs[s.HostPID], since)
		period := time.Duration(s.TimeStampUs-prev) * time.Microsecond
		if prev == 0 || period > time.Second {
			period = time.Second
		}
		busy[s.HostPID] += float64(min(s.SMPercent, 100)) / 100 * float64(period.Nanoseconds())
		u.pidUs[s.HostPID] = s.TimeStampUs
		u.lastUs = max(u.lastUs, s.TimeStampUs)
	}
}

// cell runs one cell: tenants' slices and processes, the controller stepping
// every tick on the measured shares, figures over the window.
func (r *realRun) cell(ctx context.Context, dir string, c cellSpec) (*cellResult, error) {
	ts := make([]*tenantState, 0, len(c.Tenants))
	defer func() { closeTenants(ts) }()
	self := make([][]*atomic.Uint64, len(c.Tenants)) // per tenant, per process: reported busy ns
	total := c.Warmup + c.Window
	for _, spec := range c.Tenants {
		t, err := newTenant(dir, spec)
		ts = append(ts, t)
		if err != nil {
			return nil, err
		}
	}
	for i, t := range ts {
		for k := 0; k < t.spec.Processes; k++ {
			busy := &atomic.Uint64{}
			self[i] = append(self[i], busy)
			args := append([]string{t.spec.Workload, strconv.FormatFloat(total.Seconds()+1, 'f', 3, 64),
				"--iters", strconv.FormatUint(r.cal.Iters, 10), "--kernel-ns", strconv.FormatUint(r.cal.KernelNs, 10),
				"--grid", strconv.Itoa(r.cal.Grid)}, r.geometry()...)
			p, err := r.startWith(ctx, r.env(t.dir), args, func(l string) {
				if strings.HasPrefix(l, "BUSY ") {
					if v, err := strconv.ParseUint(lineFields(l)["busy_ns"], 10, 64); err == nil {
						busy.Store(v)
					}
				}
			})
			if err != nil {
				return nil, fmt.Errorf("tenant %s: %w", t.spec.Name, err)
			}
			t.procs = append(t.procs, p)
		}
	}
	for _, t := range ts {
		for _, p := range t.procs {
			select {
			case err := <-p.ready:
				if err != nil {
					return nil, fmt.Errorf("tenant %s: %w", t.spec.Name, err)
				}
			case <-time.After(60 * time.Second):
				return nil, fmt.Errorf("tenant %s: throttle_real: no READY within 60s", t.spec.Name)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			t.pids[p.cmd.Process.Pid] = true
		}
	}

	selfBusy := func(i int) uint64 {
		var s uint64
		for _, b := range self[i] {
			s += b.Load()
		}
		return s
	}
	tracker := &utilTracker{lastUs: uint64(time.Now().UnixMicro()), pidUs: map[int]uint64{}}
	nvmlBusy := make([]float64, len(ts)) // cumulative, NVML
	measure := func() (bool, error) {
		if r.nvml == nil {
			return false, nil
		}
		samples, err := r.nvml.ProcessUtilization(r.cal.UUID, tracker.lastUs)
		if err != nil {
			return false, fmt.Errorf("NVML process utilization: %w", err)
		}
		perPid := map[int]float64{}
		tracker.add(samples, perPid)
		for pid, b := range perPid {
			for i, t := range ts {
				if t.pids[pid] {
					nvmlBusy[i] += b
				}
			}
		}
		return true, nil
	}
	busyOf := func(i int) uint64 {
		if r.cal.Measure == MeasureNVML {
			return uint64(nvmlBusy[i])
		}
		return selfBusy(i)
	}

	ctl := enforcer.NewController(r.opts.Controller)
	res := &cellResult{}
	in := make([]enforcer.ControlInput, len(ts))
	budgets := make([]*shm.BudgetRegion, len(ts))
	devs := make([]int, len(ts))
	prevBusy := make([]uint64, len(ts))
	for i, t := range ts {
		budgets[i] = t.budget
	}
	t0 := time.Now()
	last := t0
	var winBusy, winSelf, winLaunch, winWait []uint64
	var winStart time.Time
	for step := 1; ; step++ {
		due := t0.Add(time.Duration(step) * r.opts.Tick)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		now := time.Now()
		if late := now.Sub(due); late > res.MaxTickLate {
			res.MaxTickLate = late
		}
		el := now.Sub(t0)
		for _, t := range ts {
			for _, p := range t.procs {
				select {
				case <-p.done:
					return nil, fmt.Errorf("tenant %s: throttle_real exited early (%v): %s", t.spec.Name,
						p.cmd.ProcessState, strings.TrimSpace(p.errb.String()))
				default:
				}
			}
		}
		measured := r.cal.Measure == MeasureSelf
		if r.cal.Measure == MeasureNVML {
			ok, err := measure()
			if err != nil {
				return nil, err
			}
			measured = ok
		}
		dt := now.Sub(last).Seconds()
		last = now
		for i, t := range ts {
			dev := t.budget.Device(0)
			b := busyOf(i)
			in[i] = enforcer.ControlInput{
				Slice: t.spec.Name, ShareBP: dev.ComputeShareBP, FloorBP: dev.ComputeFloorBP,
				Policy: t.budget.Policy(), Priority: t.budget.Priority(),
				Counters: t.slice.Usage.Throttle(0),
				Achieved: float64(b-prevBusy[i]) / 1e9 / dt, Measured: measured,
			}
			prevBusy[i] = b
		}
		outs := ctl.Step(now, in)
		if r.opts.StepLog != nil {
			for i, o := range outs {
				fmt.Fprintf(r.opts.StepLog, "%s %s t=%.3f %s achieved=%.4f allowed=%.4f rate=%d burst=%d scale=%.4f "+
					"trim=%.4f throttled=%v active=%v held=%v spent=%d waited_ns=%d self_busy_ns=%d\n", c.Group,
					c.Workload, el.Seconds(), o.Slice, in[i].Achieved, o.Allowed, o.Rate, o.Burst, o.Scale, o.Trim,
					o.Throttled, o.Active, o.Held, in[i].Counters.Spent, in[i].Counters.ThrottledNs, selfBusy(i))
			}
		}
		if err := enforcer.Apply(budgets, devs, outs); err != nil {
			return nil, err
		}
		res.Ticks++
		if winBusy == nil && el >= c.Warmup {
			winStart = now
			winBusy, winSelf = make([]uint64, len(ts)), make([]uint64, len(ts))
			winLaunch, winWait = make([]uint64, len(ts)), make([]uint64, len(ts))
			for i := range ts {
				winBusy[i], winSelf[i] = prevBusy[i], selfBusy(i)
				winLaunch[i], winWait[i] = in[i].Counters.Launches, in[i].Counters.ThrottledNs
			}
		}
		if winBusy != nil && el >= total {
			w := float64(now.Sub(winStart).Nanoseconds())
			res.Window = now.Sub(winStart)
			for i, t := range ts {
				res.Tenants = append(res.Tenants, TenantResult{
					TenantSpec:  t.spec,
					TargetPct:   float64(t.budget.Device(0).ComputeShareBP) / 100,
					AchievedPct: float64(prevBusy[i]-winBusy[i]) / w * 100,
					SelfPct:     float64(selfBusy(i)-winSelf[i]) / w * 100,
					Launches:    in[i].Counters.Launches - winLaunch[i],
					WaitedPct:   float64(in[i].Counters.ThrottledNs-winWait[i]) / w * 100,
					Scale:       outs[i].Scale,
					Trim:        outs[i].Trim,
				})
			}
			return res, nil
		}
	}
}

// markdownReal renders a real-GPU report.
func (r *ThrottleReport) markdownReal() string {
	var b strings.Builder
	c, rc := r.Config, r.Config.Real
	fmt.Fprintf(&b, "# vgpu throttle benchmark: real GPU, %s\n\n", orDash(rc.GPU))
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s; driver %s\n", r.Machine.Hostname, r.Machine.CPUModel,
		r.Machine.Cores, orDash(r.Machine.Kernel), orDash(r.Machine.Driver))
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", r.Machine.GoVersion, r.Machine.Date, orDash(r.Machine.Commit))
	fmt.Fprintf(&b, "- kernel: PTX busy loop (cuModuleLoadData), %d blocks x %d threads on %d SMs, %d iterations: "+
		"%.3f ms of device time alone (calibrated; target %.1f ms); libvgpu's nominal estimate for it: %.3f ms\n",
		rc.Grid, rc.Block, rc.SMs, rc.Iters, float64(rc.KernelNs)/1e6, rc.KernelMsTarget,
		float64((rc.Grid+rc.SMs-1)/max(rc.SMs, 1))*float64(c.NominalWaveNs)/1e6)
	fmt.Fprintf(&b, "- workloads: kernel = cuLaunchKernel, synchronize every %d launches; graph = cuGraphLaunch of a "+
		"%d-kernel graph, synchronize every %d graph launches\n", rc.SyncEvery, rc.Nodes, max(1, rc.SyncEvery/rc.Nodes))
	fmt.Fprintf(&b, "- each cell: %.0f s warm-up, then a %.0f s window; controller step %.0f ms\n",
		c.WarmupSeconds, c.WindowSeconds, c.TickMs)
	src := "NVML per-process utilization (as vgpud measures it)"
	if rc.Measure == MeasureSelf {
		src = "the programs' own reports (completed kernels x calibrated kernel time)"
	}
	fmt.Fprintf(&b, "- achieved: %s; \"self\": the programs' own figure, for comparison\n", src)
	if rc.MeasureNote != "" {
		fmt.Fprintf(&b, "- note: %s\n", rc.MeasureNote)
	}
	fmt.Fprintf(&b, "- %s\n\n", c.Notes)
	b.WriteString("## Target vs achieved (cap policy; percent of the device)\n\n")
	b.WriteString("| group | workload | target | achieved | self | error (pts) | max abs error | waited | result |\n")
	b.WriteString("|---|---|---|---|---|---|---:|---|---|\n")
	for _, cell := range r.Cells {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.2f | %s | %s |\n", cell.Group, cell.Workload,
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.TargetPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.AchievedPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.SelfPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.ErrorPts }, true),
			cell.MaxErrorPts,
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.WaitedPct }, false),
			metText(cell.Met))
	}
	b.WriteString("\n\"waited\": time the tenant's launchers slept for tokens, percent of the window.\n\n")
	s := r.Summary
	fmt.Fprintf(&b, "## Summary\n\n- cells within ±%.0f points: %d of %d (max error %.2f pts, mean |error| %.2f pts)\n",
		GoalShareErrorPts, s.CellsMet, s.Cells, s.MaxErrorPts, s.MeanAbsErrPts)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- note: %s\n", n)
	}
	if s.AllMet {
		b.WriteString("\n**All goals met.**\n")
	} else {
		b.WriteString("\n**Some goals NOT met** (see the result columns).\n")
	}
	return b.String()
}
