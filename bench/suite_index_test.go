package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIndexListsEveryBenchmark: index.md and index.html list each fixture
// report with its goal status, and link its plots.
func TestIndexListsEveryBenchmark(t *testing.T) {
	dir := t.TempDir()
	writeFixtures(t, dir)
	plots, err := PlotAndIndex(dir, filepath.Join(dir, "plots"), IndexInfo{
		Steps: []SuiteStep{{Benchmark: "overhead", Seconds: 3}, {Benchmark: "tracker", Skipped: "needs root"}}, Quick: true, Driver: "sim"})
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "index.md"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ // benchmark: its status in the fixtures
		"overhead": "all met", "daemon": "all met", "elastic": "all met", "runtime": "all met",
		"throttle": "all met", "tracker": "NOT met", "isolation": "NOT met", "workload": "all met",
	}
	for b, st := range want {
		row := ""
		for _, l := range strings.Split(string(md), "\n") {
			if strings.HasPrefix(l, "| "+b+" |") {
				row = l
			}
		}
		if row == "" {
			t.Errorf("index.md has no row for %s", b)
		} else if !strings.Contains(row, st) {
			t.Errorf("index.md row for %s lacks %q: %s", b, st, row)
		}
		if !strings.Contains(string(md), "## "+b+" — "+st) {
			t.Errorf("index.md has no section for %s saying %q", b, st)
		}
		if !strings.Contains(string(h), ">"+b+"</a>") {
			t.Errorf("index.html does not list %s", b)
		}
	}
	for _, s := range []string{"tracker: skipped (needs root)", "commit abc1234", "`latency[0] (what=open, tracker=ebpf)`",
		"`rows[1] (victim=latency, aggressors=3, aggressor=churn, config=vgpu)`",
		"- latency victim next to 3 churn aggressor(s), step rate (p99) vs alone: vgpu 0.50× (p99 4.00×): NOT met; " +
			"bare 0.01× (p99 5000.00×)",
		"- vgpu-mem: +0.08 % median step (+1.00 µs; p99 +0.0 %; goal ≤ 0.5 %: met)"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("index.md lacks %q", s)
		}
	}
	for _, p := range plots {
		if !strings.Contains(string(md), "plots/"+p.Name+".png") || !strings.Contains(string(h), "plots/"+p.Name+".svg") {
			t.Errorf("plot %s not linked from the index", p.Name)
		}
	}
}

// TestIndexTopLevelGoal: a report whose one "met" is at its top level (runtime)
// names it as the report's goal, not as an empty row or its config object.
func TestIndexTopLevelGoal(t *testing.T) {
	var got []string
	walkGoals(map[string]any{"benchmark": "runtime", "met": false, "config": map[string]any{"creates": 5.0}},
		"", func(w string, ok bool) { got = append(got, w) })
	if len(got) != 1 || got[0] != "the report's goal" {
		t.Fatalf("got %q", got)
	}
}

// TestSuiteRunKeptByARedraw: the suite's record written beside the reports is
// read back and shown in the index (run time, commit, load, steps), so a later
// `vgpu-bench plot` keeps it; a directory without one reads as none.
func TestSuiteRunKeptByARedraw(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ReadSuiteRun(dir); ok || err != nil {
		t.Fatalf("empty dir: ok %v, err %v", ok, err)
	}
	writeFixtures(t, dir)
	info := IndexInfo{Steps: []SuiteStep{{Benchmark: "overhead", Seconds: 7}, {Benchmark: "daemon", Err: "exit status 1: x"}},
		Driver: "sim", Commit: "abc1234", Started: "2026-01-01T00:00:00Z", Seconds: 560, LoadStart: "0.88 1.44 2.25",
		LoadEnd: "1.04 1.50 1.90"}
	if err := WriteSuiteRun(dir, info); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadSuiteRun(dir)
	if err != nil || !ok {
		t.Fatalf("ok %v, err %v", ok, err)
	}
	if _, err := PlotAndIndex(dir, filepath.Join(dir, "plots"), got); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "index.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"(`vgpu-bench suite`, full, driver sim)", "- started 2026-01-01T00:00:00Z, 560 s in all; every report records commit abc1234",
		"load average (1, 5, 15 min): 0.88 1.44 2.25 at the start, 1.04 1.50 1.90 at the end", "- overhead: ran in 7 s",
		"- daemon: FAILED after 0 s (exit status 1: x)"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("index.md lacks %q", s)
		}
	}
	if strings.Contains(string(md), "suite-run") {
		t.Error("the suite's record is listed as a report")
	}
}
