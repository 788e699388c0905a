package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDaemonHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"daemon", "--help"}, &stdout, &stderr))
	help := stdout.String()
	for _, want := range []string{"-slices", "-allocs", "-json", "-out", "-ticks", "-tmp",
		"p99 <= 5 ms of CPU", "p99 <= 2 ms"} {
		require.Contains(t, help, want)
	}
	stdout.Reset()
	require.Equal(t, 2, run(context.Background(), nil, &stdout, &stderr))
	require.Contains(t, stderr.String(), "daemon")
}

func TestDaemonBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"daemon", "--nosuch"},
		{"daemon", "extra"},
		{"daemon", "--alloc-size", "lots"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(context.Background(), args, &stdout, &stderr), "%v", args)
		require.NotEmpty(t, stderr.String(), "%v", args)
	}
	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"daemon", "--slices", "0", "--allocs", "0"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "nothing to measure")
}

// A small tick-only run writes daemon-simgpu.{json,md} under --out.
func TestDaemonTickOnlyWritesReport(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"daemon", "--quiet", "--json", "--slices", "5", "--ticks", "3",
		"--slots", "16", "--allocs", "0", "--tmp", t.TempDir(), "--out", out}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	var rep struct {
		Benchmark string `json:"benchmark"`
		Tick      struct {
			Slices int `json:"slices"`
		} `json:"tick"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	require.Equal(t, "daemon", rep.Benchmark)
	require.Equal(t, 5, rep.Tick.Slices)
	require.FileExists(t, filepath.Join(out, "daemon-simgpu.json"))
	md, err := os.ReadFile(filepath.Join(out, "daemon-simgpu.md"))
	require.NoError(t, err)
	require.Contains(t, string(md), "Enforcer tick")
}
