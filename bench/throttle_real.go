package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// The throttle benchmark on a real GPU (`vgpu-bench throttle
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
	run, err := newRealRun(root, opts)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "vgpu-bench-throttle-real-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(run.log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	gpuName, notes, closeNVML, err := run.prepare(ctx)
	defer closeNVML()
	if err != nil {
		return nil, err
	}
	rep := run.newReport(ctx, root, gpuName, notes)
	if err := run.cells(ctx, tmp, rep); err != nil {
		return nil, err
	}
	rep.Evaluate()
	return rep, nil
}

// newRealRun checks that the programs are built and sets up the run.
func newRealRun(root string, opts ThrottleRealOptions) (*realRun, error) {
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
	return &realRun{
		throttleRun: &throttleRun{paths: paths, prog: prog, log: log,
			opts: ThrottleOptions{Tick: opts.Tick, Controller: opts.Controller, StepLog: opts.StepLog}},
		ropts: opts,
	}, nil
}

// prepare opens NVML (unless --measure self), calibrates the kernel and
// decides where achieved shares come from: NVML where it named the
// calibration run (or was asked for), else the programs' own reports. It
// returns the GPU's name, notes for the report and what closes NVML.
func (r *realRun) prepare(ctx context.Context) (string, []string, func(), error) {
	var notes []string
	gpuName := ""
	closeNVML := func() {}
	if r.ropts.Measure != MeasureSelf {
		n, uuid, name, err := openNVML(r.ropts.NVMLLib)
		if err != nil {
			if r.ropts.Measure == MeasureNVML {
				return "", nil, closeNVML, err
			}
			notes = append(notes, fmt.Sprintf("NVML unusable (%v): achieved shares are the programs' own figures", err))
		} else {
			closeNVML = func() { n.Close() }
			r.nvml, r.cal.UUID, gpuName = n, uuid, name
		}
	}
	if err := r.calibrate(ctx); err != nil {
		return "", nil, closeNVML, err
	}
	r.cal.Prog, r.cal.GPU = r.prog, gpuName
	switch {
	case r.nvml != nil && (r.cal.NVMLSawCalibration || r.ropts.Measure == MeasureNVML):
		r.cal.Measure = MeasureNVML
		if !r.cal.NVMLSawCalibration {
			r.cal.MeasureNote = "NVML did not name the calibration run's pid; NVML asked for anyway (--measure nvml)"
		}
	default:
		if r.nvml != nil {
			r.cal.MeasureNote = "NVML's per-process utilization did not name this benchmark's processes " +
				"(a pid namespace: NVML reports host pids), so achieved shares are the programs' own figures"
			_ = r.nvml.Close()
			r.nvml = nil
		}
		r.cal.Measure = MeasureSelf
	}
	fmt.Fprintf(r.log, "bench: throttle real: %s, %d SMs, grid %d x %d threads, %d iterations = %.3f ms per kernel; "+
		"achieved from %s\n", orDash(gpuName), r.cal.SMs, r.cal.Grid, r.cal.Block, r.cal.Iters,
		float64(r.cal.KernelNs)/1e6, r.cal.Measure)
	return gpuName, notes, closeNVML, nil
}

// newReport is the report's machine and configuration, before any cell.
func (r *realRun) newReport(ctx context.Context, root, gpuName string, notes []string) *ThrottleReport {
	opts := r.ropts
	m := hostMachine(ctx, root, time.Now())
	if m.Driver = nvidiaDriverVersion(ctx); m.Driver == "" {
		m.Driver = "nvidia (version unknown)"
	}
	m.GPU = gpuName
	cal := r.cal
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
	return rep
}

// cells runs the cells of the chosen groups and workloads (one cap tenant at
// 50%, two at 30/70), each in its own directory under tmp.
func (r *realRun) cells(ctx context.Context, tmp string, rep *ThrottleReport) error {
	opts := r.ropts
	n := 0
	for _, g := range opts.Groups {
		set := []int{50}
		if g == GroupPairs {
			set = []int{30, 70}
		}
		for _, w := range opts.Workloads {
			ts := capTenants(w, set...)
			var names []string
			for i, p := range set {
				names = append(names, fmt.Sprintf("%s:cap%d%%", ts[i].Name, p))
			}
			n++
			dir := filepath.Join(tmp, fmt.Sprintf("cell%03d", n))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			fmt.Fprintf(r.log, "bench: throttle real %s %s [%s] (%v)\n", g, w, strings.Join(names, " "),
				opts.Warmup+opts.Window)
			res, err := r.cell(ctx, dir, cellSpec{Group: g, Workload: w, Tenants: ts, Warmup: opts.Warmup,
				Window: opts.Window})
			if err != nil {
				return fmt.Errorf("%s %s %v: %w", g, w, set, err)
			}
			rep.Cells = append(rep.Cells, evaluateCell(g, w, res))
		}
	}
	return nil
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

// env is the environment of a benchmark program: the caller's driver
// environment (driverEnv), with libvgpu preloaded on slice dir when dir is
// not "".
func (r *realRun) env(dir string) []string {
	out := driverEnv()
	if dir != "" {
		out = append(out, "LD_PRELOAD="+r.paths.LibVGPU, "VGPU_SLICE_DIR="+dir, "VGPU_FAIL_MODE=refuse")
	}
	return out
}

func (r *realRun) geometry() []string {
	return []string{"--block", strconv.Itoa(r.ropts.Block), "--sync-every", strconv.Itoa(r.ropts.SyncEvery),
		"--nodes", strconv.Itoa(r.ropts.Nodes)}
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
// vgpud does (daemon/compute.go; sampleStart).
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
		period := time.Duration(s.TimeStampUs-sampleStart(u.pidUs[s.HostPID], since, s.TimeStampUs)) * time.Microsecond
		busy[s.HostPID] += float64(min(s.SMPercent, 100)) / 100 * float64(period.Nanoseconds())
		u.pidUs[s.HostPID] = s.TimeStampUs
		u.lastUs = max(u.lastUs, s.TimeStampUs)
	}
}

// sampleStart is where a process's NVML sample stamped stampUs begins, as
// vgpud reads the driver's samples (daemon/compute.go): at the process's
// previous sample (prevUs), or at the previous query's newest stamp (sinceUs)
// for its first, at most a second before the stamp.
func sampleStart(prevUs, sinceUs, stampUs uint64) uint64 {
	from := max(prevUs, sinceUs)
	if from == 0 || stampUs-from > 1_000_000 {
		return stampUs - 1_000_000
	}
	return from
}
