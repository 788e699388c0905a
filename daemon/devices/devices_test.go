package devices

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// mockDev is device i of a mock server.
func mockDev(s *server.Server, i int) *server.Device { return s.Devices[i].(*server.Device) }

// busID is what NVML's busId field holds for a string.
func busID(s string) [32]int8 {
	var b [32]int8
	for i := 0; i < len(s); i++ {
		b[i] = int8(s[i])
	}
	return b
}

func TestDiscoverDGXH100(t *testing.T) {
	s := dgxh100.New()
	devs, err := Discover(s)
	require.NoError(t, err)
	require.Len(t, devs, 8)
	seen := map[string]bool{}
	for i, d := range devs {
		md := mockDev(s, i)
		require.Equal(t, Device{
			Index:       i,
			UUID:        md.UUID,
			Name:        "NVIDIA H100 80GB HBM3",
			MemoryBytes: 81920 << 20,
			Minor:       i,
			// The mock fills no bus id in its PciInfo and does not implement the
			// NUMA query: both read as unknown.
			PCIBusID: "",
			NUMANode: -1,
		}, d)
		require.Regexp(t, `^GPU-[0-9a-f-]{36}$`, d.UUID)
		require.False(t, seen[d.UUID], "uuids are distinct")
		seen[d.UUID] = true
	}
}

// Where the mock is given PCI bus ids and NUMA nodes, they are read.
func TestDiscoverPCIAndNUMA(t *testing.T) {
	s := dgxh100.New()
	for i := range s.Devices {
		md := mockDev(s, i)
		id := md.PciBusID
		md.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			return nvml.PciInfo{BusId: busID(id), PciDeviceId: md.Config.PciDeviceId}, nvml.SUCCESS
		}
		numa := i / 4
		md.GetNumaNodeIdFunc = func() (int, nvml.Return) { return numa, nvml.SUCCESS }
	}
	// Device 7: only the legacy field, and NUMA not supported.
	mockDev(s, 7).GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		for i, c := range "0000:07:00.0" {
			p.BusIdLegacy[i] = int8(c)
		}
		return p, nvml.SUCCESS
	}
	mockDev(s, 7).GetNumaNodeIdFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	devs, err := Discover(s)
	require.NoError(t, err)
	for i, d := range devs {
		require.Equal(t, fmt.Sprintf("0000:%02x:00.0", i), d.PCIBusID)
		if i < 7 {
			require.Equal(t, i/4, d.NUMANode)
		} else {
			require.Equal(t, -1, d.NUMANode)
		}
	}
	// Not supported at all: unknown, not an error.
	mockDev(s, 2).GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{}, nvml.ERROR_NOT_SUPPORTED }
	devs, err = Discover(s)
	require.NoError(t, err)
	require.Equal(t, "", devs[2].PCIBusID)
}

// Every failing query is an error that names the device and the query, and
// wraps NVML's return code; nothing panics.
func TestDiscoverErrorsPropagate(t *testing.T) {
	cases := []struct {
		name    string
		breakIt func(s *server.Server)
		msg     string
		is      error
	}{
		{"count", func(s *server.Server) {
			s.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_DRIVER_NOT_LOADED }
		}, "discover devices: count devices: ", nvml.ERROR_DRIVER_NOT_LOADED},
		{"handle", func(s *server.Server) {
			s.DeviceGetHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, nvml.ERROR_GPU_IS_LOST }
		}, "device 0: get handle: ", nvml.ERROR_GPU_IS_LOST},
		{"uuid", func(s *server.Server) {
			mockDev(s, 3).GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_GPU_IS_LOST }
		}, "device 3: get uuid: ", nvml.ERROR_GPU_IS_LOST},
		{"empty uuid", func(s *server.Server) {
			mockDev(s, 3).GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.SUCCESS }
		}, "device 3: get uuid: NVML returned an empty uuid", nil},
		{"name", func(s *server.Server) {
			mockDev(s, 5).GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
		}, "device 5: get name: ", nvml.ERROR_UNKNOWN},
		{"memory", func(s *server.Server) {
			mockDev(s, 1).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_NO_PERMISSION }
		}, "device 1: get memory info: ", nvml.ERROR_NO_PERMISSION},
		{"no memory", func(s *server.Server) {
			mockDev(s, 1).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.SUCCESS }
		}, "device 1: get memory info: NVML reports 0 bytes of memory", nil},
		{"minor", func(s *server.Server) {
			mockDev(s, 7).GetMinorNumberFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
		}, "device 7: get minor number: ", nvml.ERROR_NOT_SUPPORTED},
		{"minor not mocked", func(s *server.Server) { mockDev(s, 2).GetMinorNumberFunc = nil },
			"device 2: get minor number: not implemented by this NVML", ErrNotImplemented},
		{"pci", func(s *server.Server) {
			mockDev(s, 4).GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{}, nvml.ERROR_UNKNOWN }
		}, "device 4: get pci info: ", nvml.ERROR_UNKNOWN},
		{"numa", func(s *server.Server) {
			mockDev(s, 6).GetNumaNodeIdFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
		}, "device 6: get numa node: ", nvml.ERROR_GPU_IS_LOST},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := dgxh100.New()
			tc.breakIt(s)
			devs, err := Discover(s)
			require.Nil(t, devs)
			require.ErrorContains(t, err, tc.msg)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
				var ret nvml.Return
				if errors.As(tc.is, &ret) {
					require.Contains(t, err.Error(), ret.Error(), "NVML's own words are kept")
				}
			}
		})
	}
}

func TestDeviceAPI(t *testing.T) {
	d := Device{Index: 2, UUID: "GPU-x", Name: "n", MemoryBytes: 5, Minor: 9, PCIBusID: "p", NUMANode: 1}
	require.Equal(t, api.Device{Index: 2, UUID: "GPU-x", Name: "n", MemoryBytes: 5, Minor: 9, PCIBusID: "p", NUMANode: 1}, d.API())
}

func TestNVMLOnMock(t *testing.T) {
	s := dgxh100.New()
	n := NewFromInterface(s)
	require.Equal(t, "(interface)", n.Path())
	devs, err := n.Devices()
	require.NoError(t, err)
	require.Len(t, devs, 8)
	u0, u1 := devs[0].UUID, devs[1].UUID

	// The mock does not implement process or utilization queries: an error, not
	// a panic.
	_, err = n.Processes(u0)
	require.ErrorIs(t, err, ErrNotImplemented)
	require.ErrorContains(t, err, u0)
	_, err = n.Utilization(u0)
	require.ErrorIs(t, err, ErrNotImplemented)

	mockDev(s, 0).GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{
			{Pid: 100, UsedGpuMemory: 1 << 30},
			{Pid: 200, UsedGpuMemory: ^uint64(0)}, // NVML_VALUE_NOT_AVAILABLE
			{Pid: 100, UsedGpuMemory: 512 << 20},  // same process, another MIG instance
		}, nvml.SUCCESS
	}
	mockDev(s, 1).GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return nil, nvml.SUCCESS
	}
	mockDev(s, 0).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: 42, Memory: 7}, nvml.SUCCESS
	}
	mockDev(s, 1).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{}, nvml.ERROR_GPU_IS_LOST
	}

	procs, err := n.Processes(u0)
	require.NoError(t, err)
	require.Equal(t, []ProcessMemory{
		{HostPID: 100, UsedBytes: 1<<30 + 512<<20},
		{HostPID: 200, UsedBytes: 0},
	}, procs)
	procs, err = n.Processes(u1)
	require.NoError(t, err)
	require.Empty(t, procs)

	util, err := n.Utilization(u0)
	require.NoError(t, err)
	require.Equal(t, uint32(42), util)
	_, err = n.Utilization(u1)
	require.ErrorIs(t, err, nvml.ERROR_GPU_IS_LOST)
	require.ErrorContains(t, err, "device "+u1+": get utilization")

	_, err = n.Processes("GPU-nope")
	require.ErrorIs(t, err, nvml.ERROR_INVALID_ARGUMENT)
	require.ErrorContains(t, err, "device GPU-nope: get handle")

	// Handles are looked up once per device, not once per query.
	byUUID := len(s.DeviceGetHandleByUUIDCalls())
	for i := 0; i < 5; i++ {
		_, err := n.Processes(u0)
		require.NoError(t, err)
		_, err = n.Utilization(u0)
		require.NoError(t, err)
	}
	require.Equal(t, byUUID, len(s.DeviceGetHandleByUUIDCalls()))

	// Close: idempotent, leaves a caller's interface alone, and every later
	// call says so.
	require.NoError(t, n.Close())
	require.NoError(t, n.Close())
	require.Empty(t, s.ShutdownCalls(), "NewFromInterface's lib belongs to the caller")
	_, err = n.Devices()
	require.ErrorIs(t, err, ErrClosed)
	_, err = n.Processes(u0)
	require.ErrorIs(t, err, ErrClosed)
	_, err = n.Utilization(u0)
	require.ErrorIs(t, err, ErrClosed)
}

// Queries from many goroutines, racing a Close, neither race nor panic.
func TestNVMLConcurrentUse(t *testing.T) {
	s := dgxh100.New()
	for i := range s.Devices {
		mockDev(s, i).GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{{Pid: uint32(1000 + i), UsedGpuMemory: 1}}, nvml.SUCCESS
		}
		mockDev(s, i).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(i)}, nvml.SUCCESS
		}
	}
	n := NewFromInterface(s)
	devs, err := n.Devices()
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				d := devs[(g+i)%len(devs)]
				procs, err := n.Processes(d.UUID)
				if err == nil && (len(procs) != 1 || procs[0].HostPID != 1000+d.Index) {
					err = fmt.Errorf("device %d: wrong processes %v", d.Index, procs)
				}
				if err != nil && !errors.Is(err, ErrClosed) {
					errs <- err
				}
				if _, err := n.Utilization(d.UUID); err != nil && !errors.Is(err, ErrClosed) {
					errs <- err
				}
				if g == 0 && i == 25 {
					if err := n.Close(); err != nil {
						errs <- err
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
