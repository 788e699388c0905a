package main

// vgpuctl ps: the processes vgpud's tracker knows to hold a GPU device.

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const psHelp = `Usage:
  vgpuctl ps [--json] [--socket PATH]

Lists the processes vgpud's process tracker knows to hold a GPU device open
(GET /v1/processes), from the kernel (tracker ebpf) or a procfs scan (procfs):

  PID        host pid
  NSPID      its pid in its own innermost pid namespace (what the process
             itself, e.g. in a container, sees as its pid)
  PIDNS      that pid namespace's inode (readlink /proc/PID/ns/pid)
  START      start time, clock ticks since boot (/proc/PID/stat field 22)
  CGROUP     cgroup v2 path (and, with --json, its id)
  CONTAINER  the container id in that path, first 12 characters ("-": none)
  DEVICES    the device numbers it holds, major:minor

With the tracker off (vgpud --tracker off) the list is empty. --json prints the
API's answer as is: the tracker kind and every process with its full
container id and cgroup id.

Flags:
`

func psCommand() *command {
	return &command{name: "ps", help: psHelp, run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl ps", flag.ContinueOnError)
		socket := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := parseFlags(fs, psHelp, args, stdout); err != nil {
			return err
		}
		ctx, cancel := callCtx()
		defer cancel()
		ps, err := api.NewClient(*socket).Processes(ctx)
		if err != nil {
			return apiError("ps", err)
		}
		if *asJSON {
			return jsonOut(stdout, ps)
		}
		return psTable(stdout, ps)
	}}
}

func psTable(w io.Writer, ps api.Processes) error {
	if len(ps.Processes) == 0 {
		_, err := fmt.Fprintf(w, "no processes hold a GPU device (tracker %s)\n", ps.Tracker)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tNSPID\tPIDNS\tSTART\tCGROUP\tCONTAINER\tDEVICES")
	for _, p := range ps.Processes {
		container := p.ContainerID
		if container == "" {
			container = "-"
		}
		container = container[:min(12, len(container))]
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", p.PID, orDash(p.NSPID), orDash(p.PIDNamespace),
			p.StartTime, dashIfEmpty(p.CgroupPath), container, strings.Join(p.Devices, ","))
	}
	return tw.Flush()
}

// orDash prints 0 (unknown) as "-".
func orDash[T int | uint64](v T) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(v), 10)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
