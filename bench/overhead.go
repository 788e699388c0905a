package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// Drivers the overhead benchmark runs on.
const (
	DriverSim  = "sim"  // the simulated node (build/simgpu), created in a temp dir
	DriverReal = "real" // the system's libcuda.so.1 and a real GPU
)

// OverheadOptions configures RunOverhead. DefaultOverheadOptions gives the values
// `vgpu-bench overhead` uses.
type OverheadOptions struct {
	Driver string
	// Root is the repository root holding build/ and bin/ ("" = FindRoot).
	Root string
	// Ops, Threads: the call benchmarks to run (each op at each thread count).
	Ops     []string
	Threads []int
	// Iters timed batches of Batch calls per thread per run, after Warmup batches.
	Iters, Batch, Warmup int
	// Rounds: how many times each configuration runs bare and with libvgpu,
	// alternating the order (ABBA) so slow drift of the machine cancels out.
	Rounds int
	// InitProcs: process counts of the init benchmark; InitRounds runs of each.
	InitProcs  []int
	InitRounds int
	// Pin pins the benchmark's thread i to CPU i (best effort).
	Pin bool
	// Device is the CUDA ordinal measured (the slice covers it).
	Device int
	// NsPerBlock is the simulated device time per block: tiny, so that the sim's
	// launch queue never backs up and a launch never waits for the device.
	NsPerBlock uint64
	// RunTimeout bounds every benchmark process.
	RunTimeout time.Duration
	// KeepTemp leaves the temp dir (sim node, slice) behind for inspection.
	KeepTemp bool
	// Throttled gives the benchmark slice a compute share whose tokens never
	// run out (a rate far above what one launcher can spend, marked managed):
	// every launch then takes the token bucket's hot path and, at each
	// VGPU_MARKER_STRIDE of tokens, a completion marker. Without it the slice
	// is the whole device, whose launches skip the bucket.
	Throttled bool
	// Lib is the interception library preloaded ("" = build/libvgpu.so), e.g.
	// an older build to compare with.
	Lib string
	// Log receives one progress line per run (nil: discarded).
	Log io.Writer
}

// unspentRate is the token rate (and burst) of a --throttled benchmark slice:
// 1e15 device-ns per second, a million times what a launcher can spend.
const unspentRate = 1_000_000_000_000_000

// DefaultOverheadOptions returns the defaults for driver.
func DefaultOverheadOptions(driver string) OverheadOptions {
	return OverheadOptions{
		Driver:     driver,
		Ops:        append([]string(nil), AllOps...),
		Threads:    []int{1, 2},
		Iters:      2000,
		Batch:      100,
		Warmup:     50,
		Rounds:     10,
		InitProcs:  []int{1, 8, 32},
		InitRounds: 3,
		Pin:        true,
		NsPerBlock: 1,
		RunTimeout: 2 * time.Minute,
	}
}

// Sizes of the benchmark's node and slice. The slice limit is far above anything the
// benchmark allocates, so admission always succeeds and only its cost is measured.
const (
	simMemory       = 80 << 30
	simSMs          = 132
	simContextBytes = 256 << 20
	sliceLimit      = 1 << 40
	// realContextOverhead is a nominal per-context charge on a real GPU; with a
	// 1 TiB limit its exact value does not matter for timing.
	realContextOverhead = 512 << 20
)

func (o *OverheadOptions) validate() error {
	if o.Driver != DriverSim && o.Driver != DriverReal {
		return fmt.Errorf("driver %q: want %q or %q", o.Driver, DriverSim, DriverReal)
	}
	for _, op := range o.Ops {
		known := false
		for _, k := range AllOps {
			known = known || op == k
		}
		if !known {
			return fmt.Errorf("unknown op %q (want one of %s)", op, strings.Join(AllOps, ", "))
		}
	}
	for _, t := range o.Threads {
		if t < 1 || t > 256 {
			return fmt.Errorf("threads %d out of range 1..256", t)
		}
	}
	for _, n := range o.InitProcs {
		if n < 1 || n > 512 {
			return fmt.Errorf("init processes %d out of range 1..512", n)
		}
	}
	switch {
	case o.Iters < 1:
		return fmt.Errorf("iters %d must be >= 1", o.Iters)
	case o.Batch < 1:
		return fmt.Errorf("batch %d must be >= 1", o.Batch)
	case o.Warmup < 0:
		return fmt.Errorf("warmup %d must be >= 0", o.Warmup)
	case o.Rounds < 1:
		return fmt.Errorf("rounds %d must be >= 1", o.Rounds)
	case len(o.InitProcs) > 0 && o.InitRounds < 1:
		return fmt.Errorf("init rounds %d must be >= 1", o.InitRounds)
	case len(o.Ops) > 0 && len(o.Threads) == 0:
		return errors.New("no thread counts given")
	case o.Device < 0:
		return fmt.Errorf("device %d must be >= 0", o.Device)
	case o.RunTimeout <= 0:
		return fmt.Errorf("run timeout %v must be > 0", o.RunTimeout)
	}
	return nil
}

// overheadRun is the state of one RunOverhead call.
type overheadRun struct {
	opts     OverheadOptions
	paths    Paths
	tmp      string
	simState string // sim only
	sliceDir string
	usage    *shm.UsageRegion
	log      io.Writer
}

// RunOverhead measures what libvgpu adds to driver calls and to process init, bare
// versus LD_PRELOAD=libvgpu.so, and returns the evaluated report.
func RunOverhead(ctx context.Context, opts OverheadOptions) (*OverheadReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("overhead options: %w", err)
	}
	root, err := repositoryRoot(opts.Root, FindRoot)
	if err != nil {
		return nil, err
	}
	paths := pathsAt(root)
	if err := paths.check(opts.Driver); err != nil {
		return nil, err
	}
	run := &overheadRun{opts: opts, paths: paths, log: opts.Log}
	if run.log == nil {
		run.log = io.Discard
	}
	run.tmp, err = os.MkdirTemp("", "vgpu-bench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(run.log, "bench: keeping %s\n", run.tmp)
	} else {
		defer os.RemoveAll(run.tmp)
	}
	if err := run.setup(); err != nil {
		return nil, err
	}
	defer run.usage.Close()

	report := &OverheadReport{
		Benchmark: "overhead",
		Machine:   hostMachine(ctx, root, time.Now()),
		Config: OverheadConfig{
			Driver:     opts.Driver,
			Ops:        opts.Ops,
			Threads:    opts.Threads,
			Iters:      opts.Iters,
			Batch:      opts.Batch,
			Warmup:     opts.Warmup,
			Rounds:     opts.Rounds,
			InitProcs:  opts.InitProcs,
			InitRounds: opts.InitRounds,
			Pin:        opts.Pin,
			Throttled:  opts.Throttled,
			Lib:        opts.Lib,
			SampleNotes: "per-call figures are per-batch means (CLOCK_MONOTONIC around each batch of calls), " +
				"pooled over all threads and rounds; p99 is over batch means. Init figures pool every process of every round. " +
				"Rows with as many threads as the machine has cores mix contended and time-sliced runs: " +
				"'noisy' marks rows whose rounds disagree by more than the goal.",
		},
	}
	if opts.Driver == DriverSim {
		report.Config.NsPerBlock = opts.NsPerBlock
	}
	if err := run.describeDriver(ctx, &report.Machine); err != nil {
		return nil, err
	}
	if _, err := os.Stat(shm.ContainerSliceDir); err == nil {
		report.Notes = append(report.Notes, fmt.Sprintf(
			"%s exists on this machine: libvgpu uses it instead of the benchmark's slice", shm.ContainerSliceDir))
	}

	if err := run.calls(ctx, report); err != nil {
		return nil, err
	}
	if err := run.inits(ctx, report); err != nil {
		return nil, err
	}
	report.Evaluate()
	return report, nil
}

// setup creates the simulated node (sim driver) and the slice.
func (r *overheadRun) setup() error {
	overhead := uint64(realContextOverhead)
	if r.opts.Driver == DriverSim {
		r.simState = filepath.Join(r.tmp, "sim.state")
		ctxMem := uint64(simContextBytes)
		cfg := simgpu.Config{
			Devices:       r.opts.Device + 1,
			Memory:        simMemory,
			SMs:           simSMs,
			NsPerBlock:    r.opts.NsPerBlock,
			ContextMemory: &ctxMem,
		}
		if err := simgpu.Init(r.simState, cfg); err != nil {
			return fmt.Errorf("creating the simulated node: %w", err)
		}
		// Equal settings make libvgpu's context charge and the sim's agree.
		overhead = simContextBytes
	}
	r.sliceDir = filepath.Join(r.tmp, "slice")
	if err := os.MkdirAll(r.sliceDir, 0o755); err != nil {
		return fmt.Errorf("slice dir: %w", err)
	}
	spec := shm.SliceSpec{
		ID: "vgpu-bench",
		Devices: []shm.DeviceBudget{{
			Index:           uint32(r.opts.Device),
			MemoryLimit:     sliceLimit,
			ContextOverhead: overhead,
			ComputeShareBP:  shm.MaxShareBP,
		}},
	}
	if r.opts.Throttled {
		spec.Flags = shm.BudgetFlagManaged
		spec.Devices[0].ComputeShareBP = shm.MaxShareBP / 2
		spec.Devices[0].TokenRate, spec.Devices[0].TokenBurst = unspentRate, unspentRate
	}
	if err := shm.CreateSlice(r.sliceDir, spec); err != nil {
		return fmt.Errorf("creating the benchmark slice: %w", err)
	}
	u, err := shm.OpenUsage(filepath.Join(r.sliceDir, shm.UsageFile))
	if err != nil {
		return fmt.Errorf("opening the benchmark slice: %w", err)
	}
	r.usage = u
	return nil
}

// environ returns the environment of a benchmark process: bare (the driver alone)
// or with libvgpu preloaded. Inherited LD_PRELOAD and VGPU_* are dropped so neither
// run is influenced by the caller's shell. With the real driver, LD_LIBRARY_PATH and
// VGPU_SIM_STATE are inherited: the system's driver is whatever the caller's loader
// finds (which also lets the real-driver path be tried on the simulator).
func (r *overheadRun) environ(vgpu bool) []string {
	sim := r.opts.Driver == DriverSim
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "LD_PRELOAD":
			continue
		case k == "VGPU_SIM_STATE" && !sim:
		case strings.HasPrefix(k, "VGPU_"):
			continue
		case k == "LD_LIBRARY_PATH" && sim:
			continue
		}
		env = append(env, kv)
	}
	if r.opts.Driver == DriverSim {
		env = append(env, "LD_LIBRARY_PATH="+r.paths.SimLibDir, "VGPU_SIM_STATE="+r.simState)
	}
	if vgpu {
		// refuse: a slice libvgpu cannot use makes the run fail loudly instead of
		// being measured as a pass-through with no overhead.
		lib := r.paths.LibVGPU
		if r.opts.Lib != "" {
			lib = r.opts.Lib
		}
		env = append(env, "LD_PRELOAD="+lib, "VGPU_SLICE_DIR="+r.sliceDir,
			"VGPU_FAIL_MODE=refuse")
	}
	return env
}

func modeName(vgpu bool) string {
	if vgpu {
		return "libvgpu"
	}
	return "bare"
}

// exec runs the benchmark program once and returns its stdout.
func (r *overheadRun) exec(ctx context.Context, vgpu bool, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.paths.Prog, args...)
	cmd.Env = r.environ(vgpu)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s (%s): %w: %s", filepath.Base(r.paths.Prog), strings.Join(args, " "),
			modeName(vgpu), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// reclaim returns the charges of benchmark processes that have exited, as vgpud
// would, so many short-lived processes never fill the slice's slots or budget.
func (r *overheadRun) reclaim() error {
	if _, err := r.usage.Reclaim(enforcer.ProcessAlive); err != nil {
		return fmt.Errorf("reclaiming the benchmark slice: %w", err)
	}
	return nil
}

// describeDriver fills the driver fields of m from `bench_overhead info` (bare).
func (r *overheadRun) describeDriver(ctx context.Context, m *Machine) error {
	out, err := r.exec(ctx, false, "info", "--device", strconv.Itoa(r.opts.Device))
	if err != nil {
		return err
	}
	info, err := ParseInfo(out)
	if err != nil {
		return fmt.Errorf("bench_overhead info: %w", err)
	}
	m.CUDADriver = cudaVersionString(info.CUDADriverVersion)
	m.GPU = info.Name
	m.GPUMemory = info.TotalBytes
	if r.opts.Driver == DriverSim {
		m.Driver = "simgpu"
	} else if m.Driver = nvidiaDriverVersion(ctx); m.Driver == "" {
		m.Driver = "nvidia (version unknown)"
	}
	return nil
}
