package enforcer_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/shm"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

const (
	miB = uint64(1) << 20
	giB = uint64(1) << 30
)

// simDriver is a test-only DriverProcesses over the simulated node's state
// (what NVML's running compute processes report there).
type simDriver struct{ state string }

func (d simDriver) Processes(uuid string) ([]enforcer.DriverProcess, error) {
	st, err := simgpu.Status(d.state)
	if err != nil {
		return nil, err
	}
	for _, dev := range st.Devices {
		if dev.UUID != uuid {
			continue
		}
		out := make([]enforcer.DriverProcess, 0, len(dev.Processes))
		for _, p := range dev.Processes {
			out = append(out, enforcer.DriverProcess{HostPID: p.PID, UsedBytes: p.UsedBytes})
		}
		return out, nil
	}
	return nil, fmt.Errorf("no device %s on the simulated node", uuid)
}

type pidAttributor map[int]string

func (a pidAttributor) SliceOf(pid int) (string, bool) { s, ok := a[pid]; return s, ok }

// repoRoot returns the repository root once `make build` made what these tests run.
func repoRoot(t *testing.T) string {
	t.Helper()
	root := testbuild.Root(t, "build/libvgpu.so", "build/simgpu/libcuda.so.1", "build/test/sim_hold")
	testbuild.NoContainerSlice(t, shm.ContainerSliceDir)
	return root
}

// holder is a running build/test/sim_hold.
type holder struct {
	cmd   *exec.Cmd
	pid   int
	stdin interface{ Close() error }
}

// startHolder runs sim_hold BYTES on device 0, with libvgpu in sliceDir when
// sliceDir is not empty, and waits until it holds the memory.
func startHolder(t *testing.T, root, state, sliceDir string, bytes uint64) *holder {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "build/test/sim_hold"), fmt.Sprint(bytes), "0")
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || strings.HasPrefix(k, "VGPU_") || k == "CUDA_VISIBLE_DEVICES" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LD_LIBRARY_PATH="+filepath.Join(root, "build/simgpu"), "VGPU_SIM_STATE="+state)
	if sliceDir != "" {
		env = append(env, "LD_PRELOAD="+filepath.Join(root, "build/libvgpu.so"), "VGPU_SLICE_DIR="+sliceDir,
			"VGPU_FAIL_MODE=refuse")
	}
	cmd.Env = env
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	h := &holder{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		require.True(t, ok, "sim_hold exited early: %s", stderr.String())
		require.True(t, strings.HasPrefix(line, "READY "), "sim_hold: %q (stderr %s)", line, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("sim_hold did not get ready: %s", stderr.String())
	}
	return h
}

// TestLoopOnSimulatedNode runs real processes on the simulated node: one with
// libvgpu in a slice is SIGKILLed and one Tick returns its charge; one that
// allocates without libvgpu past the slice, attributed to it, is killed by the
// backstop in enforce mode, using the simulated driver's per-process figures.
func TestLoopOnSimulatedNode(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "node")
	ctxMem := 256 * miB
	require.NoError(t, simgpu.Init(state, simgpu.Config{Devices: 2, Memory: 8 * giB, SMs: 4, ContextMemory: &ctxMem}))
	abs, err := filepath.Abs(state)
	require.NoError(t, err)
	uuid := simgpu.DeviceUUID(abs, 0)

	sliceDir := filepath.Join(dir, "slice")
	require.NoError(t, shm.CreateSlice(sliceDir, shm.SliceSpec{ID: "sim", Slots: 64,
		Devices: []shm.DeviceBudget{{UUID: uuid, MemoryLimit: 2 * giB, MemoryGuaranteed: 2 * giB,
			ContextOverhead: ctxMem, ComputeShareBP: shm.MaxShareBP}}}))
	sl, err := shm.OpenSlice(sliceDir)
	require.NoError(t, err)
	defer sl.Close()
	tracked := []enforcer.TrackedSlice{{ID: "sim", Slice: sl, UUIDs: []string{uuid}}}

	attr := pidAttributor{}
	l := &enforcer.Loop{Mode: enforcer.ModeEnforce, Mapper: enforcer.NewProcfsMapper(""),
		Driver: simDriver{state: state}, Attributor: attr, Tolerance: 0}
	defer l.Close()

	// A process inside the slice: charged its allocation plus its context,
	// exactly what the simulated driver reports for it. No violation.
	h := startHolder(t, root, state, sliceDir, 512*miB)
	attr[h.pid] = "sim" // the kernel places it in the slice (the daemon: cgroup, owner subtree)
	rep := l.Tick(tracked)
	require.Empty(t, rep.Errors)
	require.Empty(t, rep.Backstop)
	s := rep.Slices[0]
	require.Len(t, s.Processes, 1)
	p := s.Processes[0]
	require.Equal(t, h.pid, p.PID)
	require.Equal(t, h.pid, p.HostPID)
	require.Equal(t, []uint64{768 * miB}, p.UsedBytes)
	require.Equal(t, []uint64{768 * miB}, p.DriverBytes)
	require.True(t, s.Devices[0].DriverKnown)
	require.EqualValues(t, 768*miB, s.Devices[0].DriverBytes)

	// SIGKILL: libvgpu's destructor never runs; one tick returns the charge.
	require.NoError(t, h.cmd.Process.Kill())
	_ = h.cmd.Wait()
	require.EqualValues(t, 768*miB, sl.Usage.DeviceUsed(0))
	rep = l.Tick(tracked)
	require.Empty(t, rep.Errors)
	require.EqualValues(t, 768*miB, rep.ReclaimedBytes)
	require.Len(t, rep.Reclaimed, 1)
	require.Equal(t, h.pid, rep.Reclaimed[0].PID)
	require.Zero(t, sl.Usage.DeviceUsed(0))
	require.Empty(t, rep.Slices[0].Processes)

	// A process that never loaded libvgpu allocates 3 GiB (+ its context)
	// past the 2 GiB slice. The daemon's attributor puts it in the slice; the
	// backstop kills it.
	b := startHolder(t, root, state, "", 3*giB)
	attr[b.pid] = "sim"
	rep = l.Tick(tracked)
	require.Empty(t, rep.Errors)
	require.Len(t, rep.Backstop, 1, "%+v", rep.Slices[0])
	ev := rep.Backstop[0]
	require.Equal(t, enforcer.BackstopEvent{Slice: "sim", Device: uuid, DeviceIndex: 0, PID: 0, HostPID: b.pid,
		DriverBytes: 3*giB + 256*miB, ChargedBytes: 0, SliceBytes: 3*giB + 256*miB, LimitBytes: 2 * giB,
		Action: enforcer.ActionKilled}, ev)
	err = b.cmd.Wait()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "sim_hold: %v", err)
	ws := exit.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled())
	require.Equal(t, syscall.SIGKILL, ws.Signal())
	require.EqualValues(t, 1, rep.Totals.Kills)

	// Its memory is gone from the node; the slice is clean.
	rep = l.Tick(tracked)
	require.Empty(t, rep.Backstop)
	require.Zero(t, rep.Slices[0].Devices[0].DriverBytes)
}
