// Command vgpu-bench runs vgpu's benchmarks and writes their figures as JSON and
// Markdown (DESIGN §8: figures come from bench/, never from timed unit tests).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vgpu-project/vgpu/bench"
)

const topUsage = `usage: vgpu-bench COMMAND [flags]

Commands:
  overhead   what libvgpu adds to driver calls and to process start-up
  daemon     vgpud: enforcer tick CPU over 1,000 slices, slice allocation latency
  throttle   compute shares through vgpud: target vs achieved, 1 s windows, settle (simulated node)
  runtime    vgpu-runtime: what it adds to a container's creation, vs plain runc
  tracker    the process tracker: open/exit event latency, cost per syscall, CPU (eBPF vs procfs)
  elastic    elastic memory through vgpud: grant latency (1/8/32 at once), shrink and eviction latency
  isolation  noisy neighbours: a victim's throughput and p50/p99 step time next to aggressors, vgpu vs bare
  suite      every benchmark command in turn, then plots and DIR/index.md, index.html (--out DIR, --quick)
  plot       plots (SVG, PNG) and index.md/index.html from existing reports (--in bench/results)
  workload   a training/inference step end to end: step time bare vs libvgpu (and --compare peers)

Run 'vgpu-bench COMMAND --help' for its flags.
`

func main() {
	if bench.SamplerRequested() { // the throttle benchmark's NVML reader (bench/throttle_sampler.go)
		os.Exit(bench.SamplerMain(os.Stdin, os.Stdout))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	switch args[0] {
	case "overhead":
		return overhead(ctx, args[1:], stdout, stderr)
	case "daemon":
		return daemonBench(ctx, args[1:], stdout, stderr)
	case "throttle":
		return throttle(ctx, args[1:], stdout, stderr)
	case "runtime":
		return runtimeBench(ctx, args[1:], stdout, stderr)
	case "tracker":
		return trackerBench(ctx, args[1:], stdout, stderr)
	case "elastic":
		return elasticBench(ctx, args[1:], stdout, stderr)
	case "isolation":
		return isolationBench(ctx, args[1:], stdout, stderr)
	case "workload":
		return workloadBench(ctx, args[1:], stdout, stderr)
	case "suite":
		return suite(ctx, args[1:], stdout, stderr)
	case "plot":
		return plotCmd(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, topUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "vgpu-bench: unknown command %q\n\n%s", args[0], topUsage)
		return 2
	}
}

const overheadHelp = `usage: vgpu-bench overhead [flags]

Measures the nanoseconds libvgpu adds to a driver call, and the milliseconds it adds
to a process's CUDA start-up, by running build/test/bench_overhead bare and with
LD_PRELOAD=build/libvgpu.so, alternating the two (ABBA) --rounds times so that drift
of the machine cancels out.

  --driver sim   (default) creates a temporary simulated node (package test/simgpu,
                 --ns-per-block tiny so a launch never waits for the device) and runs
                 against build/simgpu/libcuda.so.1.
  --driver real  uses the system's libcuda.so.1 and GPU (no LD_LIBRARY_PATH change);
                 needs no simulator. For test/gpu/run.sh.
Either way the libvgpu runs use a temporary slice (VGPU_SLICE_DIR, VGPU_FAIL_MODE=refuse)
on --device with a 1 TiB limit, so admission always succeeds and only its cost counts.

Measured:
  per call (ns, median and p99 of per-batch means, 1 and 2 threads started together):
    cuLaunchKernel (empty kernel, 1 block, own stream), cuMemAlloc_v2+cuMemFree_v2 of
    1 MiB (one pair = one call), cuMemGetInfo_v2.
  init (ms per process; 1, 8 and 32 processes sleeping until one common instant):
    cuInit + cuDeviceGet + cuDevicePrimaryCtxRetain + cuCtxSetCurrent + the first
    cuMemAlloc/cuMemFree (where libvgpu attaches to its slice); "load" is spawn to
    main() (dynamic loading and library constructors), reported beside it.

Goals (reported per row as met / NOT met; never asserted, the exit status is 0
whenever the benchmark ran):
  cuLaunchKernel           added median <= 15 ns per call
  cuMemAlloc+cuMemFree     added median <= 60 ns per pair
  cuMemGetInfo             no goal (reported)
  init                     added median <= 2 ms per process at every process count
  init growth              added median at the most processes minus at the fewest
                           <= 1 ms ("no growth from 1 to 32", with a noise tolerance)

Output: a Markdown report on stdout, or the JSON report with --json (progress goes to
stderr). The JSON holds the machine (hostname, CPU model, cores, kernel, Go version,
driver "simgpu" or the NVIDIA driver version, CUDA driver API version, GPU, date,
commit), the configuration and every row.

Flags:
`

func overhead(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultOverheadOptions(bench.DriverSim)
	c := newBenchCmd("overhead", overheadHelp, "overhead-<simgpu|real>", stdout, stderr)
	fs := c.fs
	fs.StringVar(&opts.Driver, "driver", opts.Driver, "sim (the simulated node) or real (the system's libcuda and GPU)")
	c.rootFlag(&opts.Root, "build/ and bin/")
	fs.IntVar(&opts.Iters, "iters", opts.Iters, "timed batches per thread per run")
	fs.IntVar(&opts.Batch, "batch", opts.Batch, "calls per timed batch (amortises the cost of reading the clock)")
	fs.IntVar(&opts.Warmup, "warmup", opts.Warmup, "untimed batches per thread before timing")
	fs.IntVar(&opts.Rounds, "rounds", opts.Rounds, "bare/libvgpu alternations per call configuration")
	fs.IntVar(&opts.InitRounds, "init-rounds", opts.InitRounds, "bare/libvgpu alternations per init process count")
	fs.IntVar(&opts.Device, "device", opts.Device, "CUDA ordinal to measure")
	fs.BoolVar(&opts.Pin, "pin", opts.Pin, "pin benchmark thread i to CPU i (best effort)")
	fs.Uint64Var(&opts.NsPerBlock, "ns-per-block", opts.NsPerBlock, "sim only: device ns per block of a launch")
	fs.DurationVar(&opts.RunTimeout, "run-timeout", opts.RunTimeout, "limit for each benchmark process")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary node and slice (path printed on stderr)")
	fs.BoolVar(&opts.Throttled, "throttled", false, "give the slice a compute share whose tokens never run out:\n"+
		"launches take the token bucket's hot path and its completion markers")
	fs.StringVar(&opts.Lib, "lib", "", "the library to preload (default build/libvgpu.so), e.g. an older build")
	ops := fs.String("ops", strings.Join(opts.Ops, ","), "calls to measure, comma-separated (launch, alloc, getinfo);\n"+
		"empty: none")
	threads := fs.String("threads", joinInts(opts.Threads), "thread counts, comma-separated")
	procs := fs.String("procs", joinInts(opts.InitProcs), "init process counts, comma-separated; empty: no init benchmark")
	var peers stringList
	fs.Var(&peers, "compare", "NAME=/path/lib.so[,ENV=V...]: also compare the per-call figures with another\n"+
		"interception library, run in turn with bare and libvgpu (repeatable)")
	if status, ok := c.parse(args); !ok {
		return status
	}
	var err error
	opts.Ops = splitList(*ops)
	if opts.Threads, err = parseInts(*threads); err != nil {
		return c.fail(2, "--threads: %v", err)
	}
	if opts.InitProcs, err = parseInts(*procs); err != nil {
		return c.fail(2, "--procs: %v", err)
	}
	opts.Log = c.progress()
	if len(peers) > 0 {
		return overheadCompare(ctx, c, opts, peers)
	}

	report, err := bench.RunOverhead(ctx, opts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	name := "overhead-real"
	if report.Machine.Driver == "simgpu" {
		name = "overhead-simgpu"
	}
	return c.emit(report, name)
}

// markdowner is every benchmark report: JSON-encodable, with a Markdown form.
type markdowner interface{ Markdown() string }

// emitReport encodes a finished benchmark's report as JSON and Markdown, writes
// both under out when it is set (see writeReport), and prints the Markdown, or
// the JSON with --json. It returns the command's exit status.
func emitReport(cmd string, report markdowner, name, out string, jsonOut bool, stdout, stderr io.Writer) int {
	js, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-bench %s: encoding the report: %v\n", cmd, err)
		return 1
	}
	js = append(js, '\n')
	md := report.Markdown()
	if out != "" {
		if err := writeReport(out, name, js, md); err != nil {
			fmt.Fprintf(stderr, "vgpu-bench %s: %v\n", cmd, err)
			return 1
		}
	}
	if jsonOut {
		_, err = stdout.Write(js)
	} else {
		_, err = io.WriteString(stdout, md)
	}
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-bench %s: writing the report: %v\n", cmd, err)
		return 1
	}
	return 0
}

// writeReport writes out/<name>.json and out/<name>.md, or, for an out ending
// in .json, that file and the same path with .md (see --out).
func writeReport(out, name string, js []byte, md string) error {
	jsonPath := out
	if !strings.HasSuffix(out, ".json") {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		jsonPath = filepath.Join(out, name+".json")
	} else if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	mdPath := strings.TrimSuffix(jsonPath, ".json") + ".md"
	if err := os.WriteFile(jsonPath, js, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", jsonPath, err)
	}
	if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", mdPath, err)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ",")
}
