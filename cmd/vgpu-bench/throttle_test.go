package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestThrottleHelpAndBadArguments(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"throttle", "--help"}, &out, &errb))
	require.Contains(t, errb.String(), "±2 points")
	require.Contains(t, errb.String(), ">= 95%")

	require.Contains(t, errb.String(), "--controller inproc")
	require.Contains(t, errb.String(), "churn")

	for _, args := range [][]string{
		{"throttle", "--controller", "inproc", "--groups", "solo"},
		{"throttle", "--controller", "inproc", "--workloads", "spin"},
		{"throttle", "--controller", "inproc", "--tick", "1h"},
		{"throttle", "--controller", "elsewhere"},
		{"throttle", "--cells", "solo"},
		{"throttle", "--quick"}, // --root has no build
		{"throttle", "--driver", "gpu"},
		{"throttle", "--driver", "real", "--controller", "inproc", "--measure", "guess"},
		{"throttle", "--driver", "real", "--short-kernel-ms", "30"}, // longer than the long one
		{"throttle", "--driver", "real", "--cells", "eight"},        // a cell of the simulated node
		{"throttle", "--scale", "50"},
	} {
		out.Reset()
		errb.Reset()
		require.Equal(t, 1, run(context.Background(), append(args, "--root", t.TempDir()), &out, &errb), "%v", args)
		require.Contains(t, errb.String(), "vgpu-bench throttle:")
	}
	require.Equal(t, 2, run(context.Background(), []string{"throttle", "extra"}, &out, &errb))
}

func TestWriteNamedReport(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, writeReport(dir, "throttle-simgpu", []byte("{}\n"), "# md\n"))
	b, err := os.ReadFile(filepath.Join(dir, "throttle-simgpu.md"))
	require.NoError(t, err)
	require.Equal(t, "# md\n", string(b))
	p := filepath.Join(dir, "sub", "x.json")
	require.NoError(t, writeReport(p, "ignored", []byte("{}\n"), "# md\n"))
	_, err = os.Stat(filepath.Join(dir, "sub", "x.md"))
	require.NoError(t, err)
}
