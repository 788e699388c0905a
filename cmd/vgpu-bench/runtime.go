package main

import (
	"context"
	"io"

	"github.com/vgpu-project/vgpu/bench"
)

const runtimeHelp = `usage: vgpu-bench runtime [flags]

Measures what vgpu-runtime adds to a container's creation: the wall time
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
	c := newBenchCmd("runtime", runtimeHelp, "runtime-simgpu", stdout, stderr)
	fs := c.fs
	c.rootFlag(&opts.Root, "bin/ and build/")
	fs.IntVar(&opts.Creates, "creates", opts.Creates, "timed creates per variant")
	fs.IntVar(&opts.Warmup, "warmup", opts.Warmup, "untimed creates per variant first")
	fs.StringVar(&opts.Runc, "runc", opts.Runc, "runc binary")
	fs.StringVar(&opts.TempDir, "tmp", "", "`DIR` for the bundle, node and vgpud state (default: the system's temp\n"+
		"dir); its filesystem decides what vgpud's fsyncs cost (try /dev/shm)")
	fs.BoolVar(&opts.KeepTemp, "keep", false, "keep the temporary files (path printed on stderr)")
	if status, ok := c.parse(args); !ok {
		return status
	}
	opts.Log = c.progress()
	report, err := bench.RunRuntime(ctx, opts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	return c.emit(report, "runtime-simgpu")
}
