package tracker

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// A process of the simulated driver opens its device node when it creates a
// context, like the real driver's /dev/nvidiaN: with the node a stand-in
// char device, the tracker sees it hold the device, in its cgroup.
func TestSimulatedDriverProcess(t *testing.T) {
	requireBPF(t)
	root := testbuild.Root(t, "build/test/sim_hold", "build/simgpu/libcuda.so.1")
	dir := t.TempDir()
	// Device 0 has minor 0: the driver opens <dir>/vgpusim0.
	_, dev := standIn(t, dir, "vgpusim0")
	state := filepath.Join(dir, "node")
	require.NoError(t, simgpu.Init(state, simgpu.Config{Devices: 1, Memory: 1 << 30, SMs: 4,
		DeviceNodes: filepath.Join(dir, "vgpusim%d")}))
	cg, cgID := freshCgroup(t)

	tr := newTracker(t, Config{Majors: []uint32{dev.Major}})
	require.Equal(t, "ebpf", tr.Kind())
	events, cancel := tr.Subscribe(1024)
	defer cancel()

	cmd := exec.Command(testbuild.Path(root, "test", "sim_hold"), strconv.Itoa(8<<20), "0")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+testbuild.Path(root, "simgpu"), "VGPU_SIM_STATE="+state)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = cgroupAttr(t, cg)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "READY "), "sim_hold said %q", line)
	pid := cmd.Process.Pid

	ev, _ := waitEvent(t, events, 2*time.Second, is(EventOpen, pid))
	assert.Equal(t, dev, ev.Device)
	assert.Equal(t, cgID, ev.CgroupID)
	p, ok := tr.Lookup(pid)
	require.True(t, ok)
	assert.Equal(t, []Device{dev}, p.Devices)
	assert.Equal(t, cgID, p.CgroupID)

	require.NoError(t, stdin.Close())
	waitEvent(t, events, 2*time.Second, is(EventExit, pid))
}
