package simgpu

import (
	"debug/elf"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const mib = uint64(1) << 20

// Driver-API semantics in one process: error codes, contexts, every allocation
// path's charge and credit, OOM at the device total (see sim_api.c).
func TestDriverAPISemantics(t *testing.T) {
	e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: 4, ContextMemory: u64(100 * mib)})
	require.Equal(t, "OK\n", e.run(t, "sim_api"))
	st, err := Status(e.state)
	require.NoError(t, err)
	require.Equal(t, uint64(0), st.Devices[0].Used, "a process that exited holds nothing")
}

func TestGetProcAddressVersioning(t *testing.T) {
	e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: 4})
	require.Equal(t, "OK\n", e.run(t, "sim_procaddr"))
}

func TestNVMLMatchesDriver(t *testing.T) {
	e := newNode(t, Config{Devices: 2, Memory: 1 << 30, SMs: 4, ContextMemory: u64(64 * mib)})
	require.Equal(t, "OK\n", e.run(t, "sim_nvml"))
}

// NVML's utilization comes per sample period of the device timeline and counts
// work when it executes: a kernel queued behind another process's 4 periods is
// credited in the period it runs in, not when it was launched; one sample per
// period, a period apart; lastSeenTimeStamp selects the samples after it (see
// sim_nvsample.c). At the default period (1/6 s, as NVML documents) and another.
func TestNVMLSamplesPerPeriodWhenWorkRuns(t *testing.T) {
	for _, period := range []time.Duration{DefaultSamplePeriod, 100 * time.Millisecond} {
		t.Run(period.String(), func(t *testing.T) {
			e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: 4, SamplePeriod: period})
			st, err := Status(e.state)
			require.NoError(t, err)
			require.Equal(t, uint64(period), st.SamplePeriodNs)
			require.Equal(t, "OK\n", e.run(t, "sim_nvsample", strconv.FormatInt(int64(period), 10),
				strconv.FormatUint(DefaultNsPerBlock, 10)))
		})
	}
}

// Launches occupy device time: synchronize waits at least the simulated duration
// (checked in sim_launch.c, lower bounds only) and the node records exactly the
// device time the process queued.
func TestLaunchesOccupyDeviceTime(t *testing.T) {
	const nsPerBlock, sms, grid, launches = 1_000_000, 4, 8, 60
	backlog := 20 * time.Millisecond
	e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: sms, NsPerBlock: nsPerBlock, MaxBacklog: backlog})
	start := time.Now()
	out := e.run(t, "sim_launch", strconv.Itoa(nsPerBlock), strconv.Itoa(sms), strconv.Itoa(grid),
		strconv.Itoa(launches), strconv.FormatInt(int64(backlog), 10))
	f := strings.Fields(out)
	require.Len(t, f, 2)
	busy := fieldU64(t, f[1])
	// 60 launches of 2 waves + 2 Ex launches + 2 graph runs of 2+4+6 waves, then
	// cuLaunch (1 block: 1 wave), cuLaunchGrid and cuLaunchGridAsync (2 waves each)
	// and a one-device cuLaunchCooperativeKernelMultiDevice (2 waves); 1 ms per wave.
	require.Equal(t, uint64((launches*2+2*2+2*(2+4+6)+1+2+2+2)*nsPerBlock), busy)
	require.GreaterOrEqual(t, time.Since(start), time.Duration(busy), "the program cannot finish before its device work")

	st, err := Status(e.state)
	require.NoError(t, err)
	d := st.Devices[0]
	require.Equal(t, busy, d.BusyNs, "the node records every queued ns")
	require.Equal(t, uint64(launches+2+2*3+4), d.Launches)
}

// Events: NOT_READY until the stream's queued work has run, elapsed time of a
// begin / end pair is the launch's span on the device (waiting behind queued work
// included), the driver's error codes, cuStreamWaitEvent, cuGetProcAddress (see
// sim_event.c).
func TestEvents(t *testing.T) {
	const nsPerBlock, sms = 200_000, 4
	e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: sms, NsPerBlock: nsPerBlock})
	require.Equal(t, "OK\n", e.run(t, "sim_event", strconv.Itoa(nsPerBlock), strconv.Itoa(sms)))
}

// A process's figures while it lives: memory (context + allocation), busy device
// time and launches, on the device it used and no other.
func TestPerProcessFiguresInStatus(t *testing.T) {
	e := newNode(t, Config{Devices: 2, Memory: 1 << 30, SMs: 4, NsPerBlock: 1000, ContextMemory: u64(32 * mib)})
	h := e.start(t, "sim_hold", strconv.FormatUint(100*mib, 10), "1", "5", "40")
	require.Equal(t, "READY", h.fields[0])
	st, err := Status(e.state)
	require.NoError(t, err)
	require.Empty(t, st.Devices[0].Processes, "device 0 was never touched")
	d1 := st.Devices[1]
	p := procOf(t, d1, h.pid())
	require.Equal(t, "sim_hold", p.Comm)
	require.Equal(t, 132*mib, p.UsedBytes, "context 32MiB + 100MiB")
	require.Equal(t, uint64(5*10*1000), p.BusyNs, "5 launches x ceil(40/4) waves x 1000 ns")
	require.Equal(t, uint64(5), p.Launches)
	require.Equal(t, uint64(1), p.Contexts)
	require.Equal(t, 132*mib, d1.Used)
	require.Equal(t, d1.Total-132*mib, d1.Free)

	h.release()
	st, err = Status(e.state)
	require.NoError(t, err)
	require.Equal(t, uint64(0), st.Devices[1].Used, "normal exit frees everything")
	require.Empty(t, st.Devices[1].Processes)
	require.Equal(t, 0, st.Reclaimed, "a normal exit needs no reclaim")
}

// Four processes fill one device at once: together they are admitted no more than
// the device holds, the device total is the sum of the per-process figures, and
// every process's own cuMemGetInfo/NVML view is the same device.
func TestProcessesShareOneTruth(t *testing.T) {
	const ctx = 16 * mib
	e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: 4, ContextMemory: u64(ctx)})
	var hs []*holder
	for i := 0; i < 4; i++ {
		hs = append(hs, e.start(t, "sim_fill", strconv.FormatUint(64*mib, 10)))
	}
	var admitted uint64
	for _, h := range hs {
		require.Equal(t, "FILLED", h.fields[0])
		admitted += fieldU64(t, h.fields[2]) * 64 * mib
	}
	st, err := Status(e.state)
	require.NoError(t, err)
	d := st.Devices[0]
	require.Len(t, d.Processes, 4)
	var sum uint64
	for _, p := range d.Processes {
		sum += p.UsedBytes
	}
	require.Equal(t, admitted+4*ctx, sum)
	require.Equal(t, sum, d.Used, "device used is the sum of its processes")
	require.LessOrEqual(t, d.Used, d.Total, "never over the device")
	require.Less(t, d.Free, 64*mib, "every filler stopped only when no 64MiB chunk fit")

	// A fifth process sees the same device: nothing left for another context.
	out, err := e.cmd("sim_hold", "0").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "CUDA_ERROR_OUT_OF_MEMORY")

	for _, h := range hs {
		h.release()
	}
	st, err = Status(e.state)
	require.NoError(t, err)
	require.Equal(t, uint64(0), st.Devices[0].Used, "nothing lost after all exit")
}

// A SIGKILLed process's memory comes back: lazily when another process would
// otherwise run out of memory (C side), and on status (Go side).
func TestKilledProcessMemoryIsReturned(t *testing.T) {
	e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: 4, ContextMemory: u64(16 * mib)})

	// C side: the second 700 MiB process only fits once the first is reclaimed.
	h1 := e.start(t, "sim_hold", strconv.FormatUint(700*mib, 10))
	h1.kill(t)
	h2 := e.start(t, "sim_hold", strconv.FormatUint(700*mib, 10))
	st, err := Status(e.state)
	require.NoError(t, err)
	require.Equal(t, 0, st.Reclaimed, "the driver already reclaimed the dead process")
	require.Len(t, st.Devices[0].Processes, 1)
	require.Equal(t, h2.pid(), st.Devices[0].Processes[0].PID)
	require.Equal(t, 716*mib, st.Devices[0].Used)

	// Go side: status reclaims.
	h2.kill(t)
	st, err = Status(e.state)
	require.NoError(t, err)
	require.Equal(t, 1, st.Reclaimed)
	require.Equal(t, uint64(0), st.Devices[0].Used)
	require.Empty(t, st.Devices[0].Processes)
}

// Creating a context opens the device node; a device whose node cannot be opened
// is not visible, and with none cuInit fails as the real driver does.
func TestDeviceNodes(t *testing.T) {
	dir := t.TempDir()
	root := ensureBuilt(t)
	state := filepath.Join(dir, "node")
	pattern := filepath.Join(dir, "nodes", "vgpusim%d")
	require.NoError(t, Init(state, Config{Devices: 2, Memory: 1 << 30, SMs: 4, DeviceNodes: pattern}))
	e := simEnv{root: root, state: state}

	out, err := e.cmd("sim_hold", "0").CombinedOutput()
	require.Error(t, err, "no device node exists yet")
	require.Contains(t, string(out), "CUDA_ERROR_NO_DEVICE")

	require.NoError(t, os.MkdirAll(filepath.Join(dir, "nodes"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nodes", "vgpusim1"), nil, 0o666))
	// Only minor 1 is reachable: it becomes CUDA ordinal 0.
	h := e.start(t, "sim_hold", strconv.FormatUint(8*mib, 10), "0")
	st, err := Status(state)
	require.NoError(t, err)
	require.Empty(t, st.Devices[0].Processes)
	procOf(t, st.Devices[1], h.pid())

	// The context holds the node open, like the real driver's /dev/nvidiaN.
	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(h.pid()), "fd"))
	require.NoError(t, err)
	open := false
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(h.pid()), "fd", fd.Name()))
		if err == nil && target == filepath.Join(dir, "nodes", "vgpusim1") {
			open = true
		}
	}
	require.True(t, open, "the context does not hold its device node open")
}

func TestCudaVisibleDevices(t *testing.T) {
	e := newNode(t, Config{Devices: 3, Memory: 1 << 30, SMs: 4})
	st, err := Status(e.state)
	require.NoError(t, err)
	// CUDA ordinal 0 is the device CUDA_VISIBLE_DEVICES names by UUID.
	c := e.cmd("sim_hold", strconv.FormatUint(mib, 10), "0")
	c.Env = append(c.Env, "CUDA_VISIBLE_DEVICES="+st.Devices[2].UUID)
	h := startCmd(t, c)
	st, err = Status(e.state)
	require.NoError(t, err)
	procOf(t, st.Devices[2], h.pid())
	require.Empty(t, st.Devices[0].Processes)

	// An index list works too; an entry naming no device ends the list.
	c = e.cmd("sim_hold", "0", "1")
	c.Env = append(c.Env, "CUDA_VISIBLE_DEVICES=1,7,0")
	out, err := c.CombinedOutput()
	require.Error(t, err, "only one device is visible, ordinal 1 must not exist")
	require.Contains(t, string(out), "CUDA_ERROR_INVALID_DEVICE")
}

// A SIGKILLed process that its parent has not reaped yet (a zombie) has released its
// memory, as with the real driver (see sim_zombie.c).
func TestZombieMemoryIsReturned(t *testing.T) {
	e := newNode(t, Config{Devices: 1, Memory: 1 << 30, SMs: 4, ContextMemory: u64(16 * mib)})
	require.Equal(t, "OK\n", e.run(t, "sim_zombie"))
}

// Both libraries bind their own symbols (-Bsymbolic), like the real libcuda: when
// cuCtxCreate calls cuCtxCreate_v2 internally, an interposer such as libvgpu must not
// see a second call.
func TestLibrariesAreSymbolic(t *testing.T) {
	root := ensureBuilt(t)
	for _, lib := range []string{"build/simgpu/libcuda.so.1", "build/simgpu/libnvidia-ml.so.1"} {
		f, err := elf.Open(filepath.Join(root, lib))
		require.NoError(t, err)
		symbolic := false
		if tags, err := f.DynValue(elf.DT_FLAGS); err == nil {
			for _, v := range tags {
				symbolic = symbolic || v&uint64(elf.DF_SYMBOLIC) != 0
			}
		}
		if tags, err := f.DynValue(elf.DT_SYMBOLIC); err == nil && len(tags) > 0 {
			symbolic = true
		}
		require.NoError(t, f.Close())
		require.True(t, symbolic, "%s is not linked -Bsymbolic", lib)
	}
}
