package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vgpu-project/vgpu/bench"
)

const throttleHelp = `usage: vgpu-bench throttle [flags]

Measures how closely the launch throttle holds compute shares (issue 5), on
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

func throttle(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultThrottleOptions()
	fs := flag.NewFlagSet("vgpu-bench throttle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print the JSON report on stdout instead of Markdown")
	out := fs.String("out", "", "also write the report to files: a directory DIR gets DIR/throttle-simgpu.json\n"+
		"and .md; a path ending in .json gets that file and the same name with .md")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	fs.StringVar(&opts.Root, "root", "", "repository root holding build/ (default: found from the working\n"+
		"directory or the executable)")
	workloads := fs.String("workloads", strings.Join(opts.Workloads, ","), "workloads of the target cells, comma-separated")
	groups := fs.String("groups", strings.Join(opts.Groups, ","), "parts to run, comma-separated")
	fs.DurationVar(&opts.Window, "window", opts.Window, "measured window of each cell")
	fs.DurationVar(&opts.Warmup, "warmup", opts.Warmup, "time before the window (the controller learns the scale)")
	fs.DurationVar(&opts.Tick, "tick", opts.Tick, "controller step")
	fs.IntVar(&opts.SMs, "sms", opts.SMs, "SMs of the simulated device")
	fs.Uint64Var(&opts.NsPerBlock, "ns-per-block", opts.NsPerBlock, "simulated device ns per wave of blocks")
	floor := fs.Uint("priority-floor", uint(opts.PriorityFloorBP), "floor of the low-priority tenant, basis points")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary nodes and slices (path printed on stderr)")
	stepLog := fs.String("step-log", "", "write every controller step (inputs and outputs per tenant) to `FILE`")
	driver := fs.String("driver", bench.DriverSim, "sim (simulated nodes) or real (the machine's GPU 0)")
	ropts := bench.DefaultThrottleRealOptions()
	fs.StringVar(&ropts.Prog, "prog", "", "real: the throttle_real binary (default build/test/throttle_real)")
	fs.IntVar(&ropts.Waves, "waves", ropts.Waves, "real: blocks per SM of a kernel's grid")
	fs.IntVar(&ropts.Block, "block", ropts.Block, "real: threads per block")
	fs.Float64Var(&ropts.KernelMs, "kernel-ms", ropts.KernelMs, "real: device time of one kernel to calibrate for")
	fs.IntVar(&ropts.SyncEvery, "sync-every", ropts.SyncEvery, "real: kernels queued between synchronizations")
	fs.IntVar(&ropts.Nodes, "nodes", ropts.Nodes, "real: kernel nodes of the graph workload")
	fs.StringVar(&ropts.Measure, "measure", ropts.Measure, "real: achieved shares from auto, nvml or self")
	fs.StringVar(&ropts.NVMLLib, "nvml-lib", "", "real: the NVML library (default libnvidia-ml.so.1 through the loader)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), throttleHelp)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vgpu-bench throttle: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	opts.Workloads = splitList(*workloads)
	opts.Groups = splitList(*groups)
	opts.PriorityFloorBP = uint32(*floor)
	if !*quiet {
		opts.Log = stderr
	}
	if *stepLog != "" {
		f, err := os.Create(*stepLog)
		if err != nil {
			fmt.Fprintf(stderr, "vgpu-bench throttle: %v\n", err)
			return 1
		}
		defer f.Close()
		w := bufio.NewWriter(f)
		defer w.Flush()
		opts.StepLog = w
	}
	var report *bench.ThrottleReport
	var err error
	name := "throttle-simgpu"
	switch *driver {
	case bench.DriverSim:
		report, err = bench.RunThrottle(ctx, opts)
	case bench.DriverReal:
		name = "throttle-real"
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
		report, err = bench.RunThrottleReal(ctx, ropts)
	default:
		err = fmt.Errorf("--driver %q: want %s or %s", *driver, bench.DriverSim, bench.DriverReal)
	}
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-bench throttle: %v\n", err)
		return 1
	}
	return emitReport("throttle", report, name, *out, *jsonOut, stdout, stderr)
}
