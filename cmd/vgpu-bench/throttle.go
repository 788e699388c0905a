package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vgpu-project/vgpu/bench"
)

const throttleHelp = `usage: vgpu-bench throttle [flags]

Measures how closely the launch throttle holds compute shares, on
simulated nodes: each tenant is a slice running build/test/throttle_load under
libvgpu; an in-process enforcer.Controller (what vgpud runs every tick) sets the
slices' token rates from the busy time the simulated driver records per process.
The simulated device runs in real time, so a 10 s window is 10 s of device time.

Groups (--groups):
  alone     one cap tenant at 10, 30, 50, 70, 90 percent
  pairs     two cap tenants: 30/70, 10/90, 50/50
  four      four cap tenants: 10/20/30/40
  settle    one cap tenant moved 30 -> 70 -> 10: time until its share is within
            2 points of the new target (and from creation, when the controller
            still has to learn the device's real wave time)
  priority  a high-priority tenant (share 50%, launch-sync-launch) alone, next to a
            low-priority flood held to --priority-floor, and next to the same flood
            at equal priority
Workloads (--workloads), in every target cell:
  flood  cuLaunchKernel back to back        sync  launch, synchronize, repeat
  graph  cuGraphLaunch + synchronize        mix   2 threads, every launch path at random

Goals (reported per row as met / NOT met; never asserted, the exit status is 0
whenever the benchmark ran):
  every tenant of every cell within ±2 points of its target
  the priority tenant next to a low-priority flood >= 95% of its alone throughput

The default run takes about 9 minutes. Output: Markdown on stdout, or the JSON
report with --json (progress on stderr); --out DIR also writes
DIR/throttle-simgpu.json and .md.

--driver real runs on the machine's GPU 0 instead (test/gpu/run.sh does): one
cap tenant alone at 50%, two cap tenants at 30/70 (--groups alone,pairs), each
with the workloads (--workloads) kernel (cuLaunchKernel, synchronize every
--sync-every launches) and graph (cuGraphLaunch of a --nodes kernel graph) of
build/test/throttle_real (--prog): a PTX busy loop loaded with cuModuleLoadData,
calibrated alone to --kernel-ms per kernel. The controller steps on NVML's
per-process utilization as vgpud does, or, where NVML does not name the
benchmark's processes (a pid namespace), on the programs' own reports
(--measure auto|nvml|self). Default windows: 3 s warm-up + 10 s, about a minute
in all; --out writes throttle-real.json and .md. The flags --sms, --ns-per-block,
--priority-floor are for the simulated node only.

Flags:
`

// throttleFlags are the flags of `vgpu-bench throttle` that are not fields of
// the options they end up in: they are read after parsing.
type throttleFlags struct {
	workloads, groups, stepLog, driver *string
	floor                              *uint
}

func throttle(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultThrottleOptions()
	ropts := bench.DefaultThrottleRealOptions()
	c := newBenchCmd("throttle", throttleHelp, "throttle-simgpu", stdout, stderr)
	c.helpOnStderr = true
	f := declareThrottleFlags(c, &opts, &ropts)
	if status, ok := c.parse(args); !ok {
		return status
	}
	opts.Workloads = splitList(*f.workloads)
	opts.Groups = splitList(*f.groups)
	opts.PriorityFloorBP = uint32(*f.floor)
	opts.Log = c.progress()
	if *f.stepLog != "" {
		file, err := os.Create(*f.stepLog)
		if err != nil {
			return c.fail(1, "%v", err)
		}
		defer file.Close()
		w := bufio.NewWriter(file)
		defer w.Flush()
		opts.StepLog = w
	}
	report, name, err := runThrottleOn(ctx, *f.driver, c.fs, opts, ropts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	return c.emit(report, name)
}

// declareThrottleFlags declares the simulated node's flags into opts and the
// real GPU's (help "real: ...") into ropts; both modes share window and tick.
func declareThrottleFlags(c *benchCmd, opts *bench.ThrottleOptions, ropts *bench.ThrottleRealOptions) throttleFlags {
	fs := c.fs
	var f throttleFlags
	c.rootFlag(&opts.Root, "build/")
	f.workloads = fs.String("workloads", strings.Join(opts.Workloads, ","), "workloads of the target cells, comma-separated")
	f.groups = fs.String("groups", strings.Join(opts.Groups, ","), "parts to run, comma-separated")
	fs.DurationVar(&opts.Window, "window", opts.Window, "measured window of each cell")
	fs.DurationVar(&opts.Warmup, "warmup", opts.Warmup, "time before the window (the controller learns the scale)")
	fs.DurationVar(&opts.Tick, "tick", opts.Tick, "controller step")
	fs.IntVar(&opts.SMs, "sms", opts.SMs, "SMs of the simulated device")
	fs.Uint64Var(&opts.NsPerBlock, "ns-per-block", opts.NsPerBlock, "simulated device ns per wave of blocks")
	f.floor = fs.Uint("priority-floor", uint(opts.PriorityFloorBP), "floor of the low-priority tenant, basis points")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary nodes and slices (path printed on stderr)")
	f.stepLog = fs.String("step-log", "", "write every controller step (inputs and outputs per tenant) to `FILE`")
	f.driver = fs.String("driver", bench.DriverSim, "sim (simulated nodes) or real (the machine's GPU 0)")
	fs.StringVar(&ropts.Prog, "prog", "", "real: the throttle_real binary (default build/test/throttle_real)")
	fs.IntVar(&ropts.Waves, "waves", ropts.Waves, "real: blocks per SM of a kernel's grid")
	fs.IntVar(&ropts.Block, "block", ropts.Block, "real: threads per block")
	fs.Float64Var(&ropts.KernelMs, "kernel-ms", ropts.KernelMs, "real: device time of one kernel to calibrate for")
	fs.IntVar(&ropts.SyncEvery, "sync-every", ropts.SyncEvery, "real: kernels queued between synchronizations")
	fs.IntVar(&ropts.Nodes, "nodes", ropts.Nodes, "real: kernel nodes of the graph workload")
	fs.StringVar(&ropts.Measure, "measure", ropts.Measure, "real: achieved shares from auto, nvml or self")
	fs.StringVar(&ropts.NVMLLib, "nvml-lib", "", "real: the NVML library (default libnvidia-ml.so.1 through the loader)")
	return f
}

// runThrottleOn runs the benchmark on driver and returns the report with its
// file name under --out.
func runThrottleOn(ctx context.Context, driver string, fs *flag.FlagSet, opts bench.ThrottleOptions,
	ropts bench.ThrottleRealOptions) (*bench.ThrottleReport, string, error) {
	switch driver {
	case bench.DriverSim:
		report, err := bench.RunThrottle(ctx, opts)
		return report, "throttle-simgpu", err
	case bench.DriverReal:
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		// The simulated node's defaults do not apply: the real mode has its own
		// workloads, groups and warm-up unless they were given.
		if set["workloads"] {
			ropts.Workloads = opts.Workloads
		}
		if set["groups"] {
			ropts.Groups = opts.Groups
		}
		if set["warmup"] {
			ropts.Warmup = opts.Warmup
		}
		ropts.Root, ropts.Window, ropts.Tick = opts.Root, opts.Window, opts.Tick
		ropts.KeepTemp, ropts.Log, ropts.StepLog = opts.KeepTemp, opts.Log, opts.StepLog
		report, err := bench.RunThrottleReal(ctx, ropts)
		return report, "throttle-real", err
	}
	return nil, "", fmt.Errorf("--driver %q: want %s or %s", driver, bench.DriverSim, bench.DriverReal)
}
