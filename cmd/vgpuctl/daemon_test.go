package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/internal/units"
)

// fakeGPUs is a node of n identical GPUs with no driver processes.
type fakeGPUs struct{ devs []devices.Device }

func (f *fakeGPUs) Devices() ([]devices.Device, error)                { return f.devs, nil }
func (f *fakeGPUs) Processes(string) ([]devices.ProcessMemory, error) { return nil, nil }
func (f *fakeGPUs) Utilization(string) (uint32, error)                { return 0, nil }
func (f *fakeGPUs) Close() error                                      { return nil }

// startDaemon runs an in-process vgpud on a 2 x 16 GiB node and points
// VGPU_SOCKET at it for the test.
func startDaemon(t *testing.T) (socket string, c *api.Client) {
	t.Helper()
	dir := t.TempDir()
	cfg := daemon.DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Socket = filepath.Join(dir, "vgpud.sock")
	cfg.MetricsAddr = ""
	cfg.EnforcerInterval = units.Duration(10 * time.Millisecond)
	gpus := &fakeGPUs{}
	for i := 0; i < 2; i++ {
		gpus.devs = append(gpus.devs, devices.Device{Index: i, UUID: fmt.Sprintf("GPU-%08d-0000-4000-8000-000000000000", i),
			Name: "Fake GPU", MemoryBytes: 16 << 30, NUMANode: -1})
	}
	s, err := daemon.New(cfg, zap.NewNop(), daemon.WithGPUs(gpus))
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
	})
	t.Setenv("VGPU_SOCKET", cfg.Socket)
	return cfg.Socket, api.NewClient(cfg.Socket)
}

// TestDaemonCommands: devices, alloc, slices, top and release against a real
// (in-process) vgpud, as tables and as JSON.
func TestDaemonCommands(t *testing.T) {
	socket, c := startDaemon(t)
	ctx := context.Background()

	r := vgpuctl("devices")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "GPU-00000000-0000-4000-8000-000000000000")
	// The socket may also come before the command, in both spellings.
	for _, args := range [][]string{{"--socket", socket, "devices"}, {"--socket=" + socket, "devices"}} {
		g := vgpuctl(args...)
		require.Equal(t, 0, g.code, g.stderr)
		require.Equal(t, r.stdout, g.stdout, "%v", args)
	}
	g := vgpuctl("--socket")
	require.Equal(t, 2, g.code)
	require.Contains(t, g.stderr, "--socket needs a path")
	require.Contains(t, r.stdout, "16GiB")
	require.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 3, "header and 2 devices")

	r = vgpuctl("alloc", "--memory", "4GiB", "--compute", "50", "--id", "one", "--priority", "3")
	require.Equal(t, 0, r.code, r.stderr)
	s, err := c.Get(ctx, "one")
	require.NoError(t, err)
	require.Equal(t, "one "+s.Dir+"\n", r.stdout, "alloc prints id and dir")
	require.Equal(t, 3, s.Priority)
	require.Equal(t, 50.0, s.Devices[0].ComputePercent)

	r = vgpuctl("alloc", "--memory", "25%", "--compute", "10", "--devices", "2", "--qos", "burstable",
		"--placement", "spread", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var two api.Slice
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &two))
	require.Len(t, two.Devices, 2)
	require.Equal(t, uint64(4<<30), two.Devices[0].MemoryBytes)
	require.Equal(t, api.QoSBurstable, two.QoS)

	r = vgpuctl("alloc", "--memory", "1GiB", "--uuid", "GPU-00000001-0000-4000-8000-000000000000", "--compute", "5", "--socket", socket,
		"--compute-policy", "share")
	require.Equal(t, 0, r.code, r.stderr)
	pinned := strings.Fields(r.stdout)[0]
	p, err := c.Get(ctx, pinned)
	require.NoError(t, err)
	require.Equal(t, api.ComputePolicyShare, p.ComputePolicy, "--compute-policy share")
	require.Equal(t, api.ComputePolicyCap, s.ComputePolicy, "no --compute-policy: vgpud's default")

	r = vgpuctl("slices")
	require.Equal(t, 0, r.code, r.stderr)
	for _, want := range []string{"one", two.ID, pinned, "0:4GiB", "0:4GiB,1:4GiB", "1:1GiB", "burstable", "50%", s.Dir, "POLICY"} {
		require.Contains(t, r.stdout, want)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[0] == "one" || f[0] == pinned) {
			want := map[string]string{"one": "cap", pinned: "share"}[f[0]]
			require.Equal(t, want, f[4], "POLICY of %s: %s", f[0], line)
		}
	}
	r = vgpuctl("slices", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var list []api.Slice
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	require.Len(t, list, 3)

	r = vgpuctl("devices", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var devs []api.Device
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &devs))
	require.Equal(t, uint64(4<<30), devs[0].GuaranteedBytes)
	require.Equal(t, uint64(8<<30), devs[0].AllocatedBytes)
	require.Equal(t, 2, devs[0].Slices)

	r = vgpuctl("top")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "SLICE")
	require.Contains(t, r.stdout, "one")
	require.Contains(t, r.stdout, "no processes")
	r = vgpuctl("top", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var top []api.SliceUsage
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &top))
	require.Len(t, top, 3)
	for _, u := range top {
		require.Len(t, u.Compute, len(u.Slice.Devices), "compute figures per slice device")
		if u.Slice.ID == "one" {
			require.Equal(t, 50.0, u.Compute[0].TargetPercent)
			require.Equal(t, u.Slice.Devices[0].UUID, u.Compute[0].UUID)
			require.False(t, u.Compute[0].Measured, "the fake GPUs report no per-process utilization")
		}
	}
	// Once the controller has stepped: allowed = target (cap, alone); no
	// driver figure, so nothing achieved is shown.
	require.Eventually(t, func() bool {
		r = vgpuctl("top")
		require.Equal(t, 0, r.code, r.stderr)
		for _, line := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "one" {
				return strings.Join(f[7:10], " ") == "50% 50.0% -"
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "top's line of slice one: %s", r.stdout)
	require.Contains(t, r.stdout, "TARGET")
	r = vgpuctl("top", "--watch", "--interval", "10ms", "--count", "3")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 3, strings.Count(r.stdout, "\033[H\033[2J"), "three refreshes")

	// Refusals say what each device lacked.
	r = vgpuctl("alloc", "--memory", "16GiB", "--compute", "1")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "the slice does not fit:\n  GPU-00000000")
	require.Contains(t, r.stderr, "guaranteed memory free")
	r = vgpuctl("alloc", "--memory", "1GiB", "--id", "one", "--compute", "1")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "already exists")

	r = vgpuctl("release", "one", two.ID, "--socket", socket)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "released one\nreleased "+two.ID+"\n", r.stdout)
	r = vgpuctl("release", "one")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "no such slice")
	r = vgpuctl("release", "--", pinned)
	require.Equal(t, 0, r.code, r.stderr)
	r = vgpuctl("slices")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "no slices\n", r.stdout)
}

// TestDaemonCommandUsage: bad command lines are usage errors (exit 2).
func TestDaemonCommandUsage(t *testing.T) {
	t.Setenv("VGPU_SOCKET", filepath.Join(t.TempDir(), "none.sock"))
	for _, args := range [][]string{
		{"alloc"},
		{"alloc", "--memory", "0"},
		{"alloc", "--memory", "150%"},
		{"alloc", "--memory", "lots"},
		{"alloc", "--memory", "1Gi", "--compute", "101"},
		{"alloc", "--memory", "1Gi", "--compute-policy", "burst"},
		{"run", "--memory", "1Gi", "--compute-policy", "Share", "--", "true"},
		{"alloc", "--memory", "1Gi", "extra"},
		{"release"},
		{"release", "--bogus", "x"},
		{"run", "--memory", "1Gi"},
		{"run", "--", "true"},
		{"top", "--interval", "1ms"},
		{"devices", "x"},
	} {
		r := vgpuctl(args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, r.stderr, "Run 'vgpuctl "+args[0]+" --help'", "%v", args)
	}
	for _, cmd := range []string{"devices", "slices", "alloc", "release", "top", "run"} {
		r := vgpuctl(cmd, "--help")
		require.Equal(t, 0, r.code, cmd)
		require.Contains(t, r.stdout, "Usage:\n  vgpuctl "+cmd, cmd)
		require.Contains(t, r.stdout, "-socket", cmd)
	}
}

// TestDaemonDown: every daemon command says vgpud is not running, and where.
func TestDaemonDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{
		{"devices", "--socket", sock},
		{"slices", "--socket", sock},
		{"top", "--socket", sock},
		{"release", "x", "--socket", sock},
		{"alloc", "--memory", "1Gi", "--socket", sock},
		{"run", "--socket", sock, "--libvgpu", "/bin/true", "--memory", "1Gi", "--", "true"},
	} {
		r := vgpuctl(args...)
		require.Equal(t, 1, r.code, "%v", args)
		require.Contains(t, r.stderr, "vgpud is not running at "+sock, "%v", args)
	}
}

// fakeLib is a file to preload: ld.so skips it with a warning, which is all
// these tests need (the real libvgpu is exercised by test/daemon).
func fakeLib(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "libvgpu.so")
	require.NoError(t, os.WriteFile(p, nil, 0o644))
	return p
}

// TestRun: the command runs in a fresh slice with libvgpu preloaded (after
// what was there) and VGPU_SLICE_DIR set; the slice is owned by vgpuctl while
// it runs and released after; vgpuctl exits with the command's status.
func TestRun(t *testing.T) {
	_, c := startDaemon(t)
	lib := fakeLib(t)
	t.Setenv("LD_PRELOAD", "")
	t.Setenv("VGPU_SLICE_DIR", "/somewhere/else")

	out := filepath.Join(t.TempDir(), "out")
	r := vgpuctl("run", "--libvgpu", lib, "--memory", "2GiB", "--compute", "10", "--id", "job",
		"--", "sh", "-c", `echo "$LD_PRELOAD|$VGPU_SLICE_DIR" > "$1"; exit 3`, "sh", out)
	require.Equal(t, 3, r.code, r.stderr)
	require.Contains(t, r.stderr, "vgpuctl: slice job (2GiB on GPU 0) at ")
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	got := strings.Split(strings.TrimSpace(string(data)), "|")
	require.Equal(t, lib, got[0])
	require.True(t, strings.HasSuffix(got[1], "/slices/job"), got[1])
	_, err = c.Get(context.Background(), "job")
	require.True(t, api.IsNotFound(err), "released after the command: %v", err)

	// LD_PRELOAD kept, libvgpu appended once.
	t.Setenv("LD_PRELOAD", "/other.so "+lib)
	r = vgpuctl("run", "--libvgpu", lib, "--memory", "1GiB", "--compute", "10", "--quiet",
		"--", "sh", "-c", `echo "$LD_PRELOAD" > "$1"`, "sh", out)
	require.Equal(t, 0, r.code, r.stderr)
	require.NotContains(t, r.stderr, "vgpuctl:")
	data, err = os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "/other.so:"+lib+"\n", string(data))
	t.Setenv("LD_PRELOAD", "")

	// A command that cannot start: 127, slice released.
	r = vgpuctl("run", "--libvgpu", lib, "--memory", "1GiB", "--compute", "10", "--id", "nf",
		"--", "/nonexistent/program")
	require.Equal(t, 127, r.code)
	require.Contains(t, r.stderr, "/nonexistent/program")
	_, err = c.Get(context.Background(), "nf")
	require.True(t, api.IsNotFound(err))

	// A refused slice runs nothing.
	r = vgpuctl("run", "--libvgpu", lib, "--memory", "17GiB", "--", "sh", "-c", "echo ran > "+out)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "does not fit")

	// No libvgpu anywhere: a clear error before anything is allocated.
	t.Setenv("VGPU_LIBVGPU", filepath.Join(t.TempDir(), "missing.so"))
	r = vgpuctl("run", "--memory", "1GiB", "--", "true")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "VGPU_LIBVGPU")
	slices, err := c.Slices(context.Background())
	require.NoError(t, err)
	require.Empty(t, slices)
}

// TestRunSignals: vgpuctl run (a real process) owns its slice while the
// command runs, passes SIGTERM on, releases the slice and exits with the
// command's status; a command killed by a signal gives 128+N.
func TestRunSignals(t *testing.T) {
	_, c := startDaemon(t)
	lib := fakeLib(t)
	self, err := os.Executable()
	require.NoError(t, err)

	start := func(id, script string) (*exec.Cmd, *bufio.Reader) {
		cmd := exec.Command(self, "run", "--libvgpu", lib, "--memory", "1GiB", "--compute", "10", "--id", id,
			"--", "sh", "-c", script)
		cmd.Env = append(os.Environ(), "VGPUCTL_TEST_AS_MAIN=1", "LD_PRELOAD=")
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		br := bufio.NewReader(stdout)
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ready\n", line)
		return cmd, br
	}

	cmd, _ := start("sig", `trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.01; done`)
	s, err := c.Get(context.Background(), "sig")
	require.NoError(t, err)
	require.Equal(t, api.Owner{Kind: api.OwnerPID, PID: cmd.Process.Pid, StartTime: s.Owner.StartTime}, s.Owner)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 7, ee.ExitCode())
	_, err = c.Get(context.Background(), "sig")
	require.True(t, api.IsNotFound(err))

	cmd, _ = start("killed", `echo ready; kill -KILL $$`)
	err = cmd.Wait()
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 128+9, ee.ExitCode())
	_, err = c.Get(context.Background(), "killed")
	require.True(t, api.IsNotFound(err))

	// vgpuctl itself SIGKILLed: vgpud releases the slice (its owner is gone).
	cmd, _ = start("orphan", `echo ready; sleep 30`)
	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = c.Get(context.Background(), "orphan")
		if api.IsNotFound(err) {
			break
		}
		require.True(t, time.Now().Before(deadline), "slice of a killed vgpuctl still there: %v", err)
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunEnv(t *testing.T) {
	s := api.Slice{Dir: "/s", Devices: []api.SliceDevice{{Index: 1, UUID: "GPU-b"}, {Index: 0, UUID: "GPU-a"}}}
	got := runEnv([]string{"A=1", "LD_PRELOAD=/a.so:/lib/v.so /b.so", "VGPU_SLICE_DIR=/old", "CUDA_VISIBLE_DEVICES=0", "B=2"},
		"/lib/v.so", s)
	require.Equal(t, []string{"A=1", "B=2", "LD_PRELOAD=/a.so:/b.so:/lib/v.so", "VGPU_SLICE_DIR=/s",
		"CUDA_VISIBLE_DEVICES=GPU-b,GPU-a"}, got, "the slice's devices in slice order replace the caller's")
	got = runEnv([]string{"A=1"}, "/lib/v.so", api.Slice{Dir: "/s", Devices: []api.SliceDevice{{UUID: "MIG-x"}}})
	require.Equal(t, []string{"A=1", "LD_PRELOAD=/lib/v.so", "VGPU_SLICE_DIR=/s", "CUDA_VISIBLE_DEVICES=MIG-x"}, got)
	got = runEnv([]string{"CUDA_VISIBLE_DEVICES=1"}, "/lib/v.so", api.Slice{Dir: "/s", Devices: []api.SliceDevice{{Index: 0}}})
	require.Equal(t, []string{"CUDA_VISIBLE_DEVICES=1", "LD_PRELOAD=/lib/v.so", "VGPU_SLICE_DIR=/s"}, got,
		"no uuid (an older vgpud): the caller's setting stays")
}

func TestFindLibvgpu(t *testing.T) {
	lib := fakeLib(t)
	t.Setenv("VGPU_LIBVGPU", "")
	got, err := findLibvgpu(lib)
	require.NoError(t, err)
	require.Equal(t, lib, got)
	_, err = findLibvgpu(filepath.Dir(lib))
	require.ErrorContains(t, err, "is a directory")
	_, err = findLibvgpu(lib + ".missing")
	require.ErrorContains(t, err, "--libvgpu")

	t.Setenv("VGPU_LIBVGPU", lib)
	got, err = findLibvgpu("")
	require.NoError(t, err)
	require.Equal(t, lib, got)

	// Relative paths become absolute (the command may chdir).
	t.Chdir(filepath.Dir(lib))
	got, err = findLibvgpu("libvgpu.so")
	require.NoError(t, err)
	require.Equal(t, lib, got)
}

// printTop's table: per slice device the compute target, what the controller
// allows and what was achieved; '-' for no share, not throttled, not measured,
// or a vgpud too old to send compute figures.
func TestPrintTopCompute(t *testing.T) {
	dev := func(i int, c float64) api.SliceDevice {
		return api.SliceDevice{Index: i, UUID: fmt.Sprintf("GPU-%d", i), MemoryBytes: 1 << 30, ComputePercent: c}
	}
	usage := []api.SliceUsage{
		{Slice: api.Slice{ID: "b-none", Devices: []api.SliceDevice{dev(0, 0)}, ComputePolicy: api.ComputePolicyCap},
			Compute: []api.ComputeUsage{{UUID: "GPU-0", Measured: true, AchievedPercent: 12.345}},
			Activity: &api.SliceActivity{State: api.ActivityEmpty, Since: time.Now().Add(-12200 * time.Millisecond),
				Used: true, LendableBytes: []uint64{1 << 30}, ReleaseAt: time.Now().Add(18200 * time.Millisecond)}},
		{Slice: api.Slice{ID: "a-30", Devices: []api.SliceDevice{dev(0, 30), dev(1, 30)}, ComputePolicy: api.ComputePolicyShare},
			UsedBytes: []uint64{512 << 20, 0},
			Compute: []api.ComputeUsage{
				{UUID: "GPU-0", TargetPercent: 30, AllowedPercent: 30, AchievedPercent: 29.96, Measured: true,
					TokenRate: 3e8},
				{UUID: "GPU-1", TargetPercent: 30, AllowedPercent: 45.5, TokenRate: 4e8}, // not measured
			}},
		{Slice: api.Slice{ID: "c-old", Devices: []api.SliceDevice{dev(1, 20)}}}, // an older vgpud
	}
	// An elastic device: the limit is base + granted, the grant's lenders named.
	usage[1].Slice.Devices[0].MemoryMaxBytes = 4 << 30
	usage[1].Slice.Devices[0].GrantedBytes = 1 << 30
	usage[1].Slice.Devices[0].Loans = []api.Loan{{From: "g", Bytes: 512 << 20}}
	var out strings.Builder
	require.NoError(t, printTop(&out, usage))
	want := `SLICE   DEVICE  LIMIT  ELASTIC                         USED    PEAK  REFUSED  TARGET  ALLOWED  ACHIEVED  POLICY  PROCESSES  STATE
a-30    0       2GiB   max 4GiB +1GiB (512MiB from g)  512MiB  0B    0        30%     30.0%    30.0%     share   0          -
a-30    1       1GiB   -                               0B      0B    0        30%     45.5%    -         share   0          -
b-none  0       1GiB   -                               0B      0B    0        -       -        12.3%     cap     0          empty 12s lend 1GiB release in 18s
c-old   1       1GiB   -                               0B      0B    0        20%     -        -         -       0          -

no processes
`
	require.Equal(t, want, out.String())
}
