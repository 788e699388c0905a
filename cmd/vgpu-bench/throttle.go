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

Measures what tenants get from the compute-share throttle on simulated nodes
(or, with --driver real, on the machine's GPU).

--controller vgpud (the default): every cell is a fresh simulated node with its
own bin/vgpud, whose controller reads the simulated NVML through go-nvml as on a
real node; every tenant is
  bin/vgpuctl run --compute P --compute-policy cap -- build/test/throttle_load ...
The benchmark measures the tenants itself, from NVML's per-process utilization
per sample period (the simulator's default, 1/6 s as the real driver; device
queue: the simulator's default), and judges sliding 1 s windows.
Cells (--cells, comma-separated; --quick halves every timeline):
  alone-2us   one 30% tenant, 2 us per wave (node --ns-per-block 2000)
  alone-80us  one 30% tenant, 80 us per wave (--ns-per-block 80000)
  hetero      1-block kernels at 30% next to ~20 ms kernels at 60%
  churn       20% and 30%; a 50% tenant joins at 5 s; the 20% one is killed at 12 s
  retarget    one 30% tenant moved to 70% at 5 s and to 10% at 10 s with
              vgpuctl update (settle measured against each new target)
  eight       8 tenants at 12%
  sync-graph  launch-synchronize at 30% next to graph + synchronize at 60%
  mix         throttle_load mix (every launch path, 1 sync in 3) at 30% and 60%
Per tenant: achieved share over the steady part (from 1 s after each change),
the error of every window after settling (max, mean), the worst window after
its first second, the settle time after each change (start, join, leave, retarget: the
first instant from which every window until the next change is within ±2
points) and its share in its first second. The default run takes about 2
minutes.

--controller inproc: the earlier benchmark, an in-process enforcer.Controller
fed the simulator's launch-time busy counters (flags --groups, --workloads,
--window, --warmup, --tick, --step-log, --priority-floor; --out DIR writes
DIR/throttle-simgpu-inproc.json and .md):
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
  vgpud: steady error within ±2 points, every window after settling within ±3,
         settle <= 1 s after every change, first second <= 1.5 x the share
  inproc: every tenant of every cell within ±2 points of its target; the
         priority tenant next to a low-priority flood >= 95% of its alone throughput

Output: Markdown on stdout, or the JSON report with --json (progress on
stderr); --out DIR also writes DIR/throttle-simgpu.json and .md.

--driver real runs on the machine's GPU 0 instead (test/gpu/run.sh does).
With --controller vgpud (the default): the same steps (a real bin/vgpud per cell
on the machine's NVML, --nvml-lib; tenants under vgpuctl run; the benchmark's own
NVML reader) with build/test/throttle_real (--prog) calibrated alone for a short
(--short-kernel-ms, 0.2) and a long kernel (--long-kernel-ms, 20), synchronizing
every --sync-every launches; cells:
  alone-short  one 30% tenant, short kernels
  alone-long   one 30% tenant, long kernels
  hetero       short kernels at 30% next to long kernels at 60%
  churn        20% (short) and 30% (long); a 50% (short) tenant joins at 5 s;
               the 20% one is killed at 12 s
about 80 s in all; --out writes throttle-vgpud-real.json and .md.
With --controller inproc: one
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
	workloads, groups, stepLog, driver, controller, cells *string
	floor                                                 *uint
	quick                                                 *bool
	shortMs, longMs, scale                                *float64
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
	if *f.controller == bench.ControllerVgpud {
		return throttleVgpud(ctx, c, f, opts, ropts)
	}
	if *f.controller != bench.ControllerInproc {
		return c.fail(1, "--controller %q: want %s or %s", *f.controller, bench.ControllerVgpud, bench.ControllerInproc)
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
	f.controller = fs.String("controller", bench.ControllerVgpud,
		"vgpud (a real vgpud per cell) or inproc (an in-process controller)")
	f.cells = fs.String("cells", "", "vgpud: cells to run, comma-separated (default all: "+
		strings.Join(bench.VgpudCellNames(), ",")+"; real: "+strings.Join(bench.VgpudRealCellNames(), ",")+")")
	vd := bench.DefaultThrottleVgpudOptions()
	f.shortMs = fs.Float64("short-kernel-ms", vd.ShortKernelMs, "real, vgpud: device time of the short kernel")
	f.longMs = fs.Float64("long-kernel-ms", vd.LongKernelMs, "real, vgpud: device time of the long kernel")
	f.quick = fs.Bool("quick", false, "vgpud: halve every cell's timeline")
	f.scale = fs.Float64("scale", 0, "vgpud: stretch every cell's timeline by this factor, 0.2..10 (default 1; --quick 0.5)")
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
		return report, "throttle-simgpu-inproc", err
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

// throttleVgpud runs the vgpud mode: on simulated nodes, or on the machine's
// GPU 0 with --driver real (the real-GPU flags from ropts).
func throttleVgpud(ctx context.Context, c *benchCmd, f throttleFlags, opts bench.ThrottleOptions,
	ropts bench.ThrottleRealOptions,
) int {
	vo := bench.DefaultThrottleVgpudOptions()
	vo.Root, vo.SMs, vo.NsPerBlock, vo.KeepTemp = opts.Root, opts.SMs, opts.NsPerBlock, opts.KeepTemp
	vo.Driver, vo.Cells = *f.driver, splitList(*f.cells)
	vo.Prog, vo.NVMLLib, vo.Block, vo.SyncEvery = ropts.Prog, ropts.NVMLLib, ropts.Block, ropts.SyncEvery
	vo.ShortKernelMs, vo.LongKernelMs = *f.shortMs, *f.longMs
	if *f.quick {
		vo.Scale = 0.5
	}
	if *f.scale != 0 {
		vo.Scale = *f.scale
	}
	vo.Log = c.progress()
	report, err := bench.RunThrottleVgpud(ctx, vo)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	name := "throttle-simgpu"
	if vo.Driver == bench.DriverReal {
		name = "throttle-vgpud-real"
	}
	return c.emit(report, name)
}
