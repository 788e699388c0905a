package main

import (
	"context"
	"io"

	"github.com/vgpu-project/vgpu/bench"
)

const trackerHelp = `usage: vgpu-bench tracker [flags]

Measures the process tracker (package tracker) through tracker.New, with the eBPF
programs (the default hook) and with the procfs scanner (Config.ForceProcfs), on a
stand-in character device made with mknod in a temp dir (cpuid 203:0 where that
driver is loaded, else null 1:3). Needs root (mknod, BPF); without BPF only the
procfs scanner is measured.

  latency   open: a fresh child (bash) stamps CLOCK_REALTIME right before it opens the
            node; the benchmark's subscriber stamps its receipt of the EventOpen.
            exit: SIGKILL of a process the tracker knows -> receipt of its EventExit.
            open -> vgpud: the same open, until GET /v1/processes of a bin/vgpud the
            benchmark starts (--tracker ebpf) lists the child, asked every 0.2 ms
            (--vgpud-opens samples; needs 'make build').
            median / p99 over --opens/--exits samples (eBPF), --procfs-opens/
            --procfs-exits (procfs, at --procfs-interval, random phase).
  syscalls  per open+close of an untracked file and of the tracked device, the CPU
            ns of the calling thread (the BPF programs run in it; the in-process
            tracker's reader and other load do not count), and per fork+exit+wait
            of a process, wall ns; with no tracker vs a fresh eBPF tracker,
            alternated ABBA --rounds times; rows whose rounds disagree are marked noisy.
  cpu       --procs sleeping processes (--holders of them holding the device open);
            the tracker's CPU (this process's CPU minus a window without a tracker)
            over --cpu-window, idle and with --churn processes/s opening the device.

Goals (reported per row as met / NOT met; never asserted, the exit status is 0
whenever the benchmark ran):
  open -> subscriber (eBPF)     p99 <= 10 ms
  open -> vgpud lists it        p99 <= 10 ms
  added per open                median <= 1000 ns (untracked file and tracked device)
  SIGKILL -> exit event         p99 <= 1000 ms (the tracker's part of "a dead
                                process's charge is returned within 1 s")
  CPU at 2,000 processes        eBPF below the procfs scanner, idle and with churn

Output: a Markdown report on stdout, or the JSON report with --json (progress goes to
stderr). --out DIR also writes DIR/tracker-<ebpf|procfs>.json and .md (the hook that
loaded).

Flags:
`

func trackerBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := bench.DefaultTrackerOptions()
	c := newBenchCmd("tracker", trackerHelp, "tracker-<ebpf|procfs>", stdout, stderr)
	fs := c.fs
	c.rootFlag(&opts.Root, "the sources (for the report's commit)")
	fs.IntVar(&opts.Opens, "opens", opts.Opens, "open latency samples, eBPF")
	fs.IntVar(&opts.Exits, "exits", opts.Exits, "exit latency samples, eBPF")
	fs.IntVar(&opts.VgpudOpens, "vgpud-opens", opts.VgpudOpens, "open -> vgpud lists it samples (starts bin/vgpud; 0: skip)")
	fs.IntVar(&opts.ProcfsOpens, "procfs-opens", opts.ProcfsOpens, "open latency samples, procfs")
	fs.IntVar(&opts.ProcfsExits, "procfs-exits", opts.ProcfsExits, "exit latency samples, procfs")
	fs.DurationVar(&opts.ProcfsInterval, "procfs-interval", 0, "procfs scan interval (default: the tracker's, 250ms)")
	fs.DurationVar(&opts.PollInterval, "poll", 0, "the eBPF tracker's ring-buffer poll period (default: the tracker's, 2ms)")
	fs.IntVar(&opts.Rounds, "rounds", opts.Rounds, "ABBA rounds of the syscall cost (0: skip it)")
	fs.IntVar(&opts.OpsPerPhase, "ops", opts.OpsPerPhase, "open+close pairs per file per phase")
	fs.IntVar(&opts.ForksPerPhase, "forks", opts.ForksPerPhase, "fork+exit+wait per phase")
	fs.IntVar(&opts.Procs, "procs", opts.Procs, "processes alive during the CPU windows (0: skip the CPU part)")
	fs.IntVar(&opts.Holders, "holders", opts.Holders, "of --procs, how many hold the device open")
	fs.DurationVar(&opts.CPUWindow, "cpu-window", opts.CPUWindow, "length of each CPU window")
	fs.IntVar(&opts.ChurnPerSec, "churn", opts.ChurnPerSec, "processes per second opening the device (and exiting)\n"+
		"in the churn windows (0: no churn windows)")
	fs.StringVar(&opts.TempDir, "tmp", "", "`DIR` for the stand-in device node (default: the system's temp dir)")
	if status, ok := c.parse(args); !ok {
		return status
	}
	opts.Log = c.progress()
	report, err := bench.RunTracker(ctx, opts)
	if err != nil {
		return c.fail(1, "%v", err)
	}
	return c.emit(report, "tracker-"+report.Hook)
}
