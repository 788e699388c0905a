package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// headline is a report's figures in a few lines.
func headline(benchmark string, data []byte) []string {
	if f := headliners[benchmark]; f != nil {
		return f(data)
	}
	return nil
}

// headliners give each benchmark's headline figures from its JSON report
// (nil when it does not decode).
var headliners = map[string]func([]byte) []string{
	"overhead":  headlineOf(overheadHeadline),
	"daemon":    headlineOf(daemonHeadline),
	"throttle":  headlineOf(throttleHeadline),
	"elastic":   headlineOf(elasticHeadline),
	"tracker":   headlineOf(trackerHeadline),
	"runtime":   headlineOf(runtimeHeadline),
	"isolation": isolationHeadline,
	"workload":  workloadHeadline,
}

// addLine adds a formatted line to a headline.
type addLine func(format string, a ...any)

// headlineOf makes a headliner of lines, which writes the headline of a
// decoded report: nil when data does not decode as a T.
func headlineOf[T any](lines func(r *T, add addLine)) func([]byte) []string {
	return func(data []byte) []string {
		var r T
		if json.Unmarshal(data, &r) != nil {
			return nil
		}
		var out []string
		lines(&r, func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) })
		return out
	}
}

// overheadHeadline: added ns per call and added init time, with their goals.
func overheadHeadline(r *OverheadReport, add addLine) {
	for _, c := range r.Calls {
		goal := "no goal"
		if c.GoalNS != nil {
			goal = fmt.Sprintf("goal ≤ %g ns: %s", *c.GoalNS, metWord(c.Met != nil && *c.Met))
		}
		add("%s, %d thread(s): %+.1f ns per call median (%.1f → %.1f ns; %s)", shortOp(c.Op), c.Threads,
			c.AddedMedianNS, c.Bare.Median, c.VGPU.Median, goal)
	}
	for _, i := range r.Init {
		add("init, %d process(es) at once: %+.2f ms median (goal ≤ %g ms: %s)", i.Procs, i.AddedMedianMS, i.GoalMS, metWord(i.Met))
	}
}

// daemonHeadline: the enforcer tick's p99 CPU and the slice allocation latency.
func daemonHeadline(r *DaemonReport, add addLine) {
	if t := r.Tick; t != nil {
		add("enforcer tick over %d slices: p99 %.2f ms CPU (goal ≤ %g ms: %s)", t.Slices, t.CPU.P99, t.GoalCPUMS, metWord(t.Met))
	}
	if a := r.Alloc; a != nil {
		add("slice allocation: median %.2f ms, p99 %.2f ms (goal p99 ≤ %g ms: %s)", a.Alloc.Median, a.Alloc.P99, a.GoalMS, metWord(a.Met))
	}
}

// throttleHeadline: how many tenants met every goal, and the worst steady error.
func throttleHeadline(r *ThrottleVgpudReport, add addLine) {
	n, met, worst := 0, 0, 0.0
	for _, c := range r.Cells {
		for _, t := range c.Tenants {
			n++
			if t.Met {
				met++
			}
			worst = math.Max(worst, math.Abs(t.SteadyErrPts))
		}
	}
	add("%d cells, %d tenants: %d met every goal; worst steady error %.2f pts (goal ±%g)", len(r.Cells), n, met, worst, r.Config.GoalSteadyErrPts)
}

// elasticHeadline: grant latency per concurrency and state filesystem; reclaim times.
func elasticHeadline(r *ElasticReport, add addLine) {
	for _, g := range r.Grant {
		goal := ""
		if g.GoalP99MS != nil && g.Met != nil {
			goal = fmt.Sprintf(" (goal p99 ≤ %g ms: %s)", *g.GoalP99MS, metWord(*g.Met))
		}
		how := fmt.Sprintf("released %.0f ms after the last slice", g.SettleMS)
		if g.SettleMS == 0 {
			how = "released when ready"
		}
		add("grant, %d at once, state on %s, %s: median %.1f ms, p99 %.1f ms, %d refused%s", g.Concurrency, g.StateFS,
			how, g.Latency.Median, g.Latency.P99, g.Refused, goal)
	}
	if rc := r.Reclaim; rc != nil {
		add("shrink median %.1f ms, eviction median %.1f ms (%d repeats)", rc.Shrink.Median, rc.Evict.Median, rc.Repeats)
	}
}

// trackerHeadline: each latency row with its goal.
func trackerHeadline(r *TrackerReport, add addLine) {
	for _, l := range r.Latency {
		goal := ""
		if l.GoalMS != nil && l.Met != nil {
			goal = fmt.Sprintf(" (goal p99 ≤ %g ms: %s)", *l.GoalMS, metWord(*l.Met))
		}
		add("%s via %s: median %.2f ms, p99 %.2f ms%s", l.What, l.Tracker, l.MS.Median, l.MS.P99, goal)
	}
}

// runtimeHeadline: container create time, runc vs vgpu-runtime.
func runtimeHeadline(r *RuntimeReport, add addLine) {
	add("container create: runc %.1f ms, vgpu-runtime %.1f ms median: %+.1f ms (goal ≤ %g ms: %s)",
		r.Runc.Median, r.VGPU.Median, r.AddedMS, r.GoalMS, metWord(r.Met))
}

// isolationHeadline: per victim and aggressors (kind, count), the victim's
// throughput (and latency victim p99) relative to alone, per configuration.
func isolationHeadline(data []byte) []string {
	var r IsolationReport
	if json.Unmarshal(data, &r) != nil {
		return nil
	}
	g := r.groups()
	var out []string
	for _, k := range g.keys {
		var parts []string
		for _, c := range g.configs {
			row := g.rows[k][c]
			if row == nil {
				continue
			}
			p := fmt.Sprintf("%s %s", row.Config, relText(row.RelThroughput))
			if row.Victim == VictimLatency {
				p += fmt.Sprintf(" (p99 %s)", relText(row.RelP99))
			}
			if row.Met != nil {
				p += ": " + metWord(*row.Met)
			}
			parts = append(parts, p)
		}
		what := "throughput"
		if k.victim == VictimLatency {
			what = "step rate (p99)"
		}
		out = append(out, fmt.Sprintf("%s victim next to %d %s aggressor(s), %s vs alone: %s", k.victim, k.n,
			k.aggressor, what, strings.Join(parts, "; ")))
	}
	return out
}

// workloadHeadline: what each run adds to the median step over bare.
func workloadHeadline(data []byte) []string {
	var r WorkloadReport
	if json.Unmarshal(data, &r) != nil {
		return nil
	}
	var bare *WorkloadRow
	for i := range r.Rows {
		if r.Rows[i].Mode == ModeBare {
			bare = &r.Rows[i]
		}
	}
	if bare == nil {
		return nil
	}
	out := []string{fmt.Sprintf("bare step: median %.1f µs, p99 %.1f µs", bare.Step.Median, bare.Step.P99)}
	for _, row := range r.Rows {
		if row.Mode == ModeBare {
			continue
		}
		goal := "no goal"
		if row.GoalPct != nil && row.Met != nil {
			goal = fmt.Sprintf("goal ≤ %g %%: %s", *row.GoalPct, metWord(*row.Met))
		}
		out = append(out, fmt.Sprintf("%s: %+.2f %% median step (%+.2f µs; p99 %+.1f %%; %s)", row.Mode,
			row.AddedMedianPct, row.AddedMedianUS, row.AddedP99Pct, goal))
	}
	return out
}
