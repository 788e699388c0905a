package bench

import (
	"fmt"
	"strings"
)

func pcts(ts []TenantResult, f func(TenantResult) float64, signed bool) string {
	var parts []string
	for _, t := range ts {
		v := f(t)
		if signed {
			parts = append(parts, fmt.Sprintf("%+.2f", v))
		} else {
			parts = append(parts, fmt.Sprintf("%.2f", v))
		}
	}
	return strings.Join(parts, " / ")
}

// Markdown renders the report.
func (r *ThrottleReport) Markdown() string {
	if r.Config.Real != nil {
		return r.markdownReal()
	}
	var b strings.Builder
	r.simHeader(&b)
	if len(r.Cells) > 0 {
		r.simCells(&b)
	}
	if len(r.Settle) > 0 {
		r.settleTable(&b)
	}
	if len(r.Priority) > 0 {
		r.priorityTable(&b)
	}
	r.summary(&b)
	return b.String()
}

// simHeader: the machine, the simulated device and how a cell runs.
func (r *ThrottleReport) simHeader(b *strings.Builder) {
	c := r.Config
	fmt.Fprintf(b, "# vgpu throttle benchmark: simulated node, %d SMs\n\n", c.SMs)
	fmt.Fprintf(b, "- machine: %s, %s, %d cores, kernel %s\n", r.Machine.Hostname, r.Machine.CPUModel, r.Machine.Cores,
		orDash(r.Machine.Kernel))
	fmt.Fprintf(b, "- %s, %s, commit %s\n", r.Machine.GoVersion, r.Machine.Date, orDash(r.Machine.Commit))
	fmt.Fprintf(b, "- device: %d SMs, %d ns per wave of blocks (libvgpu's nominal estimate: %d ns, so static "+
		"rates are off by %.0f%% until the controller has measured the scale)\n", c.SMs, c.NsPerBlock,
		c.NominalWaveNs, (float64(c.NsPerBlock)/float64(c.NominalWaveNs)-1)*100)
	fmt.Fprintf(b, "- each cell: %.0f s warm-up, then a %.0f s window; controller step %.0f ms\n",
		c.WarmupSeconds, c.WindowSeconds, c.TickMs)
	fmt.Fprintf(b, "- workloads: flood = cuLaunchKernel back to back (100-wave kernels); sync = launch, "+
		"synchronize, repeat (1000 waves); graph = cuGraphLaunch of a 4-kernel graph (1000 waves) + synchronize; "+
		"mix = 2 threads, kernel / Ex / cooperative / graph at random (300 waves mean), 1 synchronize in 3\n")
	fmt.Fprintf(b, "- %s\n\n", c.Notes)
}

// simCells: target vs achieved per cell.
func (r *ThrottleReport) simCells(b *strings.Builder) {
	b.WriteString("## Target vs achieved (cap policy; percent of the device)\n\n")
	b.WriteString("| group | workload | target | achieved | error (pts) | max abs error | waited | result |\n")
	b.WriteString("|---|---|---|---|---|---:|---|---|\n")
	for _, cell := range r.Cells {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %.2f | %s | %s |\n", cell.Group, cell.Workload,
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.TargetPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.AchievedPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.ErrorPts }, true),
			cell.MaxErrorPts,
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.WaitedPct }, false),
			metText(cell.Met))
	}
	b.WriteString("\n\"waited\": time the tenant's launchers slept for tokens, percent of the window.\n\n")
}

// settleTable: how long each change of target took.
func (r *ThrottleReport) settleTable(b *strings.Builder) {
	b.WriteString("## Settle time after a change of target (one cap tenant)\n\n")
	fmt.Fprintf(b, "Settle = from the change to the earliest controller step X such that the share over "+
		"every window (sliding by one step) from X to the next change is within ±%.0f points of the new "+
		"target (a window long enough that one kernel more or less stays inside the tolerance). Step: %.0f ms.\n\n",
		r.Settle[0].TolerancePts, r.Config.TickMs)
	b.WriteString("| workload | change | window (ms) | settle (ms) |\n|---|---|---:|---:|\n")
	for _, s := range r.Settle {
		v := "not settled"
		if s.SettleMs >= 0 {
			v = fmt.Sprintf("%.0f", s.SettleMs)
		}
		fmt.Fprintf(b, "| %s | %s | %.0f | %s |\n", s.Workload, s.Change, s.WindowMs, v)
	}
	b.WriteString("\n")
}

// priorityTable: the high-priority tenant alone and beside the floods.
func (r *ThrottleReport) priorityTable(b *strings.Builder) {
	b.WriteString("## Priority\n\n")
	b.WriteString("High: share policy 50%, priority 10, launch-sync-launch. Low: share policy 50%, priority 0, " +
		"flood; held to its floor while the high one is active.\n\n")
	b.WriteString("| case | high achieved % | low achieved % | high vs alone | result |\n|---|---:|---:|---:|---|\n")
	for _, p := range r.Priority {
		res := "—"
		if p.Goal {
			res = metText(p.Met)
		}
		low := "—"
		if p.LowPct > 0 {
			low = fmt.Sprintf("%.2f", p.LowPct)
		}
		fmt.Fprintf(b, "| %s | %.2f | %s | %.1f%% | %s |\n", p.Case, p.HighPct, low, p.RatioToAlone*100, res)
	}
	b.WriteString("\n")
}

// summary: the goals, for both modes (a real-GPU report has no priority part).
func (r *ThrottleReport) summary(b *strings.Builder) {
	s := r.Summary
	fmt.Fprintf(b, "## Summary\n\n- cells within ±%.0f points: %d of %d (max error %.2f pts, mean |error| %.2f pts)\n",
		GoalShareErrorPts, s.CellsMet, s.Cells, s.MaxErrorPts, s.MeanAbsErrPts)
	if len(r.Priority) > 0 {
		fmt.Fprintf(b, "- priority tenant next to a low-priority flood: %.1f%% of its alone throughput (goal ≥ %.0f%%): %s\n",
			s.PriorityRatio*100, GoalPriorityRatio*100, metText(s.PriorityMet))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(b, "- note: %s\n", n)
	}
	if s.AllMet {
		b.WriteString("\n**All goals met.**\n")
	} else {
		b.WriteString("\n**Some goals NOT met** (see the result columns).\n")
	}
}

func metText(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// markdownReal renders a real-GPU report.
func (r *ThrottleReport) markdownReal() string {
	var b strings.Builder
	c, rc := r.Config, r.Config.Real
	fmt.Fprintf(&b, "# vgpu throttle benchmark: real GPU, %s\n\n", orDash(rc.GPU))
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s; driver %s\n", r.Machine.Hostname, r.Machine.CPUModel,
		r.Machine.Cores, orDash(r.Machine.Kernel), orDash(r.Machine.Driver))
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", r.Machine.GoVersion, r.Machine.Date, orDash(r.Machine.Commit))
	fmt.Fprintf(&b, "- kernel: PTX busy loop (cuModuleLoadData), %d blocks x %d threads on %d SMs, %d iterations: "+
		"%.3f ms of device time alone (calibrated; target %.1f ms); libvgpu's nominal estimate for it: %.3f ms\n",
		rc.Grid, rc.Block, rc.SMs, rc.Iters, float64(rc.KernelNs)/1e6, rc.KernelMsTarget,
		float64((rc.Grid+rc.SMs-1)/max(rc.SMs, 1))*float64(c.NominalWaveNs)/1e6)
	fmt.Fprintf(&b, "- workloads: kernel = cuLaunchKernel, synchronize every %d launches; graph = cuGraphLaunch of a "+
		"%d-kernel graph, synchronize every %d graph launches\n", rc.SyncEvery, rc.Nodes, max(1, rc.SyncEvery/rc.Nodes))
	fmt.Fprintf(&b, "- each cell: %.0f s warm-up, then a %.0f s window; controller step %.0f ms\n",
		c.WarmupSeconds, c.WindowSeconds, c.TickMs)
	src := "NVML per-process utilization (as vgpud measures it)"
	if rc.Measure == MeasureSelf {
		src = "the programs' own reports (completed kernels x calibrated kernel time)"
	}
	fmt.Fprintf(&b, "- achieved: %s; \"self\": the programs' own figure, for comparison\n", src)
	if rc.MeasureNote != "" {
		fmt.Fprintf(&b, "- note: %s\n", rc.MeasureNote)
	}
	fmt.Fprintf(&b, "- %s\n\n", c.Notes)
	b.WriteString("## Target vs achieved (cap policy; percent of the device)\n\n")
	b.WriteString("| group | workload | target | achieved | self | error (pts) | max abs error | waited | result |\n")
	b.WriteString("|---|---|---|---|---|---|---:|---|---|\n")
	for _, cell := range r.Cells {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.2f | %s | %s |\n", cell.Group, cell.Workload,
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.TargetPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.AchievedPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.SelfPct }, false),
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.ErrorPts }, true),
			cell.MaxErrorPts,
			pcts(cell.Tenants, func(t TenantResult) float64 { return t.WaitedPct }, false),
			metText(cell.Met))
	}
	b.WriteString("\n\"waited\": time the tenant's launchers slept for tokens, percent of the window.\n\n")
	r.summary(&b)
	return b.String()
}
