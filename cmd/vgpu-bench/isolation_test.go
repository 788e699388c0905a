package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIsolationHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"isolation", "--help"}, &stdout, &stderr))
	help := stdout.String()
	for _, want := range []string{"-victims", "-aggressors", "-configs", "-churn", "-quick", "-victim-share",
		"-json", "-out", "(default \"bench/results\")", "FIFO timeline", "-compare"} {
		require.Contains(t, help, want)
	}
	stdout.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "isolation")
}

func TestIsolationBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"isolation", "--nosuch"},
		{"isolation", "extra"},
		{"isolation", "--aggressors", "x"},
		{"isolation", "--compare", "other=/no/such.so"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(context.Background(), args, &stdout, &stderr), "%v", args)
		require.NotEmpty(t, stderr.String(), "%v", args)
	}
	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"isolation", "--victims", "nosuch", "--out", ""},
		&stdout, &stderr))
	require.Contains(t, stderr.String(), "unknown victim")
}
