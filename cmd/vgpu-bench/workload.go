package main

import (
	"context"
	"flag"
	"io"
	"path/filepath"
	"strings"

	"github.com/vgpu-project/vgpu/bench"
)

const workloadHelp = `usage: vgpu-bench workload [flags]

End-to-end overhead of a realistic step: build/test/workload_step runs what a
training or inference step does through the driver API (a caching allocator's
blocks, one freed and allocated again every few steps; a host-to-device copy;
dozens of cuLaunchKernel; a cuGraphLaunch; a device-to-host copy; a stream
synchronize) on a temporary simulated node and prints each step's time. It is run
bare, under LD_PRELOAD=build/libvgpu.so in a slice with a memory cap only
(vgpu-mem), and in a slice with a compute share of 100 % (vgpu-share100: every
launch takes the token bucket, whose tokens never run out), every run in turn,
forward then backward (ABBA), --rounds times.

--compare NAME=/path/lib.so[,ENV=V...] (repeatable) adds another interception
library's runs (LD_PRELOAD=lib.so and the given environment) to the rotation; its
row reports its added cost and the ratio to vgpu-mem's.

Goal (reported as met / NOT met, never asserted): libvgpu adds <= 0.5 % to the
median step time.

Output: the Markdown report on stdout (or the JSON with --json); both are written
to --out (default bench/results: workload-simgpu.{json,md}; --out '' writes none).

Flags:
`

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

var _ flag.Value = (*stringList)(nil)

func workloadBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultWorkloadOptions()
	c := newBenchCmd("workload", workloadHelp, "workload-simgpu", stdout, stderr)
	fs := c.fs
	const defaultOut = "bench/results"
	*c.out = defaultOut
	fs.Lookup("out").DefValue = defaultOut
	c.rootFlag(&opts.Root, "build/")
	quick := fs.Bool("quick", false, "3 rounds of 100 steps (a quick look); --rounds/--steps given win")
	fs.IntVar(&opts.Rounds, "rounds", opts.Rounds, "alternations of every run")
	fs.IntVar(&opts.Steps, "steps", opts.Steps, "timed steps per run")
	fs.IntVar(&opts.Warmup, "warmup", opts.Warmup, "untimed steps per run first")
	fs.IntVar(&opts.Launches, "launches", opts.Launches, "cuLaunchKernel per step")
	fs.IntVar(&opts.Grid, "grid", opts.Grid, "blocks per kernel (132 SMs: 132 blocks = one wave)")
	fs.IntVar(&opts.GraphNodes, "graph-nodes", opts.GraphNodes, "kernel nodes of the graph launched once per step (0: none)")
	fs.Uint64Var(&opts.NsPerBlock, "ns-per-block", opts.NsPerBlock, "simulated device ns per wave of blocks")
	fs.DurationVar(&opts.RunTimeout, "run-timeout", opts.RunTimeout, "limit for each benchmark process")
	var peers stringList
	fs.Var(&peers, "compare", "NAME=/path/lib.so[,ENV=V...]: another interception library to run alongside (repeatable)")
	if status, ok := c.parse(args); !ok {
		return status
	}
	if err := c.quickPreset(*quick, "rounds", "3", "steps", "100"); err != nil {
		return c.fail(2, "%v", err)
	}
	var err error
	if opts.Peers, err = bench.ParsePeers(peers); err != nil {
		return c.fail(2, "%v", err)
	}
	if *c.out == defaultOut {
		root := opts.Root
		if root == "" {
			if root, err = bench.FindRoot(); err != nil {
				return c.fail(1, "%v", err)
			}
		}
		*c.out = filepath.Join(root, defaultOut)
	}
	opts.Log = c.progress()
	report, err := bench.RunWorkload(ctx, opts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	return c.emit(report, "workload-simgpu")
}

// overheadCompare is `vgpu-bench overhead --compare`: the overhead report and
// the peers' per-call rows, written as overhead-compare-<simgpu|real>.
func overheadCompare(ctx context.Context, c *benchCmd, opts bench.OverheadOptions, specs []string) int {
	peers, err := bench.ParsePeers(specs)
	if err != nil {
		return c.fail(2, "%v", err)
	}
	report, err := bench.RunOverheadCompare(ctx, opts, peers)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	name := "overhead-compare-real"
	if report.Machine.Driver == "simgpu" {
		name = "overhead-compare-simgpu"
	}
	return c.emit(report, name)
}
