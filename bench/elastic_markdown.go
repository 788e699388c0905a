package bench

import (
	"fmt"
	"sort"
	"strings"
)

// notes explains the figures: where the grant time goes, from the tmpfs
// comparison and the record write cost.
func (r *elasticRun) notes(rep *ElasticReport) []string {
	var out []string
	disk, tmpfs := map[int]ElasticGrantRow{}, map[int]ElasticGrantRow{}
	for _, g := range rep.Grant {
		if g.Refused > 0 && g.LoggedRefusals == 0 {
			rs := Summarize(g.RefusedMS)
			out = append(out, fmt.Sprintf("%d at once on %s: %d of %d allocations failed after %.0f–%.0f ms while vgpud "+
				"logged no refusal (%d grants for %d requests): those tenants gave up at libvgpu's bounded wait "+
				"(VGPU_ELASTIC_WAIT_MS, 100 ms by default) before vgpud had recorded and answered their grants",
				g.Concurrency, g.StateFS, g.Refused, g.Refused+g.Latency.N, rs.Min, rs.Max, g.LoggedGrants,
				g.Concurrency*(g.Rounds+1)))
		}
		if g.SettleMS == 0 {
			out = append(out, fmt.Sprintf("the settle-0 row (%d at once released as soon as ready, right after their "+
				"slices were made): median %.2f ms, p99 %.2f ms — a new slice wakes vgpud's loop, which adds its "+
				"doorbell at once", g.Concurrency, g.Latency.Median, g.Latency.P99))
			continue
		}
		if g.StateFS == rep.Config.StateFS {
			disk[g.Concurrency] = g
		} else {
			tmpfs[g.Concurrency] = g
		}
	}
	var write *ElasticWriteCost
	for i := range rep.WriteCosts {
		if rep.WriteCosts[i].StateFS == rep.Config.StateFS {
			write = &rep.WriteCosts[i]
		}
	}
	for _, c := range rep.Config.Concurrency {
		d, okD := disk[c]
		t, okT := tmpfs[c]
		if !okD || !okT || rep.Config.StateFS == "tmpfs" {
			continue
		}
		s := fmt.Sprintf("%d at once: median %.2f ms with vgpud's state on %s, %.2f ms on tmpfs (p99 %.2f vs %.2f ms)",
			c, d.Latency.Median, d.StateFS, t.Latency.Median, d.Latency.P99, t.Latency.P99)
		if write != nil {
			s += fmt.Sprintf("; one durable record write (what store.Update does for each granted slice, in the "+
				"background after the answer: the budget carries the grant) costs %.2f ms median on %s — %s written "+
				"one after another would take ~%.1f ms", write.Write.Median, write.StateFS, grantsText(c),
				float64(c)*write.Write.Median)
		}
		out = append(out, s)
	}
	if rc := rep.Reclaim; rc != nil && len(rc.EvictMS) == len(rc.ShrinkMS) && len(rc.EvictMS) > 0 {
		gaps := make([]float64, len(rc.EvictMS))
		for i := range gaps {
			gaps[i] = rc.EvictMS[i] - rc.ShrinkMS[i]
		}
		g := Summarize(gaps)
		out = append(out, fmt.Sprintf("evict − shrink, per repetition: median %.1f ms (%.1f–%.1f), about one enforcer "+
			"interval (%s): the limit is lowered by one tick's plan and the backstop acts on a later tick",
			g.Median, g.Min, g.Max, rep.Config.EnforcerInterval))
	}
	return out
}

// grantsText is "one grant" or "N grants".
func grantsText(n int) string {
	if n == 1 {
		return "one grant"
	}
	return fmt.Sprintf("%d grants", n)
}

// Markdown renders the report.
func (r *ElasticReport) Markdown() string {
	var b strings.Builder
	m, c := r.Machine, r.Config
	fmt.Fprintf(&b, "# vgpu elastic memory benchmark: driver %s\n\n", orDash(m.Driver))
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", m.GoVersion, m.Date, orDash(m.Commit))
	fmt.Fprintf(&b, "- vgpud enforcer interval: %s; vgpud's state dir on %s (and tmpfs in the tmpfs rows); the simulated "+
		"node's state file on %s; load average %s at the start, %s at the end\n",
		c.EnforcerInterval, orDash(c.StateFS), orDash(c.NodeFS), orDash(c.LoadAvgStart), orDash(c.LoadAvgEnd))
	for _, cmd := range c.Commands {
		fmt.Fprintf(&b, "- `%s`\n", cmd)
	}
	fmt.Fprintf(&b, "- %s\n\n", c.SampleNotes)
	if len(r.Grant) > 0 {
		b.WriteString("## Grant latency (ms, the tenant's allocation past its base)\n\n")
		fmt.Fprintf(&b, "Burstable slices of %s base (its context takes %s of it), ceiling %s; each tenant allocates %s "+
			"after its context; %d rounds per row (fresh slices and processes), one device sized for every grant.\n\n",
			sizeText(c.BaseBytes), sizeText(c.ContextBytes), sizeText(c.MaxBytes), sizeText(c.AllocBytes), c.Rounds)
		b.WriteString("*settle*: least time from the round's last slice creation to the release (0: released as " +
			"soon as ready, right after the slices were made). " +
			"*last logged*: median over rounds, release → vgpud's last \"memory granted\" record of the round " +
			"(logged after the plan answered all its requests; ms resolution). *plans*: rounds whose grants " +
			"came in k plans, as k×rounds.\n\n")
		b.WriteString("| at once | settle ms | state on | n | median | p99 | max | refused | last logged | plans | goal | result |\n" +
			"|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---|\n")
		for _, g := range r.Grant {
			goal, res := "—", "—"
			if g.GoalP99MS != nil {
				goal = fmt.Sprintf("p99 ≤ %.0f", *g.GoalP99MS)
			}
			if g.Met != nil {
				res = yesNo(*g.Met)
			}
			if g.Refused > 0 {
				rs := Summarize(g.RefusedMS)
				res += fmt.Sprintf(" (refused: %s, after %.0f–%.0f ms)", countText(g.RefusedErrs), rs.Min, rs.Max)
			}
			fmt.Fprintf(&b, "| %d | %.0f | %s | %d | %.2f | %.2f | %.2f | %d | %.1f | %s | %s | %s |\n", g.Concurrency,
				g.SettleMS, g.StateFS, g.Latency.N, g.Latency.Median, g.Latency.P99, g.Latency.Max, g.Refused,
				g.LastLoggedMS.Median, plansText(g.PlansPerRound), goal, res)
		}
		b.WriteString("\n")
	}
	if len(r.WriteCosts) > 0 {
		b.WriteString("Durable record write (atomicfile.Write, Durable: write + fsync + rename + fsync of the directory; " +
			"what store.Update does for each slice a plan changes), timed in the benchmark on the same filesystem:\n\n")
		b.WriteString("| state on | n | median | p99 | max |\n|---|---:|---:|---:|---:|\n")
		for _, w := range r.WriteCosts {
			fmt.Fprintf(&b, "| %s | %d | %.3f | %.3f | %.3f |\n", w.StateFS, w.Write.N, w.Write.Median, w.Write.P99, w.Write.Max)
		}
		b.WriteString("\n")
	}
	if rc := r.Reclaim; rc != nil {
		b.WriteString("## Shrink and eviction when a lender wakes (ms)\n\n")
		b.WriteString("A guaranteed 12 GiB lender with no process, a burstable borrower (2 GiB base, 12 GiB ceiling) " +
			"holding 9 GiB on a 16 GiB device (so part of it borrowed from the lender); a process of the lender takes " +
			"its context. From its \"PHASE ready\" line being read: *shrink* = the borrower's budget limit lowered, " +
			"*evict* = the borrower's process reaped (enforce mode; the device is physically short of the lender's " +
			"guarantee). A negative shrink: vgpud acted before the line was read.\n\n")
		b.WriteString("| figure | n | median | max | goal |\n|---|---:|---:|---:|---|\n")
		fmt.Fprintf(&b, "| shrink (limit lowered) | %d | %.2f | %.2f | — |\n", rc.Shrink.N, rc.Shrink.Median, rc.Shrink.Max)
		fmt.Fprintf(&b, "| evict (process dead) | %d | %.2f | %.2f | — |\n\n", rc.Evict.N, rc.Evict.Median, rc.Evict.Max)
		var borrowed, stat []string
		for i := range rc.BorrowedBytes {
			borrowed = append(borrowed, fmt.Sprintf("%s (limit %s → %s)", sizeText(rc.BorrowedBytes[i]),
				sizeText(rc.LimitBefore[i]), sizeText(rc.LimitAfter[i])))
			stat = append(stat, fmt.Sprint(rc.ExitStatus[i]))
		}
		fmt.Fprintf(&b, "Borrowed per repetition: %s; borrower exit status: %s (137: SIGKILL).\n\n",
			strings.Join(borrowed, ", "), strings.Join(stat, ", "))
	}
	writeVerdict(&b, r.AllMet, r.Notes)
	return b.String()
}

// plansText renders PlansPerRound as "1×18, 2×2".
func plansText(m map[int]int) string {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%d×%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

// countText renders a list of names as "96× NAME, 2× OTHER" (first-seen order).
func countText(names []string) string {
	counts := map[string]int{}
	var order []string
	for _, n := range names {
		if counts[n] == 0 {
			order = append(order, n)
		}
		counts[n]++
	}
	parts := make([]string, len(order))
	for i, n := range order {
		parts[i] = fmt.Sprintf("%d× %s", counts[n], n)
	}
	return strings.Join(parts, ", ")
}
