package devices

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

const mib = 1 << 20

// helperEnv, when set in the environment, makes the test binary a helper
// process that calls Open(value) and prints the outcome, instead of running
// tests.
const helperEnv = "VGPU_DEVICES_TEST_OPEN"

func TestMain(m *testing.M) {
	if lib := os.Getenv(helperEnv); lib != "" {
		n, err := Open(lib)
		if n != nil {
			n.Close()
		}
		fmt.Printf("driver-not-loaded=%v\nerror=%v\n", errors.Is(err, nvml.ERROR_DRIVER_NOT_LOADED), err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// withoutEnv is the environment minus one variable.
func withoutEnv(name string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// repoRoot returns the repository root.
func repoRoot(t *testing.T) string {
	t.Helper()
	return testbuild.Root(t)
}

// built returns the path of a build artifact, failing with the way out when
// it is missing.
func built(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run `make build` first (%v)", rel, err)
	}
	return p
}

// holder is a build/test/sim_hold process holding memory on the simulated node.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
}

// hold starts sim_hold BYTES DEV and waits until it holds the memory.
func hold(t *testing.T, state string, bytes uint64, dev int) *holder {
	t.Helper()
	root := repoRoot(t)
	c := exec.Command(built(t, "build/test/sim_hold"), strconv.FormatUint(bytes, 10), strconv.Itoa(dev))
	c.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(root, "build/simgpu"), "VGPU_SIM_STATE="+state)
	stdin, err := c.StdinPipe()
	require.NoError(t, err)
	stdout, err := c.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	c.Stderr = &stderr
	require.NoError(t, c.Start())
	h := &holder{cmd: c, stdin: stdin, pid: c.Process.Pid}
	t.Cleanup(h.kill)
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		require.True(t, strings.HasPrefix(l, "READY "), "sim_hold said %q, stderr: %s", l, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("sim_hold did not get ready; stderr: %s", stderr.String())
	}
	return h
}

// kill SIGKILLs the holder and reaps it (idempotent).
func (h *holder) kill() {
	if h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

// Open with a library that is not there, or is not a library: a clear error.
// These must run before any library is loaded in the process, hence one test
// with ordered steps (and no other test in this package calls Open).
func TestOpen(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		n, err := Open("/nonexistent/dir/libnvidia-ml.so.1")
		require.Nil(t, n)
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, "open NVML library /nonexistent/dir/libnvidia-ml.so.1")
	})
	t.Run("not a library", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
		require.NoError(t, os.WriteFile(p, []byte("not an ELF file"), 0o644))
		n, err := Open(p)
		require.Nil(t, n)
		require.ErrorIs(t, err, nvml.ERROR_LIBRARY_NOT_FOUND)
		require.ErrorContains(t, err, "open NVML library "+p+": cannot load it")
	})
	t.Run("library not on the search path", func(t *testing.T) {
		n, err := Open("libnvidia-ml-vgpu-test-absent.so.1")
		require.Nil(t, n)
		require.ErrorIs(t, err, nvml.ERROR_LIBRARY_NOT_FOUND)
		require.ErrorContains(t, err, "is the NVIDIA driver installed?")
	})

	lib := built(t, "build/simgpu/libnvidia-ml.so.1")
	built(t, "build/test/sim_hold")

	t.Run("driver that does not initialize", func(t *testing.T) {
		// The simulated NVML without a node is a driver that is not loaded. It
		// remembers that for the life of the process, so this runs in a child.
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(withoutEnv("VGPU_SIM_STATE"), helperEnv+"="+lib)
		out, err := c.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "driver-not-loaded=true")
		require.Contains(t, string(out), "error=initialize NVML from "+lib+": Driver Not Loaded")
		require.Contains(t, string(out), "simgpu: VGPU_SIM_STATE is not set", "the driver's own message is on stderr")
	})

	// The simulated NVML maps its node once per process: one node for the rest.
	state := filepath.Join(t.TempDir(), "node")
	ctxMem := uint64(64 * mib)
	require.NoError(t, simgpu.Init(state, simgpu.Config{Devices: 3, Memory: 4 << 30, SMs: 8, ContextMemory: &ctxMem}))
	t.Setenv("VGPU_SIM_STATE", state)

	t.Run("devices match the node", func(t *testing.T) {
		n, err := Open(lib)
		require.NoError(t, err)
		defer n.Close()
		require.Equal(t, lib, n.Path())
		devs, err := n.Devices()
		require.NoError(t, err)
		st, err := simgpu.Status(state)
		require.NoError(t, err)
		require.Len(t, devs, len(st.Devices))
		for i, d := range devs {
			sd := st.Devices[i]
			require.Equal(t, Device{
				Index:       sd.Index,
				UUID:        sd.UUID,
				Name:        sd.Name,
				MemoryBytes: sd.Total,
				Minor:       sd.Minor,
				PCIBusID:    sd.PCIBusID,
				NUMANode:    -1, // the simulated NVML does not support the NUMA query
			}, d)
			require.NotEmpty(t, d.PCIBusID)
		}
	})

	t.Run("processes holding memory", func(t *testing.T) {
		n, err := Open(lib)
		require.NoError(t, err)
		defer n.Close()
		devs, err := n.Devices()
		require.NoError(t, err)

		h := hold(t, state, 300*mib, 1)
		h2 := hold(t, state, 0, 1) // a context only
		procs, err := n.Processes(devs[1].UUID)
		require.NoError(t, err)
		require.ElementsMatch(t, []ProcessMemory{
			{HostPID: h.pid, UsedBytes: 364 * mib}, // context 64MiB + 300MiB
			{HostPID: h2.pid, UsedBytes: 64 * mib},
		}, procs)
		for _, d := range []int{0, 2} {
			procs, err = n.Processes(devs[d].UUID)
			require.NoError(t, err)
			require.Empty(t, procs, "device %d", d)
		}
		util, err := n.Utilization(devs[1].UUID)
		require.NoError(t, err)
		require.LessOrEqual(t, util, uint32(100))

		// A SIGKILLed process is gone from the driver's list (the driver gets its
		// memory back).
		h.kill()
		procs, err = n.Processes(devs[1].UUID)
		require.NoError(t, err)
		require.Equal(t, []ProcessMemory{{HostPID: h2.pid, UsedBytes: 64 * mib}}, procs)

		_, err = n.Processes("GPU-00000000-0000-0000-0000-000000000000")
		require.ErrorContains(t, err, "get handle")
	})

	t.Run("open and close repeatedly", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			n, err := Open(lib)
			require.NoError(t, err)
			devs, err := n.Devices()
			require.NoError(t, err)
			require.Len(t, devs, 3)
			require.NoError(t, n.Close())
			require.NoError(t, n.Close(), "closing twice is harmless")
			_, err = n.Devices()
			require.ErrorIs(t, err, ErrClosed)
		}
		// Two at once: closing one leaves the other working (NVML's init is
		// refcounted, and each NVML shuts down exactly once).
		a, err := Open(lib)
		require.NoError(t, err)
		b, err := Open(lib)
		require.NoError(t, err)
		require.NoError(t, a.Close())
		require.NoError(t, a.Close())
		devs, err := b.Devices()
		require.NoError(t, err)
		require.Len(t, devs, 3)
		_, err = b.Processes(devs[0].UUID)
		require.NoError(t, err)
		require.NoError(t, b.Close())
	})

	t.Run("a second library path is refused", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
		data, err := os.ReadFile(lib)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(other, data, 0o755))
		n, err := Open(other)
		require.Nil(t, n)
		require.ErrorContains(t, err, lib+" is already loaded in this process")
		require.False(t, errors.Is(err, ErrNoDevices))

		// The first one still works.
		n, err = Open(lib)
		require.NoError(t, err)
		require.NoError(t, n.Close())
	})
}
