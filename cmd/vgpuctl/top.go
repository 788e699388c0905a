package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

const topHelp = `Usage:
  vgpuctl top [--watch [--interval D] [--count N]] [--json] [--socket PATH]

Shows every slice's memory as the enforcer loop last saw it: per slice device
the limit, what libvgpu charged (USED; contexts included), the peak and the
allocations refused, and its compute share: TARGET (the share asked; '-' for
none), ALLOWED (what vgpud's controller grants now: the target, the floor while
a higher-priority slice is active, more for a share-policy slice using idle
capacity; '-' when not throttled), ACHIEVED (what the slice's processes
used, as the driver measures it, averaged over about a second; '-' where the
driver cannot say) and POLICY (cap: never above the target; share: the target
is guaranteed and idle capacity may be used; '-' from an older vgpud); then every process with its pid, host pid, charged bytes
and what the driver reports for it (DRIVER; '-' where unknown: no NVML
per-process figure yet). A process libvgpu does not know (it bypassed it) is
listed with pid '-'.

--watch redraws every --interval (default 1s) until interrupted (Ctrl-C) or
--count refreshes are shown.

Flags:
`

func topCommand() *command {
	return &command{name: "top", run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl top", flag.ContinueOnError)
		socket := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON (sizes in bytes)")
		watch := fs.Bool("watch", false, "refresh until interrupted")
		interval := fs.Duration("interval", time.Second, "refresh period `D` with --watch")
		count := fs.Int("count", 0, "with --watch: stop after `N` refreshes (0: until interrupted)")
		if err := parseFlags(fs, topHelp, args, stdout); err != nil {
			return err
		}
		if *interval < 10*time.Millisecond {
			return usagef("--interval %s: want at least 10ms", *interval)
		}
		c := api.NewClient(*socket)
		defer c.Close()
		show := func(clear bool) error {
			ctx, cancel := callCtx()
			defer cancel()
			usage, err := c.Top(ctx)
			if err != nil {
				return apiError("top", err)
			}
			if *asJSON {
				return jsonOut(stdout, usage)
			}
			if clear {
				// Home the cursor and clear the screen, like watch(1).
				fmt.Fprintf(stdout, "\033[H\033[2J%s  vgpuctl top (every %s, Ctrl-C to stop)\n\n",
					time.Now().Format("15:04:05"), *interval)
			}
			if h, err := c.Health(ctx); err == nil && h.Tracker != "" {
				fmt.Fprintf(stdout, "process tracker: %s\n", h.Tracker)
			}
			return printTop(stdout, usage)
		}
		if !*watch {
			return show(false)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		t := time.NewTicker(*interval)
		defer t.Stop()
		for n := 1; ; n++ {
			if err := show(true); err != nil {
				return err
			}
			if *count > 0 && n >= *count {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}}
}

func printTop(w io.Writer, usage []api.SliceUsage) error {
	if len(usage) == 0 {
		_, err := fmt.Fprintln(w, "no slices")
		return err
	}
	sort.Slice(usage, func(i, j int) bool { return usage[i].Slice.ID < usage[j].Slice.ID })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLICE\tDEVICE\tLIMIT\tELASTIC\tUSED\tPEAK\tREFUSED\tTARGET\tALLOWED\tACHIEVED\tPOLICY\tPROCESSES\tSTATE")
	now := time.Now()
	for _, u := range usage {
		for d, sd := range u.Slice.Devices {
			target, allowed, achieved := computeColumns(sd, u.Compute, d)
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", u.Slice.ID, sd.Index,
				units.HumanSize(sd.LimitBytes()), elasticString(sd), units.HumanSize(at(u.UsedBytes, d)),
				units.HumanSize(at(u.PeakBytes, d)), at(u.Refused, d), target, allowed, achieved,
				dash(string(u.Slice.ComputePolicy)), len(u.Processes), activityColumn(u.Activity, d, now))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, u := range usage {
		if u.Slice.Tampered != "" {
			fmt.Fprintf(w, "slice %s: region tampered with: %s\n", u.Slice.ID, u.Slice.Tampered)
		}
	}
	procs := 0
	for _, u := range usage {
		procs += len(u.Processes)
	}
	if procs == 0 {
		_, err := fmt.Fprintln(w, "\nno processes")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLICE\tPID\tHOST PID\tDEVICE\tUSED\tDRIVER")
	for _, u := range usage {
		for _, p := range u.Processes {
			pid, host := "-", "-"
			if p.PID != 0 {
				pid = strconv.Itoa(p.PID)
			}
			if p.HostPID != 0 {
				host = strconv.Itoa(p.HostPID)
			}
			for d, sd := range u.Slice.Devices {
				driver := "-"
				if p.DriverBytes != nil {
					driver = units.HumanSize(at(p.DriverBytes, d))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", u.Slice.ID, pid, host, sd.Index,
					units.HumanSize(at(p.UsedBytes, d)), driver)
			}
		}
	}
	return tw.Flush()
}

// computeColumns renders a slice device's TARGET, ALLOWED and ACHIEVED. An
// older vgpud sends no compute figures: the target comes from the slice, the
// rest is "-".
func computeColumns(sd api.SliceDevice, compute []api.ComputeUsage, d int) (target, allowed, achieved string) {
	target, allowed, achieved = share(sd.ComputePercent), "-", "-"
	if d >= len(compute) {
		return target, allowed, achieved
	}
	c := compute[d]
	if c.AllowedPercent != 0 { // 0: not throttled, or not stepped by the controller yet
		allowed = onePlace(c.AllowedPercent)
	}
	if c.Measured {
		achieved = onePlace(c.AchievedPercent)
	}
	return target, allowed, achieved
}

// onePlace shows a measured or computed share: tenths of a point are all the
// precision it has.
func onePlace(p float64) string { return strconv.FormatFloat(p, 'f', 1, 64) + "%" }

// at returns v[i], or 0 when v is shorter (a report from an older vgpud).
func at(v []uint64, i int) uint64 {
	if i < len(v) {
		return v[i]
	}
	return 0
}

// activityColumn is a slice's activity state on device d: the state, how
// long, what it could lend there, and when an idle release is due
// ("empty 12s lend 3.0 GiB release in 18s"); "-" before vgpud's first tick
// with it.
func activityColumn(a *api.SliceActivity, d int, now time.Time) string {
	if a == nil {
		return "-"
	}
	out := fmt.Sprintf("%s %s", a.State, now.Sub(a.Since).Round(time.Second))
	if d < len(a.LendableBytes) && a.LendableBytes[d] > 0 {
		out += " lend " + units.HumanSize(a.LendableBytes[d])
	}
	if !a.ReleaseAt.IsZero() {
		out += " release in " + max(0, a.ReleaseAt.Sub(now)).Round(time.Second).String()
	}
	return out
}
