package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// TestAPI: the whole API over the unix socket, on an 8-GPU node: devices,
// alloc (placed, recorded, regions written), get, list, the bookings in
// devices, release.
func TestAPI(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(8, 80*GiB))
	c, ctx := ts.client, ts.ctx

	require.Equal(t, os.ModeSocket|0o600, fileMode(t, cfg.Socket), "socket mode")
	require.Equal(t, os.ModeDir|0o755, fileMode(t, filepath.Dir(cfg.Socket)), "socket dir mode")

	h, err := c.Health(ctx)
	require.NoError(t, err)
	require.Equal(t, "ok", h.Status)
	require.Equal(t, 8, h.Devices)
	require.Equal(t, "report", h.EnforcerMode)

	devs, err := c.Devices(ctx)
	require.NoError(t, err)
	require.Len(t, devs, 8)
	for i, d := range devs {
		require.Equal(t, i, d.Index)
		require.True(t, strings.HasPrefix(d.UUID, "GPU-"), d.UUID)
		require.NotZero(t, d.MemoryBytes)
		require.Zero(t, d.Slices)
	}

	s, err := c.Alloc(ctx, api.AllocRequest{ID: "job-1", MemoryBytes: 4 * GiB, ComputePercent: 25, DeviceCount: 2})
	require.NoError(t, err)
	require.Equal(t, "job-1", s.ID)
	require.Equal(t, filepath.Join(cfg.StateDir, "slices", "job-1"), s.Dir)
	require.Equal(t, api.QoSGuaranteed, s.QoS)
	require.Len(t, s.Devices, 2)
	require.False(t, s.CreatedAt.IsZero())

	// The regions are written with the slice's budget.
	sl, err := shm.OpenSlice(s.Dir)
	require.NoError(t, err)
	spec := sl.Budget.Spec()
	sl.Close()
	require.Equal(t, "job-1", spec.ID)
	require.Len(t, spec.Devices, 2)
	for i, d := range spec.Devices {
		require.Equal(t, s.Devices[i].UUID, d.UUID)
		require.Equal(t, 4*GiB, d.MemoryLimit)
		require.Equal(t, uint64(DefaultContextOverhead), d.ContextOverhead)
		require.Equal(t, uint32(2500), d.ComputeShareBP)
	}

	got, err := c.Get(ctx, "job-1")
	require.NoError(t, err)
	require.Equal(t, s.ID, got.ID)
	require.Equal(t, s.Devices, got.Devices)
	list, err := c.Slices(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)

	devs, err = c.Devices(ctx)
	require.NoError(t, err)
	booked := 0
	for _, d := range devs {
		if d.Slices == 1 {
			booked++
			require.Equal(t, 4*GiB, d.GuaranteedBytes)
			require.Equal(t, 25.0, d.ComputePercent)
		}
	}
	require.Equal(t, 2, booked)

	// A generated id.
	s2, err := c.Alloc(ctx, api.AllocRequest{MemoryPercent: 10, ComputePercent: 10})
	require.NoError(t, err)
	require.Regexp(t, `^s-[0-9a-f]{12}$`, s2.ID)

	require.NoError(t, c.Release(ctx, "job-1"))
	require.NoError(t, c.Release(ctx, s2.ID))
	_, err = os.Stat(s.Dir)
	require.ErrorIs(t, err, os.ErrNotExist, "released slice's directory")
	list, err = c.Slices(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	devs, err = c.Devices(ctx)
	require.NoError(t, err)
	for _, d := range devs {
		require.Zero(t, d.Slices)
		require.Zero(t, d.GuaranteedBytes)
	}
}

// TestAPIErrors: every refusal has its status and says why.
func TestAPIErrors(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(2, 16*GiB))
	c, ctx := ts.client, ts.ctx

	status := func(err error) int {
		t.Helper()
		var se *api.StatusError
		require.ErrorAs(t, err, &se)
		return se.StatusCode
	}

	_, err := c.Alloc(ctx, api.AllocRequest{MemoryBytes: GiB, MemoryPercent: 10})
	require.Equal(t, http.StatusBadRequest, status(err))
	require.Contains(t, err.Error(), "both")

	_, err = c.Alloc(ctx, api.AllocRequest{ID: "../etc", MemoryBytes: GiB})
	require.Equal(t, http.StatusBadRequest, status(err))
	require.Contains(t, err.Error(), "slice id")

	_, err = c.Alloc(ctx, api.AllocRequest{MemoryBytes: 128 * MiB})
	require.Equal(t, http.StatusBadRequest, status(err))
	require.Contains(t, err.Error(), "context_overhead")

	_, err = c.Alloc(ctx, api.AllocRequest{MemoryBytes: GiB, Owner: api.Owner{Kind: "pid"}})
	require.Equal(t, http.StatusBadRequest, status(err))
	require.Contains(t, err.Error(), "pid")

	_, err = c.Alloc(ctx, api.AllocRequest{MemoryBytes: GiB, Owner: api.Owner{Kind: "vm"}})
	require.Equal(t, http.StatusBadRequest, status(err))

	_, err = c.Alloc(ctx, api.AllocRequest{ID: "a", MemoryBytes: 10 * GiB, ComputePercent: 50})
	require.NoError(t, err)
	_, err = c.Alloc(ctx, api.AllocRequest{ID: "a", MemoryBytes: GiB})
	require.Equal(t, http.StatusConflict, status(err))

	// 10 GiB are guaranteed on one device; 12 GiB fit on neither the other
	// (after a second 10 GiB slice) nor this one.
	_, err = c.Alloc(ctx, api.AllocRequest{ID: "b", MemoryBytes: 10 * GiB, ComputePercent: 50})
	require.NoError(t, err)
	_, err = c.Alloc(ctx, api.AllocRequest{ID: "c", MemoryBytes: 12 * GiB, ComputePercent: 10})
	require.Equal(t, http.StatusUnprocessableEntity, status(err))
	var se *api.StatusError
	require.ErrorAs(t, err, &se)
	require.Len(t, se.Reasons, 2, "one reason per device: %v", se.Reasons)
	for _, r := range se.Reasons {
		require.Contains(t, r, "guaranteed memory free")
	}

	_, err = c.Get(ctx, "nope")
	require.True(t, api.IsNotFound(err), "%v", err)
	err = c.Release(ctx, "nope")
	require.True(t, api.IsNotFound(err), "%v", err)

	// Raw bodies: unknown fields and garbage are 400s, unknown routes 404s.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", cfg.Socket)
	}}}
	for body, want := range map[string]int{
		`{"memory_bytes": 1073741824, "colour": "red"}`: http.StatusBadRequest,
		`{"memory_bytes": `:                             http.StatusBadRequest,
		`{"memory_bytes": 1073741824} {}`:               http.StatusBadRequest,
	} {
		resp, err := hc.Post("http://vgpud/v1/slices", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, "%s -> %s", body, b)
		require.Contains(t, string(b), `"error"`)
	}
	resp, err := hc.Get("http://vgpud/v2/things")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// TestConcurrentAllocationsNeverOverbook: many clients at once; the
// guaranteed memory booked on a device never exceeds it, and every success is
// on disk.
func TestConcurrentAllocationsNeverOverbook(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(2, 16*GiB))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok []api.Slice
	refused := 0
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: 3 * GiB, ComputePercent: 1})
			mu.Lock()
			defer mu.Unlock()
			var se *api.StatusError
			switch {
			case err == nil:
				ok = append(ok, s)
			case errors.As(err, &se) && se.StatusCode == http.StatusUnprocessableEntity:
				refused++
			default:
				t.Errorf("alloc: %v", err)
			}
		}()
	}
	wg.Wait()
	require.Len(t, ok, 10, "5 slices of 3 GiB fit on each 16 GiB device")
	require.Equal(t, 54, refused)
	perDev := map[string]uint64{}
	for _, s := range ok {
		_, err := os.Stat(filepath.Join(s.Dir, "slice.json"))
		require.NoError(t, err)
		perDev[s.Devices[0].UUID] += s.Devices[0].MemoryBytes
	}
	devs, err := ts.client.Devices(ts.ctx)
	require.NoError(t, err)
	for _, d := range devs {
		require.LessOrEqual(t, d.GuaranteedBytes, d.MemoryBytes)
		require.Equal(t, perDev[d.UUID], d.GuaranteedBytes)
	}
}

// TestRestartRestoresSlices: slices survive a restart with their bookings; a
// slice whose owner died while vgpud was down is released at start; a record
// whose device is gone is kept but not booked.
func TestRestartRestoresSlices(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	gpus := newFakeGPUs(2, 16*GiB)
	ts := startServer(t, cfg, gpus)
	owner := startSleeper(t)
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "keep", MemoryBytes: 4 * GiB, ComputePercent: 30})
	require.NoError(t, err)
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "owned", MemoryBytes: 2 * GiB, ComputePercent: 30,
		Owner: api.Owner{Kind: api.OwnerPID, PID: owner.Process.Pid}})
	require.NoError(t, err)
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "on-gpu1", MemoryBytes: 2 * GiB, ComputePercent: 30,
		UUIDs: []string{gpus.devs[1].UUID}})
	require.NoError(t, err)
	ts.stop(t)

	// The owner dies while vgpud is down; GPU 1 disappears.
	owner.Process.Kill()
	owner.Wait()
	gpus2 := newFakeGPUs(1, 16*GiB)
	ts2 := startServer(t, cfg, gpus2)
	list, err := ts2.client.Slices(ts2.ctx)
	require.NoError(t, err)
	ids := []string{}
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	require.Equal(t, []string{"keep", "on-gpu1"}, ids)
	devs, err := ts2.client.Devices(ts2.ctx)
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.Equal(t, 4*GiB, devs[0].GuaranteedBytes, "only 'keep' is booked")
	require.Equal(t, 1, devs[0].Slices)
	// The unbooked record can still be released.
	require.NoError(t, ts2.client.Release(ts2.ctx, "on-gpu1"))
}

// TestOwnerDeathReleasesSlice: a pid-owned slice is released within a few
// ticks of its owner's death; an owner that is already dead is refused.
func TestOwnerDeathReleasesSlice(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(1, 16*GiB))
	owner := startSleeper(t)
	s, err := ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: GiB, ComputePercent: 10,
		Owner: api.Owner{Kind: api.OwnerPID, PID: owner.Process.Pid}})
	require.NoError(t, err)
	require.NotZero(t, s.Owner.StartTime, "vgpud records the owner's start time")

	time.Sleep(5 * time.Duration(cfg.EnforcerInterval))
	_, err = ts.client.Get(ts.ctx, s.ID)
	require.NoError(t, err, "a live owner keeps its slice")

	require.NoError(t, owner.Process.Kill())
	owner.Wait()
	eventually(t, 2*time.Second, "slice of a dead owner released", func() bool {
		_, err := ts.client.Get(ts.ctx, s.ID)
		return api.IsNotFound(err)
	})
	_, err = os.Stat(s.Dir)
	require.ErrorIs(t, err, os.ErrNotExist)

	// A dead pid, or a live pid with another start time (reused), is refused.
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: GiB, ComputePercent: 10,
		Owner: api.Owner{Kind: api.OwnerPID, PID: owner.Process.Pid}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "not running")
	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryBytes: GiB, ComputePercent: 10,
		Owner: api.Owner{Kind: api.OwnerPID, PID: os.Getpid(), StartTime: 1}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "not running")
}

// TestTopAndReclaim: top shows a process's charge as the loop saw it; when
// the process dies its charge returns within a few ticks.
func TestTopAndReclaim(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(1, 16*GiB))
	s, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "t", MemoryBytes: 2 * GiB, ComputePercent: 10})
	require.NoError(t, err)

	// A tenant process (a sleeper) holding 512 MiB, charged the way libvgpu does.
	proc := startSleeper(t)
	id, err := enforcer.ProcessIdentity(proc.Process.Pid)
	require.NoError(t, err)
	sl, err := shm.OpenSlice(s.Dir)
	require.NoError(t, err)
	defer sl.Close()
	slot, err := sl.Usage.ClaimSlot(id)
	require.NoError(t, err)
	require.True(t, sl.Usage.Charge(slot, 0, 512*MiB, 2*GiB))

	var u api.SliceUsage
	eventually(t, 2*time.Second, "top shows the process", func() bool {
		top, err := ts.client.Top(ts.ctx)
		require.NoError(t, err)
		require.Len(t, top, 1)
		u = top[0]
		return len(u.Processes) == 1 && u.Processes[0].HostPID == proc.Process.Pid
	})
	require.Equal(t, "t", u.Slice.ID)
	require.Equal(t, []uint64{512 * MiB}, u.UsedBytes)
	require.Equal(t, []uint64{512 * MiB}, u.PeakBytes)
	require.Equal(t, proc.Process.Pid, u.Processes[0].PID)
	require.Equal(t, []uint64{512 * MiB}, u.Processes[0].UsedBytes)

	require.NoError(t, proc.Process.Kill())
	proc.Wait()
	eventually(t, 2*time.Second, "the dead process's charge returned", func() bool {
		return sl.Usage.DeviceUsed(0) == 0
	})
	h, err := ts.client.Health(ts.ctx)
	require.NoError(t, err)
	require.False(t, h.LastTick.IsZero())
}

// TestBackstop: a process the driver sees holding more than its slice, with
// no slot (it bypassed libvgpu), attributed to the slice through its owner
// ancestry, is killed in enforce mode and only reported in report mode.
func TestBackstop(t *testing.T) {
	for _, mode := range []string{ModeEnforce, ModeReport} {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			cfg.EnforcerMode = mode
			gpus := newFakeGPUs(1, 16*GiB)
			var mu sync.Mutex
			var killed []int
			kill := func(pid int) error {
				mu.Lock()
				killed = append(killed, pid)
				mu.Unlock()
				return syscall.Kill(pid, syscall.SIGKILL)
			}
			ts := startServer(t, cfg, gpus, WithKill(kill))
			// Owned by this test process: the sleeper is its child.
			s, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "b", MemoryBytes: GiB, ComputePercent: 10,
				Owner: api.Owner{Kind: api.OwnerPID, PID: os.Getpid()}})
			require.NoError(t, err)
			rogue := startSleeper(t)
			gpus.setProcs(s.Devices[0].UUID, devices.ProcessMemory{HostPID: rogue.Process.Pid, UsedBytes: 3 * GiB})

			eventually(t, 2*time.Second, "top shows the rogue process", func() bool {
				top, err := ts.client.Top(ts.ctx)
				require.NoError(t, err)
				for _, p := range top[0].Processes {
					if p.HostPID == rogue.Process.Pid && len(p.DriverBytes) == 1 && p.DriverBytes[0] == 3*GiB {
						return true
					}
				}
				return false
			})
			if mode == ModeEnforce {
				eventually(t, 2*time.Second, "the rogue process killed", func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(killed) > 0
				})
				mu.Lock()
				require.Equal(t, rogue.Process.Pid, killed[0])
				mu.Unlock()
				err := rogue.Wait()
				require.Error(t, err)
				require.Contains(t, err.Error(), "killed")
			} else {
				time.Sleep(10 * time.Duration(cfg.EnforcerInterval))
				mu.Lock()
				require.Empty(t, killed, "report mode kills nothing")
				mu.Unlock()
				require.NoError(t, rogue.Process.Signal(syscall.Signal(0)), "still running")
			}
		})
	}
}

// TestMetricsEndpoint: /metrics serves vgpu_ metrics and /healthz says ok once
// the loop ticks.
func TestMetricsEndpoint(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(1, 16*GiB))
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "m", MemoryBytes: 2 * GiB, ComputePercent: 10})
	require.NoError(t, err)
	base := "http://" + ts.MetricsAddr()
	eventually(t, 2*time.Second, "/healthz ok", func() bool {
		resp, err := http.Get(base + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// Per-slice series appear once a tick has seen the slice.
	var body string
	eventually(t, 2*time.Second, "slice metrics on /metrics", func() bool {
		resp, err := http.Get(base + "/metrics")
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		body = string(b)
		return strings.Contains(body, `vgpu_slice_memory_limit_bytes{qos="guaranteed",slice="m"`)
	})
	for _, name := range []string{"vgpu_daemon_up 1", "vgpu_enforcer_ticks_total", "vgpu_device_memory_total_bytes{",
		"vgpu_slice_memory_used_bytes{", "vgpu_slices{qos=\"guaranteed\"} 1"} {
		require.Contains(t, body, name)
	}
}

// TestSocketAndLock: a stale socket is replaced, a live one (another vgpud)
// refused, a file that is not a socket never removed; the state dir is
// locked against a second vgpud.
func TestSocketAndLock(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	require.NoError(t, os.MkdirAll(filepath.Dir(cfg.Socket), 0o755))

	// A stale socket: bound, then its listener closed without unlinking.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	l.Close()
	ts := startServer(t, cfg, newFakeGPUs(1, 16*GiB))
	_, err = ts.client.Health(ts.ctx)
	require.NoError(t, err)

	// A second vgpud on the same state dir is refused.
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	_, err = New(cfg, log, WithGPUs(newFakeGPUs(1, 16*GiB)))
	require.ErrorContains(t, err, "in use by another vgpud")

	// Another state dir but the same socket: refused at Start.
	cfg2 := cfg
	cfg2.StateDir = filepath.Join(dir, "state2")
	s2, err := New(cfg2, log, WithGPUs(newFakeGPUs(1, 16*GiB)))
	require.NoError(t, err)
	require.ErrorContains(t, s2.Start(), "another vgpud is listening")
	require.NoError(t, s2.Shutdown(context.Background()))
	_, err = ts.client.Health(ts.ctx)
	require.NoError(t, err, "the first vgpud's socket survived")

	ts.stop(t)
	_, err = os.Lstat(cfg.Socket)
	require.ErrorIs(t, err, os.ErrNotExist, "socket removed on shutdown")

	// A regular file where the socket should be is an error, and stays.
	require.NoError(t, os.WriteFile(cfg.Socket, []byte("mine"), 0o644))
	s3, err := New(cfg, log, WithGPUs(newFakeGPUs(1, 16*GiB)))
	require.NoError(t, err)
	require.ErrorContains(t, s3.Start(), "not a socket")
	require.NoError(t, s3.Shutdown(context.Background()))
	data, err := os.ReadFile(cfg.Socket)
	require.NoError(t, err)
	require.Equal(t, "mine", string(data))
}

// TestClientDaemonDown: a client of a socket nobody serves says vgpud is not
// running, naming the socket.
func TestClientDaemonDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := api.NewClient(sock).Health(context.Background())
	require.ErrorIs(t, err, api.ErrNotRunning)
	require.Contains(t, err.Error(), "vgpud is not running at "+sock+": ")
}

// TestNoGPUs: New fails clearly when the GPUs list none or NVML is missing.
func TestNoGPUs(t *testing.T) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	_, err := New(testConfig(t.TempDir()), log, WithGPUs(newFakeGPUs(0, 0)))
	require.ErrorIs(t, err, devices.ErrNoDevices)

	cfg := testConfig(t.TempDir())
	cfg.NVMLLibrary = filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	_, err = New(cfg, log)
	require.ErrorContains(t, err, "no GPUs to manage")
	require.ErrorContains(t, err, cfg.NVMLLibrary)
}

// TestOnMockNVML: the server over go-nvml's DGX H100 mock (through package
// devices): eight H100s discovered, a two-GPU slice placed and reported.
func TestOnMockNVML(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, devices.NewFromInterface(dgxh100.New()))
	devs, err := ts.client.Devices(ts.ctx)
	require.NoError(t, err)
	require.Len(t, devs, 8)
	for _, d := range devs {
		require.Contains(t, d.Name, "H100")
		require.Greater(t, d.MemoryBytes, 70*GiB)
	}
	s, err := ts.client.Alloc(ts.ctx, api.AllocRequest{MemoryPercent: 50, ComputePercent: 50, DeviceCount: 2, Placement: api.PlacementSpread})
	require.NoError(t, err)
	require.Len(t, s.Devices, 2)
	require.Equal(t, devs[0].MemoryBytes/2&^(MiB-1), s.Devices[0].MemoryBytes)
	eventually(t, 2*time.Second, "a tick", func() bool {
		h, err := ts.client.Health(ts.ctx)
		require.NoError(t, err)
		return !h.LastTick.IsZero()
	})
	top, err := ts.client.Top(ts.ctx)
	require.NoError(t, err)
	require.Len(t, top, 1)
}
