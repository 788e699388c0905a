package main

// vgpuctl events: the latest elastic-memory decisions of vgpud.

import (
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

const eventsHelp = `Usage:
  vgpuctl events [--json] [--socket PATH]

Lists vgpud's latest elastic-memory decisions (GET /v1/events, up to 256,
oldest first), each with who, how much and why:

  grant     a slice over its memory was granted more, up to its ceiling
            (--memory-max), from unreserved memory or lent by idle slices
  refuse    a request answered without a grant (above the ceiling, or not
            enough memory to grant)
  shrink    a grant taken back: a guaranteed slice needed the memory
  callback  a loan returned to its lender, which is in use again (or went)
  evict     a borrower over its limit handed to the backstop because the
            device was short of what its guaranteed slices are owed (enforce
            mode kills it, report mode reports it)

vgpud's log has the same lines ("elastic: ..."), and the metrics count them.

Flags:
`

func eventsCommand() *command {
	return &command{name: "events", help: eventsHelp, run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl events", flag.ContinueOnError)
		socket := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := parseFlags(fs, eventsHelp, args, stdout); err != nil {
			return err
		}
		ctx, cancel := callCtx()
		defer cancel()
		evs, err := api.NewClient(*socket).Events(ctx)
		if err != nil {
			return apiError("events", err)
		}
		if *asJSON {
			return jsonOut(stdout, evs)
		}
		return eventsTable(stdout, evs)
	}}
}

func eventsTable(w io.Writer, evs []api.ElasticEvent) error {
	if len(evs) == 0 {
		_, err := fmt.Fprintln(w, "no elastic-memory events")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tSLICE\tDEVICE\tBYTES\tLENDER\tWHY")
	for _, e := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("15:04:05.000"), e.Kind, e.Slice,
			e.Device, units.HumanSize(e.Bytes), dashIfEmpty(e.Lender), e.Why)
	}
	return tw.Flush()
}
