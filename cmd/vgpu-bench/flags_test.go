package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestQuickPresetExplicitFlagWins(t *testing.T) {
	for _, args := range [][]string{
		{"--quick", "--measure", "3s"},
		{"--measure", "3s", "--quick"},
	} {
		c := newBenchCmd("x", "", "x", io.Discard, io.Discard)
		warmup := c.fs.Duration("warmup", 2*time.Second, "")
		measure := c.fs.Duration("measure", 8*time.Second, "")
		quick := c.fs.Bool("quick", false, "")
		_, ok := c.parse(args)
		require.True(t, ok)
		require.NoError(t, c.quickPreset(*quick, "warmup", "500ms", "measure", "1.5s"))
		require.Equal(t, 500*time.Millisecond, *warmup, "%v: the preset where no flag was given", args)
		require.Equal(t, 3*time.Second, *measure, "%v: the explicit flag, not the preset", args)
	}

	c := newBenchCmd("x", "", "x", io.Discard, io.Discard)
	n := c.fs.Int("n", 5, "")
	_, ok := c.parse(nil)
	require.True(t, ok)
	require.NoError(t, c.quickPreset(false, "n", "1"))
	require.Equal(t, 5, *n, "no --quick: no preset")
	require.Error(t, c.quickPreset(true, "nosuch", "1"))
	require.Error(t, c.quickPreset(true, "n"))
	require.Error(t, c.quickPreset(true, "n", "x"))
}

// TestQuickKeepsExplicitFlags runs each command with --quick and one explicit
// flag out of range: the error (from the options' validation, before anything
// runs) shows the explicit value, and where it prints them, the preset's
// others. The context is cancelled beforehand so that a regression (the preset
// overriding the flag, which then validates) fails fast instead of measuring.
func TestQuickKeepsExplicitFlags(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"isolation", "--quick", "--measure", "100ms", "--out", ""}, "warmup 500ms (>= 0), measure 100ms (>= 500ms)"},
		{[]string{"isolation", "--measure", "100ms", "--quick", "--out", ""}, "warmup 500ms (>= 0), measure 100ms (>= 500ms)"},
		{[]string{"workload", "--quick", "--steps", "0", "--out", ""}, "rounds 3 and steps 0 must be >= 1"},
		{[]string{"elastic", "--quick", "--rounds", "0", "--out", ""}, "rounds 0 must be >= 1"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 1, run(ctx, tc.args, &stdout, &stderr), "%v: %s", tc.args, stderr.String())
		require.Contains(t, stderr.String(), tc.want, "%v", tc.args)
	}
}
