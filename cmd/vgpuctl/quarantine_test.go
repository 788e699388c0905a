package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/internal/units"
)

// daemonAt runs an in-process vgpud on a 1 x 16 GiB node with its state under
// dir, VGPU_SOCKET pointing at it; the returned func stops it.
func daemonAt(t *testing.T, dir string) (*api.Client, func()) {
	t.Helper()
	cfg := daemon.DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Socket = filepath.Join(dir, "vgpud.sock")
	cfg.MetricsAddr = ""
	cfg.EnforcerInterval = units.Duration(10 * time.Millisecond)
	gpus := &fakeGPUs{devs: []devices.Device{{Index: 0, UUID: "GPU-00000000-0000-4000-8000-000000000000",
		Name: "Fake GPU", MemoryBytes: 16 << 30, NUMANode: -1}}}
	s, err := daemon.New(cfg, zap.NewNop(), daemon.WithGPUs(gpus))
	require.NoError(t, err)
	require.NoError(t, s.Start())
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
	}
	t.Cleanup(stop)
	t.Setenv("VGPU_SOCKET", cfg.Socket)
	return api.NewClient(cfg.Socket), stop
}

// quarantineBig makes slice "big" (12 GiB, guaranteed), corrupts its record
// and restarts vgpud; it returns the client of the new vgpud.
func quarantineBig(t *testing.T, dir string, alloc bool) (*api.Client, func()) {
	t.Helper()
	c, stop := daemonAt(t, dir)
	if alloc {
		_, err := c.Alloc(context.Background(), api.AllocRequest{ID: "big", MemoryBytes: 12 << 30, ComputePercent: 40})
		require.NoError(t, err)
	}
	stop()
	rec := filepath.Join(dir, "state", "slices", "big", store.RecordFile)
	require.NoError(t, os.WriteFile(rec, []byte("{"), 0o644))
	return daemonAt(t, dir)
}

func TestQuarantineCommands(t *testing.T) {
	dir := t.TempDir()
	c, stop := quarantineBig(t, dir, true)

	r := vgpuctl("quarantine", "list")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	require.Regexp(t, `^NAME\s+ID\s+HOLDING\s+DEVICES\s+COMPUTE\s+QOS\s+RESTORABLE\s+AGE\s+REASON`, lines[0])
	require.Regexp(t, `^big-\d+\s+big\s+budget\s+0:12GiB\s+40%\s+guaranteed\s+yes\s+\d+s\s+parse record`, lines[1])

	r = vgpuctl("quarantine", "list", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var qs []api.QuarantinedSlice
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &qs))
	require.Len(t, qs, 1)
	require.Equal(t, uint64(12<<30), qs[0].Devices[0].MemoryBytes)

	// The booking holds: 8 GiB more does not fit.
	r = vgpuctl("alloc", "--memory", "8Gi")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "does not fit")

	r = vgpuctl("quarantine", "restore", "big", "nope")
	require.Equal(t, 1, r.code)
	require.Equal(t, fmt.Sprintf("big %s\n", filepath.Join(dir, "state", "slices", "big")), r.stdout)
	require.Contains(t, r.stderr, "quarantine restore nope: quarantined slice nope: no such slice")
	r = vgpuctl("quarantine", "list")
	require.Equal(t, "no quarantined slices\n", r.stdout)
	r = vgpuctl("slices")
	require.Contains(t, r.stdout, "big")
	c.Close()

	// Again, and released this time: by its entry's name.
	stop()
	c, _ = quarantineBig(t, dir, false)
	defer c.Close()
	qs, err := c.Quarantine(context.Background())
	require.NoError(t, err)
	require.Len(t, qs, 1)
	r = vgpuctl("quarantine", "release", qs[0].Name)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "released "+qs[0].Name+"\n", r.stdout)
	require.Equal(t, 0, vgpuctl("alloc", "--memory", "16Gi").code, "all free again")
}

func TestQuarantineCommandUsage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	t.Setenv("VGPU_SOCKET", sock)
	for _, args := range [][]string{{"quarantine", "release"}, {"quarantine", "restore"}, {"quarantine", "list", "x"},
		{"quarantine", "bogus"}} {
		r := vgpuctl(args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
	}
	r := vgpuctl("quarantine")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "vgpuctl quarantine restore NAME|ID")
	for _, cmd := range []string{"list", "release", "restore"} {
		r := vgpuctl("quarantine", cmd, "--help")
		require.Equal(t, 0, r.code, cmd)
		require.Contains(t, r.stdout, "Usage:\n  vgpuctl quarantine "+cmd, cmd)
		require.Contains(t, r.stdout, "-socket", cmd)
	}
	require.Contains(t, vgpuctl("--help").stdout, "quarantine")
	for _, args := range [][]string{{"quarantine", "list"}, {"quarantine", "release", "x"}, {"quarantine", "restore", "x"}} {
		r := vgpuctl(args...)
		require.Equal(t, 1, r.code, "%v", args)
		require.Contains(t, r.stderr, "vgpud is not running at "+sock, "%v", args)
	}
}
