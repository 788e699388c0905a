package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWorkloadHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"workload", "--help"}, &stdout, &stderr))
	help := stdout.String()
	for _, want := range []string{"-compare", "-quick", "-rounds", "-steps", "-ns-per-block", "-json",
		"(default \"bench/results\")", "<= 0.5 %"} {
		require.Contains(t, help, want)
	}
	stdout.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "workload")
	stdout.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"overhead", "--help"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "-compare")
}

func TestWorkloadBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"workload", "--nosuch"},
		{"workload", "extra"},
		{"workload", "--compare", "nolib"},
		{"workload", "--compare", "x=/no/such/lib.so"},
		{"overhead", "--compare", "x=/no/such/lib.so"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(context.Background(), args, &stdout, &stderr), "%v", args)
		require.NotEmpty(t, stderr.String(), "%v", args)
	}
}
