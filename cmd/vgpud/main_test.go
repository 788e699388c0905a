package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &out, &errb))
	for _, want := range []string{
		"Config file (JSON", `"enforcer_interval": "50ms"`, "-state-dir", "(default \"/var/lib/vgpu\")",
		"-socket", "/run/vgpu/vgpud.sock", "-metrics-addr", "127.0.0.1:9410", "-placement", "binpack",
		"-enforcer-mode", "report", "-enforcer-interval", "-context-overhead", "256MiB", "-nvml-lib",
		"-log-format", "-log-level", "-config", "-compute-policy", "(default \"cap\")", `"compute_policy": "cap"`,
	} {
		require.Contains(t, out.String(), want)
	}
	require.Empty(t, errb.String())
}

// TestConfigPrecedence: defaults < config file < flags.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "vgpud.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"state_dir": "/from/file", "enforcer_mode": "enforce",
		"placement": "spread", "context_overhead": "300MiB"}`), 0o644))
	cfg, code, err := loadConfig([]string{"--config", file, "--placement", "binpack",
		"--enforcer-interval", "20ms", "--socket", "rel/vgpud.sock", "--log-format", "console",
		"--compute-policy", "share"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 0, code)
	want := daemon.DefaultConfig()
	want.StateDir = "/from/file"
	want.EnforcerMode = "enforce"
	want.Placement = "binpack"
	want.ContextOverhead = 300 << 20
	want.EnforcerInterval = units.Duration(20 * time.Millisecond)
	wd, err := os.Getwd()
	require.NoError(t, err)
	want.Socket = filepath.Join(wd, "rel/vgpud.sock")
	want.LogFormat = "console"
	want.ComputePolicy = api.ComputePolicyShare
	require.Equal(t, want, cfg)

	cfg, _, err = loadConfig(nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, daemon.DefaultConfig(), cfg)
}

// TestBadCommandLines: exit 2 with a message naming the problem.
func TestBadCommandLines(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"enforcer_mod": "off"}`), 0o644))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--enforcer-mode", "kill"}, `enforcer_mode "kill"`},
		{[]string{"--compute-policy", "burst"}, `compute_policy "burst": want cap or share`},
		{[]string{"--enforcer-interval", "soon"}, "--enforcer-interval"},
		{[]string{"--context-overhead", "big"}, "--context-overhead"},
		{[]string{"--metrics-addr", "nowhere"}, "metrics_addr"},
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--config", bad}, `unknown key "enforcer_mod"`},
		{[]string{"--config", filepath.Join(dir, "missing.json")}, "no such file"},
	} {
		var out, errb bytes.Buffer
		require.Equal(t, 2, run(context.Background(), tc.args, &out, &errb), "%v", tc.args)
		require.Contains(t, errb.String(), tc.want, "%v", tc.args)
	}
}

// TestNoNVML: without an NVML library vgpud exits 1 and says so.
func TestNoNVML(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--state-dir", filepath.Join(dir, "state"),
		"--socket", filepath.Join(dir, "sock"), "--nvml-lib", filepath.Join(dir, "libnvidia-ml.so.1"),
		"--log-level", "error"}, &out, &errb)
	require.Equal(t, 1, code)
	require.Contains(t, errb.String(), "vgpud: no GPUs to manage: open NVML library "+filepath.Join(dir, "libnvidia-ml.so.1"))
}
