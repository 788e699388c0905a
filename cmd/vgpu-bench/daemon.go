package main

import (
	"context"
	"io"

	"github.com/vgpu-project/vgpu/bench"
	"github.com/vgpu-project/vgpu/internal/units"
)

const daemonHelp = `usage: vgpu-bench daemon [flags]

Measures vgpud's two costs:

  tick   enforcer.Loop.Tick over --slices slices, each with --procs-per-slice slots
         owned by live processes (sleeping children, one per slot) and the default
         1,024 slots per usage file, in report mode with a driver that lists every
         process. CPU per tick from CLOCK_THREAD_CPUTIME_ID on a locked thread;
         median and p99 over --ticks ticks after --warmup.
  alloc  --allocs sequential slice allocations (POST /v1/slices, --alloc-size each)
         through bin/vgpud's unix socket, vgpud running on a temporary simulated
         2-GPU node; slices released in batches of --alloc-batch (DELETE, timed too).

Goals (reported per row as met / NOT met; never asserted, the exit status is 0
whenever the benchmark ran):
  tick over 1,000 slices   p99 <= 5 ms of CPU
  alloc                    p99 <= 2 ms

Output: a Markdown report on stdout, or the JSON report with --json (progress goes to
stderr). --out DIR also writes DIR/daemon-simgpu.json and .md.

Flags:
`

func daemonBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultDaemonOptions()
	c := newBenchCmd("daemon", daemonHelp, "daemon-simgpu", stdout, stderr)
	fs := c.fs
	c.rootFlag(&opts.Root, "bin/ and build/")
	fs.IntVar(&opts.Slices, "slices", opts.Slices, "slices in the tick benchmark (0: skip it)")
	fs.IntVar(&opts.ProcsPerSlice, "procs-per-slice", opts.ProcsPerSlice, "live processes (slots) per slice")
	fs.IntVar(&opts.SlotsPerSlice, "slots", opts.SlotsPerSlice, "slots per usage file (0: the default, as vgpud creates them)")
	fs.IntVar(&opts.Ticks, "ticks", opts.Ticks, "timed ticks")
	fs.IntVar(&opts.Warmup, "warmup", opts.Warmup, "untimed ticks before timing (after the first tick)")
	fs.IntVar(&opts.Allocs, "allocs", opts.Allocs, "sequential allocations through vgpud (0: skip the alloc benchmark)")
	fs.IntVar(&opts.AllocBatch, "alloc-batch", opts.AllocBatch, "allocations held before they are released")
	allocSize := fs.String("alloc-size", units.FormatSize(opts.AllocBytes), "memory per allocated slice")
	fs.StringVar(&opts.Vgpud, "vgpud", "", "vgpud binary (default: ROOT/bin/vgpud)")
	fs.StringVar(&opts.TempDir, "tmp", "", "`DIR` for the temporary slices, node and vgpud state dir (default: the\n"+
		"system's temp dir); its filesystem decides what vgpud's fsyncs cost (try /dev/shm)")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary slices, node and state dir (path printed on stderr)")
	if status, ok := c.parse(args); !ok {
		return status
	}
	var err error
	if opts.AllocBytes, err = units.ParseSize(*allocSize); err != nil {
		return c.fail(2, "--alloc-size: %v", err)
	}
	opts.Log = c.progress()
	report, err := bench.RunDaemon(ctx, opts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	return c.emit(report, "daemon-simgpu")
}
