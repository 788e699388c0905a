package bench

import (
	"encoding/json"
	"fmt"
	"strings"
)

// moreHeadlines are the index's headline figures of the reports that came
// after headline's switch (kept apart so that it stays readable).
var moreHeadlines = map[string]func([]byte) []string{
	"isolation": isolationHeadline,
	"workload":  workloadHeadline,
}

// isolationHeadline: per victim and aggressors (kind, count), the victim's
// throughput (and latency victim p99) relative to alone, per configuration.
func isolationHeadline(data []byte) []string {
	var r IsolationReport
	if json.Unmarshal(data, &r) != nil {
		return nil
	}
	type key struct {
		victim, aggressor string
		n                 int
	}
	var keys []key
	parts := map[key][]string{}
	for _, row := range r.Rows {
		if row.Aggressors == 0 {
			continue
		}
		k := key{row.Victim, row.Aggressor, row.Aggressors}
		if parts[k] == nil {
			keys = append(keys, k)
		}
		p := fmt.Sprintf("%s %s", row.Config, relText(row.RelThroughput))
		if row.Victim == VictimLatency {
			p += fmt.Sprintf(" (p99 %s)", relText(row.RelP99))
		}
		if row.Met != nil {
			p += ": " + metWord(*row.Met)
		}
		parts[k] = append(parts[k], p)
	}
	var out []string
	for _, k := range keys {
		what := "throughput"
		if k.victim == VictimLatency {
			what = "step rate (p99)"
		}
		out = append(out, fmt.Sprintf("%s victim next to %d %s aggressor(s), %s vs alone: %s", k.victim, k.n,
			k.aggressor, what, strings.Join(parts[k], "; ")))
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
