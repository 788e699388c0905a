package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/vgpu-project/vgpu/bench"
)

const runtimeHelp = `usage: vgpu-bench runtime [flags]

Measures what vgpu-runtime adds to a container's creation (issue 4): the wall time
of "create --bundle B ID" of one prepared bundle (a tiny rootfs, runc's default
spec) through plain runc, through bin/vgpu-runtime for a container without a
request (it exec()s runc) and with vgpu.io/memory=1GiB (it asks a real bin/vgpud on
a temporary simulated node for the slice, edits config.json, runs runc). The three
variants are interleaved, --creates timed creates each after --warmup; every
container is deleted (untimed; the poststop hook releases the slice) before the
next. Needs root and runc (Debian: apt-get install runc).

Goal (reported as met / NOT met; never asserted, the exit status is 0 whenever the
benchmark ran): added median <= 20 ms.

Output: a Markdown report on stdout, or the JSON report with --json (progress goes to
stderr). --out DIR also writes DIR/runtime-simgpu.json and .md.

Flags:
`

func runtimeBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultRuntimeOptions()
	fs := flag.NewFlagSet("vgpu-bench runtime", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print the JSON report on stdout instead of Markdown")
	out := fs.String("out", "", "also write the report to files: a directory DIR gets DIR/runtime-simgpu.json\n"+
		"and .md; a path ending in .json gets that file and the same name with .md")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	fs.StringVar(&opts.Root, "root", "", "repository root holding bin/ and build/ (default: found from the working\n"+
		"directory or the executable)")
	fs.IntVar(&opts.Creates, "creates", opts.Creates, "timed creates per variant")
	fs.IntVar(&opts.Warmup, "warmup", opts.Warmup, "untimed creates per variant first")
	fs.StringVar(&opts.Runc, "runc", opts.Runc, "runc binary")
	fs.StringVar(&opts.TempDir, "tmp", "", "`DIR` for the bundle, node and vgpud state (default: the system's temp\n"+
		"dir); its filesystem decides what vgpud's fsyncs cost (try /dev/shm)")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary files (path printed on stderr)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), runtimeHelp)
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
		fmt.Fprintf(stderr, "vgpu-bench runtime: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	if !*quiet {
		opts.Log = stderr
	}
	report, err := bench.RunRuntime(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-bench runtime: %v\n", err)
		return 1
	}
	return emitReport("runtime", report, "runtime-simgpu", *out, *jsonOut, stdout, stderr)
}
