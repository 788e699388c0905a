package main

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/vgpu-project/vgpu/bench"
)

const isolationHelp = `usage: vgpu-bench isolation [flags]

Noisy-neighbour isolation on a simulated node: a victim next to 0, 1 and 3
aggressors, with vgpu and bare, relative to the victim alone.

  victims     latency: a short kernel (--latency-waves waves) and a synchronize per
              step, like inference: steps/s, p50 and p99 step time (launch to the
              end of the synchronize); throughput: kernels (--flood-waves waves)
              launched back to back, like training: kernels/s
  aggressors  flood: kernels launched back to back; churn (--churn, on by default): a
              64 MiB cuMemAlloc + cuMemFree and a launch per step, at every nonzero
              count of --aggressors (the alone row is shared)
  configs     vgpu: a real bin/vgpud on a fresh simulated node per row; every tenant
              is 'bin/vgpuctl run --compute P --compute-policy cap -- build/test/isolation_load',
              the victim at --victim-share, the aggressors sharing the rest equally;
              bare: the same processes without libvgpu
  --compare   NAME=/path/lib.so[,ENV=V...] (repeatable): another LD_PRELOAD interception
              library; the bare rows are run again with every tenant under
              LD_PRELOAD=<lib> and ENV (a configuration named NAME, checked mapped into
              each tenant), reported beside vgpu's and bare's with the same relative figures

The simulated GPU runs kernels on one FIFO timeline per device (no time-slicing
between contexts; a launch blocks while the queue is over 1 s ahead), so the
figures show what vgpu's launch throttle does to the queue, not a real GPU's
scheduler.

Goals (reported per vgpu row with aggressors as met / NOT met; never asserted):
  throughput  >= 0.90 x alone
  p99         <= 2.0 x alone (latency victim)

Output: a Markdown report on stdout, or the JSON report with --json (progress goes
to stderr). --out (default bench/results) writes isolation-simgpu.json and .md;
--out '' writes none.

Flags:
`

func isolationBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultIsolationOptions()
	c := newBenchCmd("isolation", isolationHelp, "isolation-simgpu", stdout, stderr)
	fs := c.fs
	out := fs.Lookup("out")
	out.DefValue = "bench/results"
	_ = out.Value.Set(out.DefValue)
	c.rootFlag(&opts.Root, "bin/ and build/")
	victims := fs.String("victims", strings.Join(opts.Victims, ","), "victim kinds, comma-separated (latency, throughput)")
	aggr := fs.String("aggressors", joinInts(opts.Aggressors), "aggressor counts, comma-separated (0 = alone, the reference)")
	configs := fs.String("configs", strings.Join(opts.Configs, ","), "configurations, comma-separated (vgpu, bare)")
	fs.BoolVar(&opts.Churn, "churn", opts.Churn, "also run every nonzero aggressor count with allocation-churn aggressors")
	fs.DurationVar(&opts.Warmup, "warmup", opts.Warmup, "victim time not counted")
	fs.DurationVar(&opts.Measure, "measure", opts.Measure, "victim time counted")
	fs.Float64Var(&opts.VictimSharePct, "victim-share", opts.VictimSharePct, "the victim's compute share with vgpu (%)")
	fs.IntVar(&opts.SMs, "sms", opts.SMs, "SMs of the simulated device")
	fs.Uint64Var(&opts.NsPerBlock, "ns-per-block", opts.NsPerBlock, "device ns per wave of blocks")
	fs.IntVar(&opts.LatencyWaves, "latency-waves", opts.LatencyWaves, "waves of the latency victim's kernel")
	fs.IntVar(&opts.FloodWaves, "flood-waves", opts.FloodWaves, "waves of the throughput victim's and aggressors' kernels")
	quick := fs.Bool("quick", false, "a short run (under a minute): 0.5 s warm-up, 1 s counted, unless --warmup/--measure are given")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary nodes (path printed on stderr)")
	var peers stringList
	fs.Var(&peers, "compare", "NAME=/path/lib.so[,ENV=V...]: another interception library; the bare rows again under it (repeatable)")
	if status, ok := c.parse(args); !ok {
		return status
	}
	var err error
	opts.Victims, opts.Configs = splitList(*victims), splitList(*configs)
	if opts.Aggressors, err = parseInts(*aggr); err != nil {
		return c.fail(2, "--aggressors: %v", err)
	}
	if opts.Peers, err = bench.ParsePeers(peers); err != nil {
		return c.fail(2, "%v", err)
	}
	q := bench.DefaultIsolationOptions()
	bench.QuickIsolation(&q)
	if err := c.quickPreset(*quick, "warmup", q.Warmup.String(), "measure", q.Measure.String()); err != nil {
		return c.fail(2, "%v", err)
	}
	opts.Log = c.progress()
	report, err := bench.RunIsolation(ctx, opts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	report.Commands = []string{bench.CommandLine(append([]string{"bin/vgpu-bench"}, os.Args[1:]...))}
	return c.emit(report, "isolation-simgpu")
}
