package main

// vgpuctl quarantine: the slices whose record vgpud could not load at start,
// held until an operator releases or restores them.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const quarantineHelp = `Usage:
  vgpuctl quarantine list [--json]
  vgpuctl quarantine release NAME|ID...
  vgpuctl quarantine restore NAME|ID...

When vgpud starts and a slice's record cannot be loaded (corrupt, of another
version, or values that make no valid slice), the slice is quarantined: its
files move to <state>/quarantine/<id>-<time>/, it is no longer enforced, but its
tenants may still be running, so vgpud keeps booking what it held until you
resolve it, and its id cannot be allocated meanwhile.

What is held comes from the slice's budget file, never from the bad record
(HOLDING "budget"). When the budget is unreadable too, what the slice holds is
unknown (HOLDING "unknown"): vgpud then holds all the guaranteed memory and
compute that was free on every device once the other slices were booked, so no
guaranteed slice fits anywhere until the unknown ones are released (burstable
and best-effort slices, which reserve nothing, still do).

Resolve each entry with:
  release  its tenants are gone (or may lose their guarantee): frees what it
           holds and removes its files
  restore  its tenants should keep it: rebuilds its record from its budget and
           makes it a live slice again, enforced, with the same booking. It
           has no owner any more: release it with 'vgpuctl release ID'. Only a
           slice of HOLDING "budget" can be restored.

Run 'vgpuctl quarantine <list|release|restore> --help' for details.
`

func quarantineCommand() *command {
	return &command{
		name:     "quarantine",
		help:     quarantineHelp,
		children: []*command{quarantineListCommand(), quarantineReleaseCommand(), quarantineRestoreCommand()},
	}
}

const quarantineListHelp = `Usage:
  vgpuctl quarantine list [--json] [--socket PATH]

Lists the quarantined slices: NAME (the entry; 'release' and 'restore' take it
or the slice's ID), the slice's ID, when it was quarantined (AGE) and why,
HOLDING (budget: what its budget file says; unknown: all guaranteed capacity that
was free, shared by every unknown slice), what is booked for it (DEVICES,
index:memory, and COMPUTE), and whether it can be restored. --json adds its
directory and why a holding is unknown.

Flags:
`

func quarantineListCommand() *command {
	return &command{name: "list", run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl quarantine list", flag.ContinueOnError)
		socket := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON (sizes in bytes)")
		if err := parseFlags(fs, quarantineListHelp, args, stdout); err != nil {
			return err
		}
		ctx, cancel := callCtx()
		defer cancel()
		qs, err := api.NewClient(*socket).Quarantine(ctx)
		if err != nil {
			return apiError("quarantine list", err)
		}
		if *asJSON {
			return jsonOut(stdout, qs)
		}
		if len(qs) == 0 {
			_, err := fmt.Fprintln(stdout, "no quarantined slices")
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tID\tHOLDING\tDEVICES\tCOMPUTE\tQOS\tRESTORABLE\tAGE\tREASON")
		now := time.Now()
		for _, q := range qs {
			sl := api.Slice{Devices: q.Devices}
			devs := sliceDevices(sl)
			if devs == "" {
				devs = "-"
			}
			restorable := "no"
			if q.Restorable {
				restorable = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", q.Name, q.ID, q.Holding, devs, sliceCompute(sl),
				q.QoS, restorable, age(now.Sub(q.QuarantinedAt)), oneLine(q.Reason))
		}
		return tw.Flush()
	}}
}

// oneLine keeps a reason on its table row.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

const quarantineReleaseHelp = `Usage:
  vgpuctl quarantine release NAME|ID... [--socket PATH]

Resolves quarantined slices by freeing them: what vgpud held for each returns to
the devices and its files are removed. Processes still running in it keep their
mapped files but are no longer counted, enforced or guaranteed anything. NAME is
the entry 'vgpuctl quarantine list' shows; the slice's ID will do when only one
entry has it.

Flags:
`

func quarantineReleaseCommand() *command {
	return &command{name: "release", run: func(args []string, stdout, _ io.Writer) error {
		return eachQuarantined("release", quarantineReleaseHelp, args, stdout,
			func(c *api.Client, name string) (string, error) {
				ctx, cancel := callCtx()
				defer cancel()
				if err := c.ReleaseQuarantined(ctx, name); err != nil {
					return "", err
				}
				return "released " + name, nil
			})
	}}
}

const quarantineRestoreHelp = `Usage:
  vgpuctl quarantine restore NAME|ID... [--socket PATH]

Resolves quarantined slices by making them live again: a record is rebuilt from
the slice's budget file (its devices, memory, compute share, QoS class and
priority), its files move back to <state>/slices/<id>/ and vgpud enforces it
again with the booking it kept; its running processes carry on. Prints
"<id> <dir>" for each. The restored slice has no owner (the budget does not say
who it was): release it with 'vgpuctl release ID' when its tenants are done.
A slice whose budget is unreadable (HOLDING unknown) cannot be restored:
release it.

Flags:
`

func quarantineRestoreCommand() *command {
	return &command{name: "restore", run: func(args []string, stdout, _ io.Writer) error {
		return eachQuarantined("restore", quarantineRestoreHelp, args, stdout,
			func(c *api.Client, name string) (string, error) {
				ctx, cancel := callCtx()
				defer cancel()
				s, err := c.RestoreQuarantined(ctx, name)
				if err != nil {
					return "", err
				}
				return s.ID + " " + s.Dir, nil
			})
	}}
}

// eachQuarantined parses a release/restore command line and runs do on every
// name, printing what each returns; it goes on past a failed one (stopping only
// when vgpud is down) and returns every error.
func eachQuarantined(verb, help string, args []string, stdout io.Writer,
	do func(c *api.Client, name string) (string, error)) error {
	fs := flag.NewFlagSet("vgpuctl quarantine "+verb, flag.ContinueOnError)
	socket := socketFlag(fs)
	names, err := parseWithArgs(fs, help, args, stdout)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return usagef("quarantine %s: which slice? (vgpuctl quarantine %s NAME; see vgpuctl quarantine list)", verb, verb)
	}
	c := api.NewClient(*socket)
	defer c.Close()
	var errs []error
	for _, name := range names {
		out, err := do(c, name)
		if err != nil {
			errs = append(errs, apiError("quarantine "+verb+" "+name, err))
			if errors.Is(err, api.ErrNotRunning) {
				break
			}
			continue
		}
		fmt.Fprintln(stdout, out)
	}
	return errors.Join(errs...)
}
