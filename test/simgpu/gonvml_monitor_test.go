package simgpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/require"
)

// monitorChildEnv marks the child process TestGoNVMLMonitorQueries runs itself in.
const monitorChildEnv = "SIMGPU_TEST_MONITOR_CHILD"

// What monitors such as nvtop read besides memory and processes (README "NVML for
// monitors"), through the unmodified go-nvml, on an idle device: a passively cooled
// PCIe Gen5 x16 data-center card.
//
// The simulated NVML maps its node once per process (as the real one opens the
// driver once), and TestGoNVMLSeesTheNode loads it into this test process for
// another node; so the checks run in a child: this test binary, run for this test
// alone.
func TestGoNVMLMonitorQueries(t *testing.T) {
	if os.Getenv(monitorChildEnv) == "" {
		e := newNode(t, Config{Devices: 1, Memory: 2 << 30, SMs: 8, SamplePeriod: 100 * time.Millisecond})
		c := exec.Command(os.Args[0], "-test.run=^TestGoNVMLMonitorQueries$", "-test.count=1", "-test.v")
		c.Env = append(os.Environ(), monitorChildEnv+"="+e.root, "VGPU_SIM_STATE="+e.state)
		out, err := c.CombinedOutput()
		require.NoError(t, err, "the child:\n%s", out)
		return
	}
	root := os.Getenv(monitorChildEnv)
	lib := nvml.New(nvml.WithLibraryPath(filepath.Join(root, "build/simgpu/libnvidia-ml.so.1")))
	require.Equal(t, nvml.SUCCESS, lib.Init())
	defer func() { require.Equal(t, nvml.SUCCESS, lib.Shutdown()) }()
	dev, ret := lib.DeviceGetHandleByIndex(0)
	require.Equal(t, nvml.SUCCESS, ret)

	u32 := func(v uint32, ret nvml.Return) uint32 {
		t.Helper()
		require.Equal(t, nvml.SUCCESS, ret, nvml.ErrorString(ret))
		return v
	}
	u32i := func(v int, ret nvml.Return) int {
		t.Helper()
		require.Equal(t, nvml.SUCCESS, ret, nvml.ErrorString(ret))
		return v
	}
	require.Equal(t, 5, u32i(dev.GetMaxPcieLinkGeneration()))
	require.Equal(t, 16, u32i(dev.GetMaxPcieLinkWidth()))
	require.Equal(t, 5, u32i(dev.GetCurrPcieLinkGeneration()))
	require.Equal(t, 16, u32i(dev.GetCurrPcieLinkWidth()))
	require.Equal(t, uint32(0), u32(dev.GetPcieThroughput(nvml.PCIE_UTIL_TX_BYTES)))
	require.Equal(t, uint32(0), u32(dev.GetPcieThroughput(nvml.PCIE_UTIL_RX_BYTES)))

	_, ret = dev.GetFanSpeed()
	require.Equal(t, nvml.ERROR_NOT_SUPPORTED, ret, "no fan on a data-center card")
	require.Equal(t, 0, u32i(dev.GetNumFans()))

	require.Equal(t, uint32(30), u32(dev.GetTemperature(nvml.TEMPERATURE_GPU)), "idle")
	require.Equal(t, uint32(92), u32(dev.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_SHUTDOWN)))
	require.Equal(t, uint32(87), u32(dev.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_SLOWDOWN)))
	_, ret = dev.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_ACOUSTIC_MIN)
	require.Equal(t, nvml.ERROR_NOT_SUPPORTED, ret)

	require.Equal(t, uint32(70000), u32(dev.GetPowerUsage()), "idle, mW")
	require.Equal(t, uint32(700000), u32(dev.GetEnforcedPowerLimit()))
	require.Equal(t, uint32(700000), u32(dev.GetPowerManagementLimit()))

	require.Equal(t, uint32(345), u32(dev.GetClockInfo(nvml.CLOCK_SM)), "idle")
	require.Equal(t, uint32(1980), u32(dev.GetMaxClockInfo(nvml.CLOCK_GRAPHICS)))
	require.Equal(t, uint32(2619), u32(dev.GetClockInfo(nvml.CLOCK_MEM)))

	util, period, ret := dev.GetEncoderUtilization()
	require.Equal(t, nvml.SUCCESS, ret)
	require.Equal(t, [2]uint32{0, 100000}, [2]uint32{util, period}, "0 % over one sample period (µs)")
	util, period, ret = dev.GetDecoderUtilization()
	require.Equal(t, nvml.SUCCESS, ret)
	require.Equal(t, [2]uint32{0, 100000}, [2]uint32{util, period})
}
