package main

import (
	"context"
	"io"

	"github.com/vgpu-project/vgpu/bench"
	"github.com/vgpu-project/vgpu/internal/units"
)

const elasticHelp = `usage: vgpu-bench elastic [flags]

Measures elastic memory the way users get it: a bin/vgpud (enforce mode, debug
JSON log) on a temporary simulated node, slices created through its API with a
ceiling (memory_max_bytes), tenants run with LD_PRELOAD=build/libvgpu.so in their
slice against the simulated driver.

  grant    for each of --concurrency N: N burstable slices (--base, ceiling --max),
           one build/test/elastic --step --alloc SIZE each; when all hold their
           context ("PHASE ready") they are released together (a line on each stdin)
           and allocate past their base, so each needs a grant. Sample: the wall
           time of that allocation call inside the tenant (refused by the budget,
           request posted, vgpud's grant, retry). --rounds rounds per N, fresh
           slices and processes each, after one warm-up round; a fresh node and
           vgpud per N, its device sized for every grant. Refused allocations are
           counted. The release comes --settle after the round's last slice was
           created (--fresh-row adds a row of 8 released as soon as ready, right after
           their slices were made). With --tmpfs-compare (default) the rows are taken again with
           vgpud's state dir on /dev/shm: the difference is what the durable record
           of each grant costs; the cost of one such record write (write, fsync,
           rename, fsync of the directory) on each filesystem is reported too.
  reclaim  --reclaims times, a fresh node (16 GiB): an empty guaranteed 12 GiB
           lender, a burstable borrower (2 GiB, ceiling 12 GiB) holding 9 GiB
           (build/test/torchlike), part of it borrowed from the lender; then a
           process of the lender takes its context (build/test/alloc --step).
           shrink = its "PHASE ready" read -> the borrower's budget limit lowered
           (polled every 100 us); evict = the same instant -> the borrower reaped.

Goals (reported per row as met / NOT met; never asserted, the exit status is 0
whenever the benchmark ran):
  grant, 8 at once    p99 <= 15 ms, none refused
  every grant row     none refused
  shrink, evict       reported (median, max)

Output: a Markdown report on stdout, or the JSON report with --json (progress goes to
stderr). --out (default bench/results, relative to the working directory) writes
elastic-simgpu.json and .md there; --out '' writes none.

Flags:
`

func elasticBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultElasticOptions()
	c := newBenchCmd("elastic", elasticHelp, "elastic-simgpu", stdout, stderr)
	fs := c.fs
	out := fs.Lookup("out")
	out.DefValue = "bench/results"
	_ = out.Value.Set(out.DefValue)
	c.rootFlag(&opts.Root, "bin/ and build/")
	conc := fs.String("concurrency", joinInts(opts.Concurrency), "slices asking at once, one grant row each,\n"+
		"comma-separated; empty: no grant rows")
	fs.IntVar(&opts.Rounds, "rounds", opts.Rounds, "grant rounds per concurrency (after one warm-up round)")
	quick := fs.Bool("quick", false, "a short run: 4 rounds, 2 reclaims, no tmpfs comparison\n"+
		"(--rounds, --reclaims, --tmpfs-compare given win)")
	base := fs.String("base", units.FormatSize(opts.Base), "each grant slice's memory (its context takes 256MiB of it)")
	maxMem := fs.String("max", units.FormatSize(opts.Max), "each grant slice's ceiling")
	alloc := fs.String("alloc", units.FormatSize(opts.Alloc), "what each grant tenant allocates after its context")
	fs.IntVar(&opts.Reclaims, "reclaims", opts.Reclaims, "shrink/evict repetitions (0: skip them)")
	fs.BoolVar(&opts.TmpfsCompare, "tmpfs-compare", opts.TmpfsCompare, "take the grant rows again with vgpud's state dir on /dev/shm")
	fs.StringVar(&opts.EnforcerInterval, "enforcer-interval", "", "vgpud's --enforcer-interval (default: vgpud's)")
	fs.DurationVar(&opts.Settle, "settle", 0, "least time from a round's last slice creation to the release\n"+
		"(default: 3 enforcer intervals)")
	fs.BoolVar(&opts.FreshRow, "fresh-row", opts.FreshRow, "add a row of 8 at once released as soon as ready (no settle:\n"+
		"requests in their slices' first tick, answered by the tick)")
	fs.StringVar(&opts.TempDir, "tmp", "", "`DIR` for the nodes and vgpud's state dirs (default: the system's temp\n"+
		"dir); its filesystem decides what vgpud's fsyncs cost")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary nodes and state dirs (path printed on stderr)")
	fs.DurationVar(&opts.StepTimeout, "step-timeout", opts.StepTimeout, "limit of every wait for a tenant's line or vgpud")
	if status, ok := c.parse(args); !ok {
		return status
	}
	var err error
	if opts.Concurrency, err = parseInts(*conc); err != nil {
		return c.fail(2, "--concurrency: %v", err)
	}
	for _, s := range []struct {
		name string
		v    string
		p    *uint64
	}{{"--base", *base, &opts.Base}, {"--max", *maxMem, &opts.Max}, {"--alloc", *alloc, &opts.Alloc}} {
		if *s.p, err = units.ParseSize(s.v); err != nil {
			return c.fail(2, "%s: %v", s.name, err)
		}
	}
	if err := c.quickPreset(*quick, "rounds", "4", "reclaims", "2", "tmpfs-compare", "false"); err != nil {
		return c.fail(2, "%v", err)
	}
	opts.Log = c.progress()
	report, err := bench.RunElastic(ctx, opts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	return c.emit(report, "elastic-simgpu")
}
