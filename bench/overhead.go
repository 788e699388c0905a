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

	"golang.org/x/sys/unix"

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
	// Log receives one progress line per run (nil: discarded).
	Log io.Writer
}

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

// Paths are the built artifacts the benchmark runs.
type Paths struct {
	Root      string
	Prog      string // build/test/bench_overhead
	LibVGPU   string // build/libvgpu.so
	SimLibDir string // build/simgpu (holds libcuda.so.1)
}

func pathsAt(root string) Paths {
	return Paths{
		Root:      root,
		Prog:      filepath.Join(root, "build", "test", "bench_overhead"),
		LibVGPU:   filepath.Join(root, "build", "libvgpu.so"),
		SimLibDir: filepath.Join(root, "build", "simgpu"),
	}
}

// FindRoot returns the repository root: the first of the working directory, its
// parents, and the parent of the running executable's directory (bin/..) that holds
// build/test/bench_overhead.
func FindRoot() (string, error) {
	return findRootWhere(func(d string) bool { return fileExists(pathsAt(d).Prog) },
		"no build/test/bench_overhead under %s: run `make build` first or pass --root")
}

// findRootWhere returns the first of the working directory, its parents and
// bin/.. of the running executable for which ok holds; the error (format with
// one %s: the places tried) says where it looked.
func findRootWhere(ok func(dir string) bool, notFound string) (string, error) {
	var tried []string
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			tried = append(tried, d)
			if ok(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(filepath.Dir(exe))
		tried = append(tried, d)
		if ok(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf(notFound, strings.Join(tried, ", "))
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// check verifies that every artifact the driver needs is present.
func (p Paths) check(driver string) error {
	need := []string{p.Prog, p.LibVGPU}
	if driver == DriverSim {
		need = append(need, filepath.Join(p.SimLibDir, "libcuda.so.1"))
	}
	for _, f := range need {
		if !fileExists(f) {
			return fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	return nil
}

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
		env = append(env, "LD_PRELOAD="+r.paths.LibVGPU, "VGPU_SLICE_DIR="+r.sliceDir,
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

// order returns the bare/libvgpu order of round i: ABBA, so a machine that slowly
// speeds up or slows down biases neither side.
func order(i int) []bool {
	if i%2 == 0 {
		return []bool{false, true}
	}
	return []bool{true, false}
}

// calls runs every op × thread count, Rounds times bare and with libvgpu.
func (r *overheadRun) calls(ctx context.Context, report *OverheadReport) error {
	type key struct {
		op      string
		threads int
	}
	type acc struct {
		bare, vgpu  []float64
		roundAdded  []float64
		roundMedian [2]float64
	}
	accs := map[key]*acc{}
	for round := 0; round < r.opts.Rounds; round++ {
		for _, op := range r.opts.Ops {
			for _, threads := range r.opts.Threads {
				k := key{op, threads}
				a := accs[k]
				if a == nil {
					a = &acc{}
					accs[k] = a
				}
				for _, vgpu := range order(round) {
					samples, err := r.callsOnce(ctx, op, threads, vgpu)
					if err != nil {
						return err
					}
					med := Median(samples)
					fmt.Fprintf(r.log, "bench: round %d/%d %-7s threads=%d %-7s median %8.1f ns/call\n",
						round+1, r.opts.Rounds, op, threads, modeName(vgpu), med)
					if vgpu {
						a.vgpu = append(a.vgpu, samples...)
						a.roundMedian[1] = med
					} else {
						a.bare = append(a.bare, samples...)
						a.roundMedian[0] = med
					}
				}
				a.roundAdded = append(a.roundAdded, a.roundMedian[1]-a.roundMedian[0])
			}
		}
	}
	for _, op := range r.opts.Ops {
		for _, threads := range r.opts.Threads {
			a := accs[key{op, threads}]
			row := CallRow{Op: op, Threads: threads, Bare: Summarize(a.bare), VGPU: Summarize(a.vgpu),
				RoundAddedNS: a.roundAdded}
			row.AddedMedianNS = row.VGPU.Median - row.Bare.Median
			row.AddedP99NS = row.VGPU.P99 - row.Bare.P99
			report.Calls = append(report.Calls, row)
		}
	}
	return nil
}

func (r *overheadRun) callsOnce(ctx context.Context, op string, threads int, vgpu bool) ([]float64, error) {
	args := []string{"calls", "--op", op, "--threads", strconv.Itoa(threads),
		"--iters", strconv.Itoa(r.opts.Iters), "--batch", strconv.Itoa(r.opts.Batch),
		"--warmup", strconv.Itoa(r.opts.Warmup), "--device", strconv.Itoa(r.opts.Device)}
	if r.opts.Pin {
		args = append(args, "--pin")
	}
	if vgpu {
		args = append(args, "--expect-libvgpu")
	}
	out, err := r.exec(ctx, vgpu, args...)
	if err != nil {
		return nil, err
	}
	res, err := ParseCalls(out)
	if err != nil {
		return nil, fmt.Errorf("bench_overhead calls --op %s (%s): %w", op, modeName(vgpu), err)
	}
	if res.LibVGPU != vgpu {
		return nil, fmt.Errorf("bench_overhead calls --op %s (%s): libvgpu loaded = %v: "+
			"is it in /etc/ld.so.preload?", op, modeName(vgpu), res.LibVGPU)
	}
	if err := r.reclaim(); err != nil {
		return nil, err
	}
	return res.NsPerCall, nil
}

// inits runs the init benchmark for every process count.
func (r *overheadRun) inits(ctx context.Context, report *OverheadReport) error {
	for _, procs := range r.opts.InitProcs {
		var bare, vgpu, bareLoad, vgpuLoad, roundAdded []float64
		maxLate := 0.0
		overran := 0
		for round := 0; round < r.opts.InitRounds; round++ {
			var med [2]float64
			for _, withLib := range order(round) {
				res, late, err := r.initOnce(ctx, procs, withLib)
				if err != nil {
					return err
				}
				if late {
					overran++
				}
				var ms, load []float64
				for _, p := range res {
					ms = append(ms, float64(p.InitNS)/1e6)
					if p.LoadNS >= 0 {
						load = append(load, float64(p.LoadNS)/1e6)
					}
					if late := float64(p.LateNS) / 1e6; late > maxLate {
						maxLate = late
					}
				}
				s := Summarize(ms)
				fmt.Fprintf(r.log, "bench: round %d/%d init procs=%-3d %-7s median %.3f ms max %.3f ms\n",
					round+1, r.opts.InitRounds, procs, modeName(withLib), s.Median, s.Max)
				if withLib {
					vgpu, vgpuLoad = append(vgpu, ms...), append(vgpuLoad, load...)
					med[1] = s.Median
				} else {
					bare, bareLoad = append(bare, ms...), append(bareLoad, load...)
					med[0] = s.Median
				}
			}
			roundAdded = append(roundAdded, med[1]-med[0])
		}
		row := InitRow{Procs: procs, Bare: Summarize(bare), VGPU: Summarize(vgpu),
			BareLoad: Summarize(bareLoad), VGPULoad: Summarize(vgpuLoad), MaxLateMS: maxLate,
			RoundAddedMedMS: roundAdded}
		row.AddedMedianMS = row.VGPU.Median - row.Bare.Median
		row.AddedMaxMS = row.VGPU.Max - row.Bare.Max
		row.AddedLoadMedMS = row.VGPULoad.Median - row.BareLoad.Median
		if overran > 0 {
			report.Notes = append(report.Notes, fmt.Sprintf(
				"init with %d processes: in %d run(s) spawning them took longer than the head start, "+
					"so they did not all start at once", procs, overran))
		}
		report.Init = append(report.Init, row)
	}
	return nil
}

// monotonicNS reads CLOCK_MONOTONIC, the clock bench_overhead sleeps on.
func monotonicNS() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime: %w", err)
	}
	return ts.Nano(), nil
}

// initOnce starts procs processes that all begin their CUDA init at one common
// CLOCK_MONOTONIC instant, and returns each one's figures. overran is true when
// spawning them took longer than the head start they were given. (A process that
// wakes late because all of them wake at once on few cores is expected: that
// contention is part of what the benchmark measures.)
func (r *overheadRun) initOnce(ctx context.Context, procs int, vgpu bool) (res []InitResult, overran bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	now, err := monotonicNS()
	if err != nil {
		return nil, false, err
	}
	// Leave time to spawn every process (and for each to load) before the start.
	startAt := now + int64(50*time.Millisecond) + int64(procs)*int64(5*time.Millisecond)
	args := []string{"init", "--start-at", strconv.FormatInt(startAt, 10), "--device", strconv.Itoa(r.opts.Device)}
	if vgpu {
		args = append(args, "--expect-libvgpu")
	}
	base := r.environ(vgpu)
	type proc struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
	}
	ps := make([]*proc, procs)
	var startErr error
	for i := range ps {
		p := &proc{cmd: exec.CommandContext(ctx, r.paths.Prog, args...)}
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		spawn, err := monotonicNS()
		if err != nil {
			startErr = err
			break
		}
		p.cmd.Env = append(append([]string(nil), base...), "VGPU_BENCH_SPAWN_NS="+strconv.FormatInt(spawn, 10))
		if err := p.cmd.Start(); err != nil {
			startErr = fmt.Errorf("starting %s: %w", r.paths.Prog, err)
			break
		}
		ps[i] = p
	}
	var errs []error
	if startErr != nil {
		errs = append(errs, startErr)
		cancel() // the ones already started must not wait for the others
	} else if spawned, err := monotonicNS(); err == nil && spawned > startAt {
		overran = true
	}
	for i, p := range ps {
		if p == nil {
			continue
		}
		if err := p.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("init process %d/%d (%s): %w: %s", i+1, procs, modeName(vgpu),
				err, strings.TrimSpace(p.stderr.String())))
			continue
		}
		ir, err := ParseInit(p.stdout.Bytes())
		if err != nil {
			errs = append(errs, fmt.Errorf("init process %d/%d (%s): %w", i+1, procs, modeName(vgpu), err))
			continue
		}
		if ir.LibVGPU != vgpu {
			errs = append(errs, fmt.Errorf("init process %d/%d (%s): libvgpu loaded = %v", i+1, procs,
				modeName(vgpu), ir.LibVGPU))
			continue
		}
		res = append(res, *ir)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, false, err
	}
	if err := r.reclaim(); err != nil {
		return nil, false, err
	}
	return res, overran, nil
}
