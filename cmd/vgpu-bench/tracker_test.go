package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTrackerHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"tracker", "--help"}, &stdout, &stderr))
	help := stdout.String()
	for _, want := range []string{"-opens", "-procs", "-holders", "-rounds", "-churn", "-cpu-window", "-json", "-out",
		"p99 <= 10 ms", "median <= 1000 ns", "eBPF below the procfs scanner"} {
		require.Contains(t, help, want)
	}
	stdout.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "tracker")
}

func TestTrackerBadArguments(t *testing.T) {
	for _, args := range [][]string{{"tracker", "--nosuch"}, {"tracker", "extra"}} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(context.Background(), args, &stdout, &stderr), "%v", args)
	}
	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"tracker", "--holders", "5", "--procs", "1"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "holders")
}
