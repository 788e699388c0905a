package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelp(t *testing.T) {
	code, out, _ := runCLI("--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "vgpu-sim init")
	require.Contains(t, out, "VGPU_SIM_STATE")
	code, out, _ = runCLI("help", "init")
	require.Equal(t, 0, code)
	require.Contains(t, out, "--ns-per-block")
	code, out, _ = runCLI("init", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "--context-memory")
	code, out, _ = runCLI("status", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, out, "--json")
	code, _, errOut := runCLI()
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Usage")
}

func TestInitAndStatus(t *testing.T) {
	state := filepath.Join(t.TempDir(), "node")
	code, out, errOut := runCLI("init", "--state", state, "--devices", "2", "--memory", "16GiB", "--sms", "8",
		"--ns-per-block", "500", "--context-memory", "128MiB", "--max-backlog", "250ms", "--nvml-sample-period", "50ms")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "2 device(s) x 16GiB")
	require.Contains(t, out, "device queue depth (max backlog) 250ms, NVML sample period 50ms")

	code, out, errOut = runCLI("status", "--state", state)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "device queue depth (max backlog) 250ms, NVML sample period 50ms")
	require.Contains(t, out, "QUEUED")
	require.Contains(t, out, "NVIDIA H100 80GB HBM3 (simulated)")
	require.Contains(t, out, "16GiB")
	require.Contains(t, out, "(no processes)")

	code, out, errOut = runCLI("status", "--state", state, "--json")
	require.Equal(t, 0, code, errOut)
	var st simgpu.NodeStatus
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Devices, 2)
	require.Equal(t, uint64(16<<30), st.Devices[1].Total)
	require.Equal(t, uint64(500), st.NsPerBlock)
	require.Equal(t, uint64(128<<20), st.ContextMemory)
	require.Equal(t, uint64(250e6), st.MaxBacklogNs)
	require.Equal(t, uint64(50e6), st.SamplePeriodNs)

	// An existing node is refused without --force, replaced with it.
	code, _, errOut = runCLI("init", "--state", state, "--memory", "1G")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "already exists")
	code, _, errOut = runCLI("init", "--state", state, "--memory", "1G", "--force")
	require.Equal(t, 0, code, errOut)
}

func TestInitErrors(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "node")
	cases := []struct {
		args []string
		want string
		code int
	}{
		{[]string{"init", "--memory", "1G"}, "--state FILE is required", 2},
		{[]string{"init", "--state", state}, "--memory SIZE is required", 2},
		{[]string{"init", "--state", state, "--memory", "lots"}, "invalid value", 2},
		{[]string{"init", "--state", state, "--memory", "1G", "--devices", "0"}, "devices must be 1..16", 1},
		{[]string{"init", "--state", state, "--memory", "1G", "--sms", "0"}, "sms must be >= 1", 1},
		{[]string{"init", "--state", state, "--memory", "1G", "--ns-per-block", "0"}, "--ns-per-block must be > 0", 2},
		{[]string{"init", "--state", state, "--memory", "1G", "--max-backlog", "1h"}, "max backlog", 1},
		{[]string{"init", "--state", state, "--memory", "1G", "--nvml-sample-period", "0"}, "--nvml-sample-period must be > 0", 2},
		{[]string{"init", "--state", state, "--memory", "1G", "--nvml-sample-period", "2s"}, "nvml sample period must be in", 1},
		{[]string{"init", "--state", state, "--memory", "1G", "--nvml-sample-period", "10ms"}, "more than 52 nvml sample periods", 1},
		{[]string{"init", "--state", state, "--memory", "1G", "--device-nodes", "/dev/x"}, "%d", 1},
		{[]string{"init", "--state", state, "--memory", "1G", "extra"}, "unexpected argument", 2},
		{[]string{"init", "--state", state, "--memory", "1G", "--bogus"}, "flag provided but not defined", 2},
		{[]string{"status"}, "--state FILE is required", 2},
		{[]string{"status", "--state", filepath.Join(dir, "missing")}, "no such file", 1},
		{[]string{"frobnicate"}, "unknown command", 2},
	}
	for _, c := range cases {
		code, _, errOut := runCLI(c.args...)
		require.Equal(t, c.code, code, "%v: %s", c.args, errOut)
		require.Contains(t, errOut, c.want, "%v", c.args)
		require.Contains(t, errOut, "vgpu-sim", "%v: errors name the program", c.args)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "failed inits leave nothing behind")
}
