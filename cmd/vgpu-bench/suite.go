package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vgpu-project/vgpu/bench"
)

const suiteHelp = `usage: vgpu-bench suite --out DIR [--driver sim|real] [--quick]

Runs every benchmark command of this vgpu-bench, one after the other, in this
process (the same code as 'vgpu-bench NAME --out DIR'): overhead, daemon, throttle,
runtime, tracker, elastic, and isolation and workload where this build has them.
Each writes DIR/<name>-<driver>.json and .md as on its own; then the suite draws
the plots of every report in DIR under DIR/plots (SVG and PNG, as 'vgpu-bench plot')
and writes DIR/index.md and DIR/index.html: headline figures, machine, driver,
commit and each goal met / not met.

tracker needs root (it loads BPF programs): skipped, and said so, otherwise. A
benchmark that fails is reported in the index and the suite goes on; the exit
status is 1 when one failed.

  --quick   a short run (under 3 minutes on the simulated node): each benchmark's
            --quick, or fewer rounds and samples. Figures are noisier.
  --only    comma-separated benchmarks to run (default: all)

Progress (which benchmark, how long it has run, the suite's time elapsed and an
estimate of what is left) goes to stderr, with each benchmark's own progress.

Flags:
`

// suiteBench is one benchmark the suite runs: its quick arguments and the
// seconds it roughly takes (full, quick) on the 2-core simulated node, for the
// estimate of time left.
type suiteBench struct {
	name        string
	quick       []string
	full, short float64
}

// suiteBenches in the order the suite runs them. Commands this build lacks are
// left out (see hasCommand): isolation and workload came later.
var suiteBenches = []suiteBench{
	{"overhead", []string{"--rounds", "2", "--init-rounds", "1", "--iters", "500"}, 10, 5},
	{"daemon", []string{"--slices", "200", "--ticks", "50", "--allocs", "200"}, 15, 5},
	{"throttle", []string{"--quick"}, 120, 65},
	{"runtime", []string{"--creates", "5", "--warmup", "1"}, 15, 5},
	{"tracker", []string{"--opens", "100", "--exits", "40", "--procfs-opens", "20", "--procfs-exits", "10",
		"--vgpud-opens", "50", "--rounds", "2", "--ops", "5000", "--forks", "100", "--procs", "500",
		"--holders", "50", "--cpu-window", "2s"}, 150, 40},
	{"elastic", []string{"--quick"}, 60, 10},
	{"isolation", nil, 210, 45},
	{"workload", nil, 20, 5},
}

// hasCommand: whether this vgpu-bench has the command (it is listed in the
// top-level usage).
func hasCommand(name string) bool {
	return strings.Contains(topUsage, "\n  "+name+" ")
}

// commandFlags is the command's --help text (its flags), for the suite to pass
// --quick and --driver only where the command has them.
func commandFlags(ctx context.Context, name string) string {
	var out, errb bytes.Buffer
	run(ctx, []string{name, "--help"}, &out, &errb)
	return out.String() + errb.String()
}

func hasFlag(help, flagName string) bool {
	return strings.Contains(help, "  -"+flagName+" ") || strings.Contains(help, "  -"+flagName+"\n") ||
		strings.Contains(help, "  --"+flagName+" ")
}

func suite(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vgpu-bench suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory for the reports, plots and index (required)")
	driver := fs.String("driver", bench.DriverSim, "sim (simulated nodes) or real (the machine's GPU), where a benchmark has --driver")
	quick := fs.Bool("quick", false, "a short run (under 3 minutes on the simulated node)")
	only := fs.String("only", "", "comma-separated benchmarks to run (default: all this build has)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), suiteHelp)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 || *out == "" {
		fmt.Fprintln(stderr, "vgpu-bench suite: --out DIR is required, and nothing else may follow the flags")
		return 2
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(stderr, "vgpu-bench suite: %v\n", err)
		return 1
	}
	r := &suiteRun{out: *out, driver: *driver, quick: *quick, stderr: stderr}
	todo, steps := r.selectBenches(splitList(*only))
	return r.runAll(ctx, todo, steps, stdout)
}

// suiteRun is one `vgpu-bench suite`: where it writes, what it passes on,
// and its progress (start, expected seconds left).
type suiteRun struct {
	out, driver string
	quick       bool
	stderr      io.Writer
	start       time.Time
	left        float64
}

// selectBenches is what the suite runs (only those named, when any are;
// those this build has), and a step for each it skips (tracker: not root).
func (r *suiteRun) selectBenches(only []string) ([]suiteBench, []bench.SuiteStep) {
	want := map[string]bool{}
	for _, n := range only {
		want[n] = true
	}
	var todo []suiteBench
	var steps []bench.SuiteStep
	for _, b := range suiteBenches {
		if (len(want) > 0 && !want[b.name]) || !hasCommand(b.name) {
			continue
		}
		if b.name == "tracker" && os.Geteuid() != 0 {
			fmt.Fprintln(r.stderr, "suite: skipping tracker: it needs root (BPF)")
			steps = append(steps, bench.SuiteStep{Benchmark: b.name, Skipped: "needs root to load its BPF programs"})
			continue
		}
		todo = append(todo, b)
	}
	return todo, steps
}

// expect is a benchmark's expected seconds in this run.
func (r *suiteRun) expect(b suiteBench) float64 {
	if r.quick {
		return b.short
	}
	return b.full
}

// runAll runs todo in turn (a failure is recorded, the rest still run),
// then writes the run's record, the plots and the index.
func (r *suiteRun) runAll(ctx context.Context, todo []suiteBench, steps []bench.SuiteStep, stdout io.Writer) int {
	for _, b := range todo {
		r.left += r.expect(b)
	}
	r.start = time.Now()
	commit := bench.PinCommit(ctx, "")
	loadStart := bench.LoadAverage()
	fmt.Fprintf(r.stderr, "suite: every report records commit %s (the tree's HEAD now); load average %s\n", commit, loadStart)
	failed := false
	for i, b := range todo {
		if ctx.Err() != nil {
			steps = append(steps, bench.SuiteStep{Benchmark: b.name, Skipped: "interrupted"})
			continue
		}
		st := r.runOne(ctx, b, i, len(todo))
		failed = failed || st.Err != ""
		steps = append(steps, st)
	}
	info := bench.IndexInfo{Steps: steps, Quick: r.quick, Driver: r.driver, Commit: commit,
		Started: r.start.UTC().Format(time.RFC3339), Seconds: math.Round(time.Since(r.start).Seconds()),
		LoadStart: loadStart, LoadEnd: bench.LoadAverage()}
	if err := bench.WriteSuiteRun(r.out, info); err != nil {
		fmt.Fprintf(r.stderr, "vgpu-bench suite: %v\n", err)
		return 1
	}
	plots, err := bench.PlotAndIndex(r.out, filepath.Join(r.out, "plots"), info)
	if err != nil {
		fmt.Fprintf(r.stderr, "vgpu-bench suite: plots and index: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "suite: %d benchmarks in %s; %d plots under %s; index: %s and %s\n", len(todo),
		fmtDur(time.Since(r.start).Seconds()), len(plots), filepath.Join(r.out, "plots"),
		filepath.Join(r.out, "index.md"), filepath.Join(r.out, "index.html"))
	if failed {
		return 1
	}
	return 0
}

// runOne runs benchmark b (the i-th of n) with the suite's --out, --driver
// and --quick where it has them, showing its progress.
func (r *suiteRun) runOne(ctx context.Context, b suiteBench, i, n int) bench.SuiteStep {
	help := commandFlags(ctx, b.name)
	a := []string{b.name, "--out", r.out}
	if hasFlag(help, "driver") {
		a = append(a, "--driver", r.driver)
	}
	if r.quick {
		if b.quick != nil {
			a = append(a, b.quick...)
		} else if hasFlag(help, "quick") {
			a = append(a, "--quick")
		}
	}
	fmt.Fprintf(r.stderr, "suite: [%d/%d] %s (expected ~%s; suite elapsed %s, ~%s left): vgpu-bench %s\n",
		i+1, n, b.name, fmtDur(r.expect(b)), fmtDur(time.Since(r.start).Seconds()), fmtDur(r.left),
		strings.Join(a, " "))
	t0 := time.Now()
	stop := suiteTicker(r.stderr, b.name, t0, r.start, r.expect(b), r.left)
	var errb strings.Builder
	code := run(ctx, a, io.Discard, io.MultiWriter(r.stderr, &tail{b: &errb}))
	stop()
	secs := time.Since(t0).Seconds()
	r.left = max(r.left-r.expect(b), 0)
	st := bench.SuiteStep{Benchmark: b.name, Seconds: secs}
	if code != 0 {
		st.Err = fmt.Sprintf("exit status %d: %s", code, lastLine(errb.String()))
		fmt.Fprintf(r.stderr, "suite: %s FAILED after %s (%s); going on\n", b.name, fmtDur(secs), st.Err)
	} else {
		fmt.Fprintf(r.stderr, "suite: %s done in %s\n", b.name, fmtDur(secs))
	}
	return st
}

// suiteTicker prints, every 20 s while a benchmark runs, how long it has run
// and what is left; the returned func stops it.
func suiteTicker(w io.Writer, name string, t0, start time.Time, expect, left float64) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(20 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				ran := time.Since(t0).Seconds()
				rest := left - ran
				if rest < left-expect {
					rest = left - expect
				}
				fmt.Fprintf(w, "suite: %s running %s (expected ~%s); suite elapsed %s, ~%s left\n", name,
					fmtDur(ran), fmtDur(expect), fmtDur(time.Since(start).Seconds()), fmtDur(rest))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func fmtDur(s float64) string {
	return (time.Duration(s) * time.Second).Round(time.Second).String()
}

// tail keeps the last few KiB written to it (a failed benchmark's message).
type tail struct{ b *strings.Builder }

func (t *tail) Write(p []byte) (int, error) {
	t.b.Write(p)
	if t.b.Len() > 8192 {
		s := t.b.String()
		t.b.Reset()
		t.b.WriteString(s[len(s)-4096:])
	}
	return len(p), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

const plotHelp = `usage: vgpu-bench plot [--in DIR] [--out DIR/plots]

Draws the plots of every report in --in (the *.json that vgpu-bench writes) as SVG
and PNG under --out, and writes --in/index.md and --in/index.html listing every
report (machine, driver, commit, goals met / not met, headline figures) with its
plots. The suite does the same after its benchmarks, and keeps its run's record
(steps, times, commit, load) in --in/suite-run.json, which the index keeps.

Flags:
`

func plotCmd(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vgpu-bench plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "bench/results", "directory of the reports")
	out := fs.String("out", "", "directory for the plots (default: --in/plots)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), plotHelp)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "vgpu-bench plot: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	if *out == "" {
		*out = filepath.Join(*in, "plots")
	}
	// The last suite run's record (if the suite wrote one here) stays in the
	// index: redrawing the plots must not drop which run the reports came from.
	info, _, err := bench.ReadSuiteRun(*in)
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-bench plot: %v\n", err)
		return 1
	}
	plots, err := bench.PlotAndIndex(*in, *out, info)
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-bench plot: %v\n", err)
		return 1
	}
	for _, p := range plots {
		fmt.Fprintf(stdout, "%s.svg %s.png  %s\n", filepath.Join(*out, p.Name), p.Name, p.Title)
	}
	fmt.Fprintf(stdout, "index: %s, %s\n", filepath.Join(*in, "index.md"), filepath.Join(*in, "index.html"))
	return 0
}
