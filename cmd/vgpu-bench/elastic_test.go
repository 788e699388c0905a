package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestElasticHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"elastic", "--help"}, &stdout, &stderr))
	help := stdout.String()
	for _, want := range []string{"-concurrency", "-rounds", "-quick", "-reclaims", "-settle", "-fresh-row",
		"-tmpfs-compare", "-json", "-out", "(default \"bench/results\")", "p99 <= 15 ms"} {
		require.Contains(t, help, want)
	}
	stdout.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "elastic")
}

func TestElasticBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"elastic", "--nosuch"},
		{"elastic", "extra"},
		{"elastic", "--concurrency", "x"},
		{"elastic", "--base", "lots"},
		{"elastic", "--max", "lots"},
		{"elastic", "--alloc", "lots"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(context.Background(), args, &stdout, &stderr), "%v", args)
		require.NotEmpty(t, stderr.String(), "%v", args)
	}
	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"elastic", "--concurrency", "", "--reclaims", "0", "--out", ""},
		&stdout, &stderr))
	require.Contains(t, stderr.String(), "nothing to measure")
}
