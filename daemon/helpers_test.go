package daemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/internal/units"
)

const (
	MiB = uint64(1) << 20
	GiB = uint64(1) << 30
)

// fakeGPUs is a GPUs whose driver figures the test sets.
type fakeGPUs struct {
	mu     sync.Mutex
	devs   []devices.Device
	procs  map[string][]devices.ProcessMemory
	util   map[string]uint32
	closed bool
}

func newFakeGPUs(n int, mem uint64) *fakeGPUs {
	f := &fakeGPUs{procs: map[string][]devices.ProcessMemory{}, util: map[string]uint32{}}
	for i := 0; i < n; i++ {
		f.devs = append(f.devs, devices.Device{
			Index:       i,
			UUID:        fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", i+1, i+1),
			Name:        "Fake GPU",
			MemoryBytes: mem,
			Minor:       i,
			PCIBusID:    fmt.Sprintf("00000000:%02x:00.0", i+1),
			NUMANode:    -1,
		})
	}
	return f
}

func (f *fakeGPUs) Devices() ([]devices.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]devices.Device(nil), f.devs...), nil
}

func (f *fakeGPUs) Processes(uuid string) ([]devices.ProcessMemory, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]devices.ProcessMemory(nil), f.procs[uuid]...), nil
}

func (f *fakeGPUs) Utilization(uuid string) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.util[uuid], nil
}

func (f *fakeGPUs) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeGPUs) setProcs(uuid string, p ...devices.ProcessMemory) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs[uuid] = p
}

// testConfig is a config for a server under dir: a fast loop, metrics on a
// free loopback port.
func testConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Socket = filepath.Join(dir, "run", "vgpud.sock")
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.EnforcerInterval = units.Duration(10 * time.Millisecond)
	cfg.LogLevel = "debug"
	// Slices' CDI specs stay in the test's dir (never the host's /var/run/cdi).
	cfg.CDIDir = filepath.Join(dir, "cdi")
	cfg.CDISpecDirs = []string{cfg.CDIDir}
	return cfg
}

// testServer is a running in-process vgpud.
type testServer struct {
	*Server
	cfg    Config
	client *api.Client
	ctx    context.Context
}

// startServer starts a server with cfg and gpus, stopped when the test ends.
func startServer(t *testing.T, cfg Config, gpus GPUs, opts ...Option) *testServer {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	s, err := New(cfg, log, append([]Option{WithGPUs(gpus)}, opts...)...)
	require.NoError(t, err)
	require.NoError(t, s.Start())
	ts := &testServer{Server: s, cfg: cfg, client: api.NewClient(cfg.Socket), ctx: context.Background()}
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, ts.Shutdown(ctx))
	ts.client.Close()
}

// eventually polls cond every few ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return fi.Mode()
}

// ownerFor resolves a pid owner the way the server does.
func ownerFor(t *testing.T, pid int) api.Owner {
	t.Helper()
	o := api.Owner{Kind: api.OwnerPID, PID: pid}
	require.NoError(t, resolveOwner(&o))
	return o
}

// startSleeper starts a child process that lives until the test kills it or ends.
func startSleeper(t *testing.T) *exec.Cmd { return testproc.Sleeper(t, "") }
