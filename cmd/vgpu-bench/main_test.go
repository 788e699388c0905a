package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHelpNamesEveryGoal(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"overhead", "--help"}, &stdout, &stderr)
	require.Equal(t, 0, code)
	help := stdout.String()
	for _, want := range []string{"--driver", "--json", "-out", "-iters", "-rounds", "-procs", "-threads",
		"<= 15 ns", "<= 60 ns", "<= 2 ms", "growth"} {
		require.Contains(t, help, want)
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"overhead", "--nosuch"},
		{"overhead", "extra"},
		{"overhead", "--threads", "one"},
		{"overhead", "--procs", "1,x"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(context.Background(), args, &stdout, &stderr), "%v", args)
		require.NotEmpty(t, stderr.String(), "%v", args)
	}
}

func TestBadDriverFailsClearly(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"overhead", "--driver", "cuda", "--quiet"}, &stdout, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), `driver "cuda"`)
	require.Empty(t, stdout.String())
}

func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, writeReport(dir, "overhead-simgpu", []byte("{}\n"), "# md\n"))
	require.FileExists(t, filepath.Join(dir, "overhead-simgpu.json"))
	require.FileExists(t, filepath.Join(dir, "overhead-simgpu.md"))

	require.NoError(t, writeReport(dir, "overhead-real", []byte("{}\n"), "# md\n"))
	require.FileExists(t, filepath.Join(dir, "overhead-real.json"))

	named := filepath.Join(dir, "sub", "x.json")
	require.NoError(t, writeReport(named, "overhead-real", []byte("{\"a\":1}\n"), "# x\n"))
	b, err := os.ReadFile(filepath.Join(dir, "sub", "x.md"))
	require.NoError(t, err)
	require.Equal(t, "# x\n", string(b))
}

func TestParseInts(t *testing.T) {
	xs, err := parseInts(" 1, 8 ,32,")
	require.NoError(t, err)
	require.Equal(t, []int{1, 8, 32}, xs)
	xs, err = parseInts("")
	require.NoError(t, err)
	require.Empty(t, xs)
	require.Equal(t, "1,2", joinInts([]int{1, 2}))
}
