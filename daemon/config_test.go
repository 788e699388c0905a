package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(data), 0o644))
	return path
}

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	require.NoError(t, cfg.Validate())
	require.Equal(t, "/var/lib/vgpu", cfg.StateDir)
	require.Equal(t, "/run/vgpu/vgpud.sock", cfg.Socket)
	require.Equal(t, "127.0.0.1:9410", cfg.MetricsAddr)
	require.Equal(t, "binpack", cfg.Placement)
	require.Equal(t, "report", cfg.EnforcerMode)
	require.Equal(t, 50*time.Millisecond, time.Duration(cfg.EnforcerInterval))
	require.Equal(t, Size(256<<20), cfg.ContextOverhead)
	require.Equal(t, "", cfg.NVMLLibrary)
	require.Equal(t, api.ComputePolicyCap, cfg.ComputePolicy)
}

// TestLoadConfigFile: keys in the file replace defaults, absent keys keep
// them; sizes and durations take strings or numbers.
func TestLoadConfigFile(t *testing.T) {
	path := writeFile(t, filepath.Join(t.TempDir(), "vgpud.json"), `{
		"state_dir": "/srv/vgpu",
		"enforcer_mode": "enforce",
		"enforcer_interval": "20ms",
		"context_overhead": "300MiB",
		"backstop_tolerance": 1048576,
		"metrics_addr": "",
		"compute_policy": "share"
	}`)
	cfg := DefaultConfig()
	require.NoError(t, LoadConfigFile(path, &cfg))
	require.NoError(t, cfg.Validate())
	want := DefaultConfig()
	want.StateDir = "/srv/vgpu"
	want.EnforcerMode = "enforce"
	want.EnforcerInterval = units.Duration(20 * time.Millisecond)
	want.ContextOverhead = Size(300 << 20)
	want.BackstopTolerance = Size(1 << 20)
	want.MetricsAddr = ""
	want.ComputePolicy = api.ComputePolicyShare
	require.Equal(t, want, cfg)

	// The example in deploy/ loads and is valid.
	cfg = DefaultConfig()
	require.NoError(t, LoadConfigFile("../deploy/vgpud.json", &cfg))
	require.NoError(t, cfg.Validate())

	// Round trip: a config marshalled to JSON loads back the same.
	data, err := json.Marshal(want)
	require.NoError(t, err)
	path2 := writeFile(t, filepath.Join(t.TempDir(), "rt.json"), string(data))
	got := Config{}
	require.NoError(t, LoadConfigFile(path2, &got))
	require.Equal(t, want, got)
}

// TestLoadConfigFileErrors: each mistake names the key (or line) and what was wanted.
func TestLoadConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range []struct{ body, want string }{
		{`{"state_dri": "/x"}`, `unknown key "state_dri"`},
		{`{"enforcer_interval": "fast"}`, `key "enforcer_interval": duration "fast"`},
		{`{"context_overhead": "lots"}`, `key "context_overhead"`},
		{`{"socket": 5}`, `key "socket": want a JSON value for a string, got a JSON number`},
		{"{\n\"socket\": \"/x\",\n}", "line 3"},
		{`{} {}`, "more than one JSON value"},
		{`[]`, "want a JSON object"},
	} {
		path := writeFile(t, filepath.Join(dir, strconv.Itoa(i)+".json"), tc.body)
		cfg := DefaultConfig()
		err := LoadConfigFile(path, &cfg)
		require.Error(t, err, tc.body)
		require.Contains(t, err.Error(), tc.want, tc.body)
		require.Contains(t, err.Error(), path)
	}
	err := LoadConfigFile(filepath.Join(dir, "missing.json"), &Config{})
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestValidate: every bad setting is reported, all at once, by key.
func TestValidate(t *testing.T) {
	cfg := Config{
		StateDir:          "relative/dir",
		Socket:            "",
		MetricsAddr:       "9400",
		Placement:         "random",
		EnforcerMode:      "kill",
		EnforcerInterval:  units.Duration(time.Hour),
		ContextOverhead:   Size(100 << 30),
		BackstopTolerance: Size(100 << 30),
		LogFormat:         "xml",
		LogLevel:          "loud",
		ComputePolicy:     "burst",
	}
	err := cfg.Validate()
	require.Error(t, err)
	for _, key := range []string{"state_dir", "socket", "metrics_addr", "placement", "enforcer_mode",
		"enforcer_interval", "context_overhead", "backstop_tolerance", "log_format", "log_level",
		`compute_policy "burst": want cap or share (default cap)`} {
		require.Contains(t, err.Error(), key)
	}
	cfg = DefaultConfig()
	cfg.Socket = "/" + strings.Repeat("s", 120)
	require.ErrorContains(t, cfg.Validate(), "at most 107")
}
