package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// SuiteStep is what the suite did with one benchmark: ran it (Err empty),
// skipped it (Skipped says why) or saw it fail.
type SuiteStep struct {
	Benchmark string  `json:"benchmark_name"`
	Skipped   string  `json:"skipped,omitempty"`
	Err       string  `json:"error,omitempty"`
	Seconds   float64 `json:"seconds"`
}

// IndexInfo is what WriteIndex adds besides the reports: the suite's steps
// (none when it indexes existing results) and how it was run. The suite
// keeps it in DIR/suite-run.json (WriteSuiteRun), so that `vgpu-bench plot`
// redrawing the plots later keeps the run's record in the index.
type IndexInfo struct {
	Steps  []SuiteStep `json:"steps"`
	Quick  bool        `json:"quick"`
	Driver string      `json:"driver"`
	// Commit every report of the run records (PinCommit); Started and
	// Seconds: the whole run; Load*: /proc/loadavg's 1, 5 and 15 minute
	// averages at its start and end (the machine's other work).
	Commit    string  `json:"commit,omitempty"`
	Started   string  `json:"started,omitempty"`
	Seconds   float64 `json:"seconds,omitempty"`
	LoadStart string  `json:"load_start,omitempty"`
	LoadEnd   string  `json:"load_end,omitempty"`
}

// suiteRunFile is where the suite keeps its IndexInfo beside the reports (no
// "benchmark" field: the index and the plots skip it).
const suiteRunFile = "suite-run.json"

// WriteSuiteRun writes info to dir/suite-run.json.
func WriteSuiteRun(dir string, info IndexInfo) error {
	js, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, suiteRunFile), append(js, '\n'), 0o644)
}

// ReadSuiteRun reads dir/suite-run.json; ok is false where there is none.
func ReadSuiteRun(dir string) (info IndexInfo, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, suiteRunFile))
	if errors.Is(err, os.ErrNotExist) {
		return info, false, nil
	}
	if err != nil {
		return info, false, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, false, fmt.Errorf("%s: %w", suiteRunFile, err)
	}
	return info, true, nil
}

// LoadAverage is /proc/loadavg's first three fields ("" where unreadable).
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// suiteRunLines is what the index says about the suite run, a line each, and
// which lines report a failure.
func suiteRunLines(info IndexInfo) (lines []string, failed []bool) {
	add := func(bad bool, format string, a ...any) {
		lines, failed = append(lines, fmt.Sprintf(format, a...)), append(failed, bad)
	}
	if info.Started != "" {
		add(false, "started %s, %.0f s in all; every report records commit %s", info.Started, info.Seconds, orDash(info.Commit))
	}
	if info.LoadStart != "" || info.LoadEnd != "" {
		add(false, "load average (1, 5, 15 min): %s at the start, %s at the end (2 cores; the benchmarks' own "+
			"processes count in it)", orDash(info.LoadStart), orDash(info.LoadEnd))
	}
	for _, s := range info.Steps {
		switch {
		case s.Skipped != "":
			add(false, "%s: skipped (%s)", s.Benchmark, s.Skipped)
		case s.Err != "":
			add(true, "%s: FAILED after %.0f s (%s)", s.Benchmark, s.Seconds, s.Err)
		default:
			add(false, "%s: ran in %.0f s", s.Benchmark, s.Seconds)
		}
	}
	return lines, failed
}

// IndexEntry is one report as the index lists it.
type IndexEntry struct {
	File      string
	Benchmark string
	Machine   Machine
	// AllMet: the report's all_met, else every "met" in it together; nil: no goal.
	AllMet   *bool
	NotMet   []string // the rows whose goal was not met
	Goals    int      // rows with a goal
	Headline []string
	Plots    []Plot
}

// ReadIndexEntries reads every report in dir (*.json with a "benchmark"
// field) and attaches its plots.
func ReadIndexEntries(dir string, plots []Plot) ([]IndexEntry, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []IndexEntry
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc map[string]any
		if json.Unmarshal(data, &doc) != nil {
			continue
		}
		b, _ := doc["benchmark"].(string)
		if b == "" {
			continue
		}
		e := IndexEntry{File: filepath.Base(f), Benchmark: b}
		if m, ok := doc["machine"]; ok {
			mj, _ := json.Marshal(m)
			_ = json.Unmarshal(mj, &e.Machine)
		}
		met := true
		walkGoals(doc, "", func(where string, ok bool) {
			e.Goals++
			met = met && ok
			if !ok {
				e.NotMet = append(e.NotMet, where)
			}
		})
		if am, ok := doc["all_met"].(bool); ok {
			e.AllMet = &am
		} else if e.Goals > 0 {
			e.AllMet = &met
		}
		e.Headline = headline(b, data)
		for _, p := range plots {
			if p.Source == e.File {
				e.Plots = append(e.Plots, p)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// idKeys name a row of a report (its "met" says for which row).
var idKeys = []string{"name", "op", "what", "tracker", "load", "threads", "procs", "concurrency", "state_fs", "mode", "tenant",
	"victim", "aggressors", "aggressor", "config"}

// walkGoals calls f for every object holding a boolean "met", with a short
// description of where it is.
func walkGoals(v any, where string, f func(string, bool)) {
	switch x := v.(type) {
	case map[string]any:
		if met, ok := x["met"].(bool); ok {
			var id []string
			for _, k := range idKeys {
				switch val := x[k].(type) {
				case string, float64, bool: // names, not objects (a report's "config")
					id = append(id, fmt.Sprintf("%s=%v", k, val))
				}
			}
			w := where
			if len(id) > 0 {
				w += " (" + strings.Join(id, ", ") + ")"
			}
			w = strings.TrimPrefix(w, ".")
			if w == "" {
				w = "the report's goal" // a "met" at the top level: the whole report's one goal
			}
			f(w, met)
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "machine" || k == "config" {
				continue
			}
			walkGoals(x[k], where+"."+k, f)
		}
	case []any:
		for i, e := range x {
			walkGoals(e, fmt.Sprintf("%s[%d]", where, i), f)
		}
	}
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

func statusWord(e IndexEntry) string {
	switch {
	case e.AllMet == nil:
		return "no goals"
	case *e.AllMet:
		return fmt.Sprintf("all met (%d rows)", e.Goals)
	default:
		return fmt.Sprintf("NOT met (%d of %d rows)", len(e.NotMet), e.Goals)
	}
}

func commitOf(m Machine) string {
	if len(m.Commit) > 12 {
		return m.Commit[:12]
	}
	if m.Commit == "" {
		return "?"
	}
	return m.Commit
}

// writeEntryMarkdown is one report's section of index.md.
func writeEntryMarkdown(md *strings.Builder, e IndexEntry, plotsRel string) {
	fmt.Fprintf(md, "\n## %s — %s\n\n", e.Benchmark, statusWord(e))
	fmt.Fprintf(md, "From [%s](%s): %s on %s (%s, %d cores), commit %s.\n\n", e.File, e.File, e.Machine.Driver,
		e.Machine.Hostname, e.Machine.CPUModel, e.Machine.Cores, commitOf(e.Machine))
	for _, l := range e.Headline {
		fmt.Fprintf(md, "- %s\n", l)
	}
	if len(e.NotMet) > 0 {
		md.WriteString("\nGoals not met:\n\n")
		for _, w := range e.NotMet {
			fmt.Fprintf(md, "- `%s`\n", w)
		}
	}
	for _, p := range e.Plots {
		fmt.Fprintf(md, "\n[![%s](%s/%s.png)](%s/%s.svg)\n", p.Title, plotsRel, p.Name, plotsRel, p.Name)
	}
}

// WriteIndex writes dir/index.md and dir/index.html: every report in dir with
// its machine, driver, commit, goal status and headline figures, and its plots
// (plotsRel: the plots' directory relative to dir).
func WriteIndex(dir, plotsRel string, entries []IndexEntry, info IndexInfo) error {
	now := time.Now().UTC().Format(time.RFC3339)
	if err := os.WriteFile(filepath.Join(dir, "index.md"), []byte(indexMarkdown(now, plotsRel, entries, info)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "index.html"), []byte(indexHTML(now, plotsRel, entries, info)), 0o644)
}

// suiteMode names a suite run's mode ("full" or "--quick").
func suiteMode(info IndexInfo) string {
	if info.Quick {
		return "--quick"
	}
	return "full"
}

// indexMarkdown is index.md: the table of reports, the suite run, then each
// report's headline figures, goals and plots.
func indexMarkdown(now, plotsRel string, entries []IndexEntry, info IndexInfo) string {
	var md strings.Builder
	md.WriteString("# vgpu benchmark results\n\n")
	fmt.Fprintf(&md, "Indexed %s by `vgpu-bench` from the %d reports in this directory", now, len(entries))
	if len(info.Steps) > 0 {
		fmt.Fprintf(&md, " (`vgpu-bench suite`, %s, driver %s)", suiteMode(info), info.Driver)
	}
	md.WriteString(". Each report's Markdown has its configuration, every row and its notes.\n\n")
	md.WriteString("| benchmark | report | goals | driver | machine | commit | date |\n|---|---|---|---|---|---|---|\n")
	for _, e := range entries {
		fmt.Fprintf(&md, "| %s | [%s](%s) ([json](%s)) | %s | %s | %s, %d cores | %s | %s |\n", e.Benchmark,
			strings.TrimSuffix(e.File, ".json")+".md", strings.TrimSuffix(e.File, ".json")+".md", e.File, statusWord(e), e.Machine.Driver, e.Machine.CPUModel,
			e.Machine.Cores, commitOf(e.Machine), e.Machine.Date)
	}
	if len(info.Steps) > 0 {
		md.WriteString("\n## This suite run\n\n")
		lines, _ := suiteRunLines(info)
		for _, l := range lines {
			fmt.Fprintf(&md, "- %s\n", l)
		}
	}
	for _, e := range entries {
		writeEntryMarkdown(&md, e, plotsRel)
	}
	return md.String()
}

// indexHTML is index.html: index.md's content as a static page showing the
// SVG plots.
func indexHTML(now, plotsRel string, entries []IndexEntry, info IndexInfo) string {
	var h strings.Builder
	esc := html.EscapeString
	h.WriteString("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vgpu benchmark results</title>\n")
	h.WriteString("<style>body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em}table{border-collapse:collapse}" +
		"td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}.met{color:#070}.not{color:#b00;font-weight:bold}" +
		"img{max-width:100%;border:1px solid #eee;margin:.5em 0}</style></head><body>\n")
	fmt.Fprintf(&h, "<h1>vgpu benchmark results</h1>\n<p>Indexed %s from the %d reports in this directory", esc(now), len(entries))
	if len(info.Steps) > 0 {
		fmt.Fprintf(&h, " (vgpu-bench suite, %s, driver %s)", esc(suiteMode(info)), esc(info.Driver))
	}
	h.WriteString(".</p>\n<table><tr><th>benchmark</th><th>report</th><th>goals</th><th>driver</th><th>machine</th><th>commit</th><th>date</th></tr>\n")
	for _, e := range entries {
		md := strings.TrimSuffix(e.File, ".json") + ".md"
		fmt.Fprintf(&h, "<tr><td><a href=\"#%s\">%s</a></td><td><a href=\"%s\">%s</a> (<a href=\"%s\">json</a>)</td><td class=\"%s\">%s</td><td>%s</td><td>%s, %d cores</td><td>%s</td><td>%s</td></tr>\n",
			esc(e.File), esc(e.Benchmark), esc(md), esc(md), esc(e.File), statusClass(e), esc(statusWord(e)), esc(e.Machine.Driver),
			esc(e.Machine.CPUModel), e.Machine.Cores, esc(commitOf(e.Machine)), esc(e.Machine.Date))
	}
	h.WriteString("</table>\n")
	if len(info.Steps) > 0 {
		h.WriteString("<h2>This suite run</h2><ul>\n")
		lines, failed := suiteRunLines(info)
		for i, l := range lines {
			if failed[i] {
				fmt.Fprintf(&h, "<li class=\"not\">%s</li>\n", esc(l))
			} else {
				fmt.Fprintf(&h, "<li>%s</li>\n", esc(l))
			}
		}
		h.WriteString("</ul>\n")
	}
	for _, e := range entries {
		writeEntryHTML(&h, e, plotsRel)
	}
	h.WriteString("</body></html>\n")
	return h.String()
}

// statusClass is the CSS class of a report's goals: met, or not.
func statusClass(e IndexEntry) string {
	if e.AllMet != nil && !*e.AllMet {
		return "not"
	}
	return "met"
}

// writeEntryHTML writes one report's section of index.html.
func writeEntryHTML(h *strings.Builder, e IndexEntry, plotsRel string) {
	esc := html.EscapeString
	fmt.Fprintf(h, "<h2 id=\"%s\">%s — <span class=\"%s\">%s</span></h2>\n", esc(e.File), esc(e.Benchmark), statusClass(e), esc(statusWord(e)))
	fmt.Fprintf(h, "<p>From <a href=\"%s\">%s</a>: %s on %s (%s, %d cores), commit %s.</p>\n<ul>\n", esc(e.File), esc(e.File),
		esc(e.Machine.Driver), esc(e.Machine.Hostname), esc(e.Machine.CPUModel), e.Machine.Cores, esc(commitOf(e.Machine)))
	for _, l := range e.Headline {
		fmt.Fprintf(h, "<li>%s</li>\n", esc(l))
	}
	h.WriteString("</ul>\n")
	if len(e.NotMet) > 0 {
		h.WriteString("<p class=\"not\">Goals not met:</p><ul>\n")
		for _, w := range e.NotMet {
			fmt.Fprintf(h, "<li><code>%s</code></li>\n", esc(w))
		}
		h.WriteString("</ul>\n")
	}
	for _, p := range e.Plots {
		fmt.Fprintf(h, "<a href=\"%s/%s.svg\"><img src=\"%s/%s.svg\" alt=\"%s\"></a>\n", esc(plotsRel), esc(p.Name),
			esc(plotsRel), esc(p.Name), esc(p.Title))
	}
}

// PlotAndIndex draws the plots of every report in dir under plotsDir and
// writes dir/index.md and dir/index.html.
func PlotAndIndex(dir, plotsDir string, info IndexInfo) ([]Plot, error) {
	plots, err := PlotResults(dir, plotsDir)
	if err != nil {
		return plots, err
	}
	entries, err := ReadIndexEntries(dir, plots)
	if err != nil {
		return plots, err
	}
	rel, err := filepath.Rel(dir, plotsDir)
	if err != nil {
		rel = plotsDir
	}
	return plots, WriteIndex(dir, filepath.ToSlash(rel), entries, info)
}
