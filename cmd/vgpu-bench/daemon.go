package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/vgpu-project/vgpu/bench"
	"github.com/vgpu-project/vgpu/internal/units"
)

const daemonHelp = `usage: vgpu-bench daemon [flags]

Measures vgpud's two costs (issue 3):

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
	fs := flag.NewFlagSet("vgpu-bench daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print the JSON report on stdout instead of Markdown")
	out := fs.String("out", "", "also write the report to files: a directory DIR gets DIR/daemon-simgpu.json\n"+
		"and .md; a path ending in .json gets that file and the same name with .md")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	fs.StringVar(&opts.Root, "root", "", "repository root holding bin/ and build/ (default: found from the working\n"+
		"directory or the executable)")
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
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), daemonHelp)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "vgpu-bench daemon: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	var err error
	if opts.AllocBytes, err = units.ParseSize(*allocSize); err != nil {
		fmt.Fprintf(stderr, "vgpu-bench daemon: --alloc-size: %v\n", err)
		return 2
	}
	if !*quiet {
		opts.Log = stderr
	}
	report, err := bench.RunDaemon(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-bench daemon: %v\n", err)
		return 1
	}
	return emitReport("daemon", report, "daemon-simgpu", *out, *jsonOut, stdout, stderr)
}
