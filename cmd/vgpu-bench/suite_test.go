package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSuiteKnowsItsCommands(t *testing.T) {
	for _, n := range []string{"overhead", "daemon", "throttle", "runtime", "tracker", "elastic"} {
		if !hasCommand(n) {
			t.Errorf("hasCommand(%q) = false", n)
		}
	}
	if hasCommand("no-such-benchmark") {
		t.Error("hasCommand of an unknown command")
	}
	if !hasFlag(commandFlags(context.Background(), "elastic"), "quick") {
		t.Error("elastic --help does not show --quick")
	}
	if hasFlag(commandFlags(context.Background(), "daemon"), "quick") {
		t.Error("daemon --help shows --quick")
	}
}

func TestSuiteNeedsOut(t *testing.T) {
	var out, errb strings.Builder
	if code := run(context.Background(), []string{"suite"}, &out, &errb); code != 2 {
		t.Fatalf("suite without --out: status %d, want 2 (%s)", code, errb.String())
	}
}

// TestPlotCommand draws the plots and the index of one small report.
func TestPlotCommand(t *testing.T) {
	dir := t.TempDir()
	js := `{"benchmark":"runtime","machine":{"hostname":"h","cpu_model":"c","cores":2,"driver":"simgpu","date":"d","commit":"abc"},
"runc_create_ms":{"n":5,"median":40,"p99":60},"passthrough_create_ms":{"n":5,"median":41,"p99":61},
"vgpu_create_ms":{"n":5,"median":45,"p99":70},"added_median_ms":5,"goal_added_median_ms":20,"met":true,"all_met":true}`
	if err := os.WriteFile(filepath.Join(dir, "runtime-simgpu.json"), []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if code := run(context.Background(), []string{"plot", "--in", dir}, &out, &errb); code != 0 {
		t.Fatalf("plot: status %d: %s", code, errb.String())
	}
	for _, f := range []string{"plots/runtime-create-simgpu.svg", "plots/runtime-create-simgpu.png", "index.md", "index.html"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Size() == 0 {
			t.Errorf("%s: missing or empty (%v)", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "index.md"))
	if !strings.Contains(string(md), "| runtime |") || !strings.Contains(string(md), "all met") {
		t.Errorf("index.md:\n%s", md)
	}
}
