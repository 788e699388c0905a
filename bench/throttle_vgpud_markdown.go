package bench

import (
	"fmt"
	"strings"
)

// Markdown renders the vgpud-mode report.
func (r *ThrottleVgpudReport) Markdown() string {
	var b strings.Builder
	m, c := r.Machine, r.Config
	real := c.Driver == DriverReal
	if real {
		fmt.Fprintf(&b, "# vgpu throttle benchmark: %s, through vgpud\n\n", orDash(m.GPU))
	} else {
		b.WriteString("# vgpu throttle benchmark: simulated node, through vgpud\n\n")
	}
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", m.GoVersion, m.Date, orDash(m.Commit))
	load := "throttle_load"
	if real {
		load = "throttle_real kernel"
	}
	fmt.Fprintf(&b, "- controller: a real bin/vgpud per cell (NVML per-process utilization through go-nvml, "+
		"its default enforcer interval); tenants: `vgpuctl run --compute P --compute-policy cap -- %s ...`\n", load)
	if real {
		fmt.Fprintf(&b, "- GPU 0: %s, driver %s, %d SMs; figures cut into %.1f ms periods\n", orDash(m.GPU), m.Driver,
			c.SMs, float64(c.SamplePeriodNs)/1e6)
		for _, name := range []string{KernelShort, KernelLong} {
			k := c.Kernels[name]
			fmt.Fprintf(&b, "- %s kernel: %.3f ms alone (calibrated for %g ms: %d iterations, grid %d x %d)\n",
				name, float64(k.KernelNs)/1e6, k.TargetMs, k.Iters, k.Grid, k.Block)
		}
	} else {
		fmt.Fprintf(&b, "- node: %d SMs, NVML sample period %.1f ms, device queue %.0f ms (the simulator's defaults); "+
			"%d ns per wave unless the cell says\n", c.SMs, float64(c.SamplePeriodNs)/1e6, float64(c.DeviceQueueNs)/1e6,
			c.NsPerBlock)
	}
	fmt.Fprintf(&b, "- measured by the benchmark itself from NVML per-process utilization per sample period; "+
		"%.0f s windows sliding by one period; steady = from %.0f s after each change; settle band ±%.0f points; "+
		"timeline scale %.2g\n\n", c.WindowS, c.AllowanceS, c.TolerancePts, c.Scale)
	fmt.Fprintf(&b, "Goals per row: steady |error| ≤ %.0f, every window after settling ≤ %.0f, settle ≤ %.0f s "+
		"after every change, first second ≤ %.1f × share.\n\n", c.GoalSteadyErrPts, c.GoalWindowErrPts,
		c.GoalSettleS, c.GoalFirstSecondRatio)
	b.WriteString("| cell | tenant | target % | achieved % | steady err | window err max / mean | " +
		"worst window (at s) | settle s (change @ s) | first second % | result |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---|---:|---|\n")
	for _, cell := range r.Cells {
		for _, t := range cell.Tenants {
			fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %+.2f | %+.2f / %.2f | %+.2f (%.1f) | %s | %.1f | %s |\n",
				cell.Name, t.Name, targetText(t), t.AchievedPct, t.SteadyErrPts, t.WindowMaxErrPts, t.WindowMeanErrPts,
				t.WorstWindowErrPts, t.WorstWindowAtS, settleText(t.Settles), t.FirstSecondPct, goalsText(t))
		}
	}
	b.WriteString("\nCells:\n\n")
	for _, cell := range r.Cells {
		if real {
			fmt.Fprintf(&b, "- **%s** (%.0f s): %s\n", cell.Name, cell.DurationS, cell.About)
			continue
		}
		fmt.Fprintf(&b, "- **%s** (%.0f s, %d ns per wave): %s\n", cell.Name, cell.DurationS, cell.NsPerBlock, cell.About)
	}
	b.WriteString("\n")
	writeVerdict(&b, r.AllMet, r.Notes)
	return b.String()
}

// targetText is the tenant's target, or its targets in turn ("30→70→10")
// when it was retargeted.
func targetText(t VgpudTenant) string {
	if len(t.TargetsPct) == 0 {
		return fmt.Sprintf("%.0f", t.TargetPct)
	}
	parts := make([]string, len(t.TargetsPct))
	for i, p := range t.TargetsPct {
		parts[i] = fmt.Sprintf("%.0f", p)
	}
	return strings.Join(parts, "→")
}

// settleText lists a tenant's settle times: "0.33 (start @ 0.1), never (join c50 @ 5.0)".
func settleText(ss []VgpudSettle) string {
	var parts []string
	for _, s := range ss {
		v := "—"
		switch {
		case s.Judged && s.SettleS < 0:
			v = "never"
		case s.Judged:
			v = fmt.Sprintf("%.2f", s.SettleS)
		}
		parts = append(parts, fmt.Sprintf("%s (%s @ %.1f)", v, s.Event, s.AtS))
	}
	return strings.Join(parts, ", ")
}

// goalsText is "met", or "NOT met:" and the goals missed.
func goalsText(t VgpudTenant) string {
	if t.Met {
		return "met"
	}
	var miss []string
	for _, g := range []struct {
		ok   bool
		name string
	}{{t.SteadyMet, "steady"}, {t.WindowMet, "window"}, {t.SettleMet, "settle"}, {t.FirstSecondMet, "first second"}} {
		if !g.ok {
			miss = append(miss, g.name)
		}
	}
	return "NOT met: " + strings.Join(miss, ", ")
}
