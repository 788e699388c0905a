package simgpu

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/require"
)

// The unmodified go-nvml (what vgpud uses) discovers the simulated node and reads
// the same figures the state file holds.
func TestGoNVMLSeesTheNode(t *testing.T) {
	e := newNode(t, Config{Devices: 2, Memory: 2 << 30, SMs: 8, ContextMemory: u64(64 * mib)})
	h := e.start(t, "sim_hold", strconv.FormatUint(300*mib, 10), "1")

	// The simulated NVML finds its node through the environment, read once per process.
	t.Setenv("VGPU_SIM_STATE", e.state)
	lib := nvml.New(nvml.WithLibraryPath(filepath.Join(e.root, "build/simgpu/libnvidia-ml.so.1")))
	require.Equal(t, nvml.SUCCESS, lib.Init())
	defer func() { require.Equal(t, nvml.SUCCESS, lib.Shutdown()) }()

	ver, ret := lib.SystemGetDriverVersion()
	require.Equal(t, nvml.SUCCESS, ret)
	require.NotEmpty(t, ver)
	cudaVer, ret := lib.SystemGetCudaDriverVersion()
	require.Equal(t, nvml.SUCCESS, ret)
	require.Equal(t, 12040, cudaVer)

	n, ret := lib.DeviceGetCount()
	require.Equal(t, nvml.SUCCESS, ret)
	require.Equal(t, 2, n)

	st, err := Status(e.state)
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		require.Equal(t, nvml.SUCCESS, ret)
		name, ret := dev.GetName()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, st.Devices[i].Name, name)
		uuid, ret := dev.GetUUID()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, st.Devices[i].UUID, uuid)
		minor, ret := dev.GetMinorNumber()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, i, minor)
		pci, ret := dev.GetPciInfo()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, uint32(i+1), pci.Bus)
		major, minorCC, ret := dev.GetCudaComputeCapability()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, [2]int{9, 0}, [2]int{major, minorCC})

		mem, ret := dev.GetMemoryInfo()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, st.Devices[i].Total, mem.Total)
		require.Equal(t, st.Devices[i].Used, mem.Used)
		mem2, ret := dev.GetMemoryInfo_v2()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, mem.Used, mem2.Used)
		require.Equal(t, mem.Free, mem2.Free)

		byUUID, ret := lib.DeviceGetHandleByUUID(uuid)
		require.Equal(t, nvml.SUCCESS, ret)
		idx, ret := byUUID.GetIndex()
		require.Equal(t, nvml.SUCCESS, ret)
		require.Equal(t, i, idx)

		procs, ret := dev.GetComputeRunningProcesses()
		require.Equal(t, nvml.SUCCESS, ret)
		if i == 0 {
			require.Empty(t, procs)
			continue
		}
		require.Len(t, procs, 1)
		require.Equal(t, uint32(h.pid()), procs[0].Pid, "the pid the process registered with")
		require.Equal(t, 364*mib, procs[0].UsedGpuMemory, "context 64MiB + 300MiB")
	}

	// After a SIGKILL, NVML no longer reports the process or its memory.
	h.kill(t)
	dev, ret := lib.DeviceGetHandleByIndex(1)
	require.Equal(t, nvml.SUCCESS, ret)
	procs, ret := dev.GetComputeRunningProcesses()
	require.Equal(t, nvml.SUCCESS, ret)
	require.Empty(t, procs)
	mem, ret := dev.GetMemoryInfo()
	require.Equal(t, nvml.SUCCESS, ret)
	require.Equal(t, uint64(0), mem.Used)
	_, err = os.Stat(e.state)
	require.NoError(t, err)
}
