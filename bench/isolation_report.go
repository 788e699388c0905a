package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// IsolationReport is the isolation benchmark's JSON report.
type IsolationReport struct {
	Benchmark string          `json:"benchmark"` // "isolation"
	Machine   Machine         `json:"machine"`
	Config    IsolationConfig `json:"config"`
	Commands  []string        `json:"commands"`
	Rows      []IsolationRow  `json:"rows"`
	AllMet    bool            `json:"all_met"`
	Notes     []string        `json:"notes,omitempty"`
}

// IsolationConfig records how the figures were taken.
type IsolationConfig struct {
	SMs                 int     `json:"sms"`
	NsPerBlock          uint64  `json:"ns_per_wave"`
	WarmupS             float64 `json:"warmup_s"`
	MeasureS            float64 `json:"measure_s"`
	VictimSharePct      float64 `json:"victim_share_pct"`
	LatencyKernelUs     float64 `json:"latency_kernel_us"`
	FloodKernelUs       float64 `json:"flood_kernel_us"`
	GoalThroughputRatio float64 `json:"goal_vgpu_throughput_ratio_min"`
	GoalP99Ratio        float64 `json:"goal_vgpu_p99_ratio_max"`
	// Peers are the --compare libraries, each a configuration of its own.
	Peers []Peer `json:"peers,omitempty"`
}

// IsolationRow is one cell: the victim's figures and, after Evaluate, their
// ratios to the same victim and configuration alone (0 aggressors).
type IsolationRow struct {
	Victim            string  `json:"victim"`    // latency | throughput
	Aggressor         string  `json:"aggressor"` // flood | churn
	Aggressors        int     `json:"aggressors"`
	Config            string  `json:"config"` // vgpu | bare | a --compare peer's name
	Peer              bool    `json:"peer,omitempty"`
	VictimSharePct    float64 `json:"victim_share_pct,omitempty"`
	AggressorSharePct float64 `json:"aggressor_share_pct,omitempty"`
	Steps             uint64  `json:"steps"`
	Seconds           float64 `json:"seconds"`
	StepsPerS         float64 `json:"steps_per_s"`
	LatencyUs         Summary `json:"latency_us"` // latency victim only
	// Ratios to alone (nil: no alone row, or no figure).
	RelThroughput *float64 `json:"rel_throughput"`
	RelP50        *float64 `json:"rel_p50"`
	RelP99        *float64 `json:"rel_p99"`
	// Met is nil where no goal applies (bare rows, alone rows).
	Met *bool `json:"met"`
}

// victimResult is what isolation_load printed.
type victimResult struct {
	steps   uint64
	seconds float64
	latUs   []float64
}

// parseVictim reads isolation_load's DONE and LAT lines.
func parseVictim(lines []string) (victimResult, error) {
	var r victimResult
	done := false
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "DONE "):
			f := lineFields(l)
			n, err1 := strconv.ParseUint(f["steps"], 10, 64)
			s, err2 := strconv.ParseFloat(f["seconds"], 64)
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("bad line %q", l)
			}
			r.steps, r.seconds, done = n, s, true
		case strings.HasPrefix(l, "LAT"):
			for _, w := range strings.Fields(l)[1:] {
				x, err := strconv.ParseFloat(w, 64)
				if err != nil {
					return r, fmt.Errorf("bad latency %q", w)
				}
				r.latUs = append(r.latUs, x)
			}
		}
	}
	if !done {
		return r, fmt.Errorf("no DONE line")
	}
	return r, nil
}

func ratio(x, alone float64) *float64 {
	if alone <= 0 || x <= 0 {
		return nil
	}
	v := x / alone
	return &v
}

// Evaluate fills every row's ratios to its alone row and the goals of the
// vgpu rows with aggressors.
func (r *IsolationReport) Evaluate() {
	r.AllMet = true
	for i := range r.Rows {
		row := &r.Rows[i]
		row.RelThroughput, row.RelP50, row.RelP99, row.Met = nil, nil, nil, nil
		var alone *IsolationRow
		for j := range r.Rows {
			a := &r.Rows[j]
			if a.Victim == row.Victim && a.Config == row.Config && a.Aggressors == 0 {
				alone = a
				break
			}
		}
		if alone == nil {
			continue
		}
		row.RelThroughput = ratio(row.StepsPerS, alone.StepsPerS)
		if row.Victim == VictimLatency {
			row.RelP50 = ratio(row.LatencyUs.Median, alone.LatencyUs.Median)
			row.RelP99 = ratio(row.LatencyUs.P99, alone.LatencyUs.P99)
		}
		if row.Config != IsoVgpu || row.Aggressors == 0 {
			continue
		}
		met := row.RelThroughput != nil && *row.RelThroughput >= r.Config.GoalThroughputRatio
		if row.Victim == VictimLatency {
			met = met && row.RelP99 != nil && *row.RelP99 <= r.Config.GoalP99Ratio
		}
		row.Met = &met
		r.AllMet = r.AllMet && met
	}
}

func relText(x *float64) string {
	if x == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f×", *x)
}

// Markdown renders the report.
func (r *IsolationReport) Markdown() string {
	var b strings.Builder
	m := r.Machine
	b.WriteString("# vgpu isolation benchmark: noisy neighbours on a simulated node\n\n")
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", m.GoVersion, m.Date, orDash(m.Commit))
	for _, cmd := range r.Commands {
		fmt.Fprintf(&b, "- command: `%s`\n", cmd)
	}
	ran := r.configsRun()
	r.writeSetup(&b, ran)
	r.writeSummary(&b)
	b.WriteString("All rows:\n\n")
	b.WriteString("| victim | aggressors | config | steps counted | steps/s | rel. throughput | p50 µs | rel. p50 | p99 µs | rel. p99 | result |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, row := range r.Rows {
		aggr := "none (alone)"
		if row.Aggressors > 0 {
			aggr = fmt.Sprintf("%d %s", row.Aggressors, row.Aggressor)
		}
		cfg := row.Config
		if row.Config == IsoVgpu {
			cfg = fmt.Sprintf("vgpu (%.0f%%", row.VictimSharePct)
			if row.Aggressors > 0 {
				cfg += fmt.Sprintf(" / %g%% each", row.AggressorSharePct)
			}
			cfg += ")"
		}
		p50, p99 := "—", "—"
		if row.Victim == VictimLatency && row.LatencyUs.N > 0 {
			p50, p99 = fmt.Sprintf("%.0f", row.LatencyUs.Median), fmt.Sprintf("%.0f", row.LatencyUs.P99)
		}
		res := "—"
		if row.Met != nil {
			res = "met"
			if !*row.Met {
				res = "NOT met"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %.1f | %s | %s | %s | %s | %s | %s |\n", row.Victim, aggr, cfg, row.Steps, row.StepsPerS,
			relText(row.RelThroughput), p50, relText(row.RelP50), p99, relText(row.RelP99), res)
	}
	b.WriteString("\n")
	notes := r.Notes
	if !ran[IsoVgpu] {
		notes = nil
		for _, n := range r.Notes {
			if !strings.HasPrefix(n, noteVgpuPrefix) {
				notes = append(notes, n)
			}
		}
	}
	if ran[IsoVgpu] {
		writeVerdict(&b, r.AllMet, notes)
	} else {
		b.WriteString("**No goals apply** (no vgpu rows).\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "\n> note: %s\n", n)
		}
	}
	return b.String()
}

// isoNeighbours names a victim next to its aggressors (kind, count).
type isoNeighbours struct {
	victim, aggressor string
	n                 int
}

// isoGroups are a report's rows with aggressors by neighbours, in the order
// first seen, and per configuration; configs lists every configuration that
// ran (rows alone included) in the report's order.
type isoGroups struct {
	configs []string
	keys    []isoNeighbours
	rows    map[isoNeighbours]map[string]*IsolationRow
}

// groups groups the rows (the summary table, the index headline and the
// plots read them so).
func (r *IsolationReport) groups() isoGroups {
	g := isoGroups{rows: map[isoNeighbours]map[string]*IsolationRow{}}
	for i := range r.Rows {
		row := &r.Rows[i]
		if !slices.Contains(g.configs, row.Config) {
			g.configs = append(g.configs, row.Config)
		}
		if row.Aggressors == 0 {
			continue
		}
		k := isoNeighbours{row.Victim, row.Aggressor, row.Aggressors}
		if g.rows[k] == nil {
			g.rows[k] = map[string]*IsolationRow{}
			g.keys = append(g.keys, k)
		}
		g.rows[k][row.Config] = row
	}
	return g
}

// writeSummary is the table at a glance: per victim and aggressors (kind and
// count), per configuration in the report's order, the victim's throughput
// and (latency victim) p99 relative to alone.
func (r *IsolationReport) writeSummary(b *strings.Builder) {
	g := r.groups()
	configs, keys, cell := g.configs, g.keys, g.rows
	if len(keys) == 0 {
		return
	}
	b.WriteString("Summary: the victim's throughput and (latency victim) p99, relative to the same victim and " +
		"configuration alone.\n\n| victim | aggressors |")
	for _, c := range configs {
		fmt.Fprintf(b, " %s: throughput | %s: p99 |", c, c)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|---:|", len(configs)) + "\n")
	for _, k := range keys {
		fmt.Fprintf(b, "| %s | %d %s |", k.victim, k.n, k.aggressor)
		for _, c := range configs {
			row := cell[k][c]
			switch {
			case row == nil:
				b.WriteString(" | |")
			case k.victim == VictimLatency:
				fmt.Fprintf(b, " %s | %s |", relText(row.RelThroughput), relText(row.RelP99))
			default:
				fmt.Fprintf(b, " %s | — |", relText(row.RelThroughput))
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

// writeSetup says how the rows were taken: the node, each configuration that
// ran, the timeline, and the goals where vgpu rows ran.
func (r *IsolationReport) writeSetup(b *strings.Builder, ran map[string]bool) {
	c := r.Config
	fmt.Fprintf(b, "- node: a fresh simulated node per row, %d SMs, %d ns per wave; victim kernels: latency %.0f µs "+
		"(launch + synchronize per step), throughput and aggressors %.0f µs (launched back to back)\n",
		c.SMs, c.NsPerBlock, c.LatencyKernelUs, c.FloodKernelUs)
	if ran[IsoVgpu] {
		fmt.Fprintf(b, "- vgpu: a real bin/vgpud per row; every tenant `vgpuctl run --compute P --compute-policy cap -- "+
			"build/test/isolation_load ...`, the victim at %.0f%%, the aggressors sharing the rest equally\n", c.VictimSharePct)
	}
	if ran[IsoBare] {
		b.WriteString("- bare: the same processes without libvgpu and without limits\n")
	}
	for _, p := range c.Peers {
		if !ran[p.Name] {
			continue
		}
		fmt.Fprintf(b, "- peer %s (`--compare`): the bare rows again, every tenant with `LD_PRELOAD=%s`", p.Name, p.Lib)
		if len(p.Env) > 0 {
			fmt.Fprintf(b, " `%s`", strings.Join(p.Env, " "))
		}
		b.WriteString(" (checked mapped into each tenant)\n")
	}
	fmt.Fprintf(b, "- the victim starts once every aggressor is READY; %.1f s warm-up, then %.1f s counted\n\n",
		c.WarmupS, c.MeasureS)
	b.WriteString("Figures relative to the same victim and configuration alone (0 aggressors). ")
	if ran[IsoVgpu] {
		fmt.Fprintf(b, "Goals for the vgpu rows with aggressors: throughput ≥ %.2f × alone, latency victim p99 ≤ %.1f × "+
			"alone; other configurations have none.\n\n", c.GoalThroughputRatio, c.GoalP99Ratio)
	} else {
		b.WriteString("No vgpu rows were run: the goals (of the vgpu rows) do not apply.\n\n")
	}
}

// configsRun is the set of configurations with rows in the report: the report
// describes only those (a --configs bare run has no vgpu line).
func (r *IsolationReport) configsRun() map[string]bool {
	ran := map[string]bool{}
	for _, row := range r.Rows {
		ran[row.Config] = true
	}
	return ran
}

// CommandLine is args as one shell line (empty and spaced arguments quoted).
func CommandLine(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// noteVgpuPrefix starts the note about the vgpu rows, left out where none ran.
const noteVgpuPrefix = "with vgpu"

// isolationNotes are the notes every report carries.
func isolationNotes() []string {
	return []string{
		"the simulated GPU is one FIFO timeline per device (test/simgpu): a kernel starts at max(now, the end of " +
			"everything queued before it, from any process) and a launch blocks while the queue is more than 1 s " +
			"ahead; there is no time-slicing between contexts, so bare a victim's kernel waits behind the " +
			"aggressors' whole queue — a real GPU time-slices contexts and differs in degree; the figures show " +
			"what vgpu's launch throttle does to the queue, not a real GPU's scheduler",
		noteVgpuPrefix + " the victim is capped at its share alone too (cap policy), so its alone figures are of a " +
			"capped tenant: the ratios compare like with like",
		"throughput = counted steps / counted seconds (latency victim: launch + synchronize steps; throughput " +
			"victim: kernels launched, at a full device queue the rate the device ran them); p50/p99 are over the " +
			"counted steps: with few steps (a victim stuck behind a 1 s queue) p99 is the slowest step",
		"a compute share caps how much device time each tenant gets, not where its kernels sit in the queue: " +
			"on the FIFO device a latency victim's short kernel still waits behind the (capped) aggressors' " +
			"long kernels queued before it, so its step rate and p99 suffer even when every tenant keeps its share",
	}
}
