package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

// cellNode is where a vgpud-mode cell runs: a fresh simulated node per cell
// (--driver sim), or the machine's GPU 0 (--driver real). The cell's steps are
// the same on both — a bin/vgpud on the node's NVML, tenants under `vgpuctl
// run`, the sampler reading NVML's per-process utilization — and what differs
// is here.
type cellNode interface {
	// setUp readies the node for one cell in dir and returns the length of
	// the sample periods the figures are cut into and the device queue
	// (0: unknown).
	setUp(dir string, c vgpudCellSpec) (period int64, queueNs uint64, err error)
	// startVgpud starts the cell's vgpud, its state under dir.
	startVgpud(ctx context.Context, dir string) (*benchVgpud, error)
	// startSampler starts the benchmark's own NVML reader.
	startSampler(ctx context.Context, period int64) (*sampler, error)
	// env is a tenant's environment without the cell's vgpud: the driver's.
	env() []string
	// command is the tenant's program below `vgpuctl run --`, with its
	// arguments (seed: the tenant's index in its start group, from 1), and
	// the `vgpuctl run` flags that place the slice.
	command(t vgpudTenantSpec, seconds float64, seed int) (args, place []string)
}

// simNode is a fresh simulated node per cell, on the benchmark's own build.
type simNode struct {
	r     *vgpudRun
	state string // the current cell's node state file
}

func (n *simNode) setUp(dir string, c vgpudCellSpec) (int64, uint64, error) {
	n.state = filepath.Join(dir, "node")
	// The simulator's defaults for the NVML sample period and the device queue.
	if err := simgpu.Init(n.state, simgpu.Config{Devices: 1, Memory: 80 << 30, SMs: n.r.opts.SMs,
		NsPerBlock: c.NsPerBlock}); err != nil {
		return 0, 0, fmt.Errorf("simulated node: %w", err)
	}
	st, err := simgpu.Status(n.state)
	if err != nil {
		return 0, 0, fmt.Errorf("simulated node: %w", err)
	}
	return int64(st.SamplePeriodNs), st.MaxBacklogNs, nil
}

func (n *simNode) startVgpud(ctx context.Context, dir string) (*benchVgpud, error) {
	return startBenchVgpud(ctx, DaemonOptions{}, n.r.vgpud, n.r.simLib, n.state, dir)
}

func (n *simNode) startSampler(ctx context.Context, period int64) (*sampler, error) {
	return startSampler(ctx, n.env(), n.r.simLib, period, false)
}

func (n *simNode) env() []string {
	return append(cleanEnv(), "LD_LIBRARY_PATH="+n.r.paths.SimLibDir, "VGPU_SIM_STATE="+n.state)
}

func (n *simNode) command(t vgpudTenantSpec, seconds float64, seed int) ([]string, []string) {
	args := append([]string{n.r.load}, loadArgs(t.Workload, n.r.opts.SMs, t.Grid, seconds)...)
	return append(args, "--seed", strconv.Itoa(seed)), nil
}

// realSamplePeriod cuts the real driver's samples into periods: NVML's
// per-process utilization is sampled "between 1 second and 1/6 second"
// (nvml.h, nvmlDeviceGetSamples), 1/6 s on the data-center cards we know of,
// and the simulator's default is the same, so the figures of both drivers are
// cut alike.
const realSamplePeriod = int64(time.Second / 6)

// Kernel lengths of the real-GPU cells: throttle_real calibrated alone at the
// start for a kernel of ThrottleVgpudOptions.ShortKernelMs and LongKernelMs.
const (
	KernelShort = "short"
	KernelLong  = "long"
)

// realNode is the machine's GPU 0 (NVML index 0), the same for every cell;
// the tenants run build/test/throttle_real (or --prog) with the kernels
// calibrated once.
type realNode struct {
	r       *vgpudRun
	uuid    string
	gpuName string
	kernels map[string]RealThrottleConfig // by KernelShort, KernelLong
}

// newRealNode opens NVML for GPU 0's identity and calibrates both kernels
// bare, nothing else on the GPU.
func newRealNode(ctx context.Context, r *vgpudRun) (*realNode, error) {
	nv, uuid, name, err := openNVML(r.opts.NVMLLib)
	if err != nil {
		return nil, fmt.Errorf("NVML: %w", err)
	}
	_ = nv.Close()
	n := &realNode{r: r, uuid: uuid, gpuName: name, kernels: map[string]RealThrottleConfig{}}
	for _, k := range []struct {
		name string
		ms   float64
	}{{KernelShort, r.opts.ShortKernelMs}, {KernelLong, r.opts.LongKernelMs}} {
		cal, err := newRealRun(r.paths.Root, ThrottleRealOptions{Prog: r.opts.Prog, Waves: 1, Block: r.opts.Block,
			KernelMs: k.ms, Log: r.log})
		if err != nil {
			return nil, err
		}
		if err := cal.calibrateOnce(ctx, false); err != nil {
			return nil, fmt.Errorf("calibrating the %s kernel (%g ms): %w", k.name, k.ms, err)
		}
		cal.cal.KernelMsTarget = k.ms
		n.kernels[k.name] = cal.cal
		fmt.Fprintf(r.log, "bench: throttle: %s kernel: %d iterations, grid %d x %d, %.3f ms alone\n",
			k.name, cal.cal.Iters, cal.cal.Grid, cal.cal.Block, float64(cal.cal.KernelNs)/1e6)
	}
	return n, nil
}

func (n *realNode) setUp(string, vgpudCellSpec) (int64, uint64, error) {
	return realSamplePeriod, 0, nil
}

func (n *realNode) startVgpud(ctx context.Context, dir string) (*benchVgpud, error) {
	return startRealBenchVgpud(ctx, n.r.vgpud, n.r.opts.NVMLLib, n.r.paths.LibVGPU, dir)
}

func (n *realNode) startSampler(ctx context.Context, period int64) (*sampler, error) {
	return startSampler(ctx, n.env(), n.r.opts.NVMLLib, period, true)
}

// env is the caller's environment (its LD_LIBRARY_PATH, and VGPU_SIM_STATE
// when rehearsing on the simulated node) without preloads or vgpu settings.
func (n *realNode) env() []string { return driverEnv() }

func (n *realNode) command(t vgpudTenantSpec, seconds float64, _ int) ([]string, []string) {
	k := n.kernels[t.Kernel]
	args := []string{n.r.opts.Prog, WorkKernel, strconv.FormatFloat(seconds, 'f', 3, 64),
		"--iters", strconv.FormatUint(k.Iters, 10), "--kernel-ns", strconv.FormatUint(k.KernelNs, 10),
		"--grid", strconv.Itoa(k.Grid), "--block", strconv.Itoa(k.Block),
		"--sync-every", strconv.Itoa(n.r.opts.SyncEvery)}
	return args, []string{"--uuid", n.uuid}
}

// driverEnv is the caller's environment without preloads and vgpu settings
// but VGPU_SIM_STATE (a rehearsal of the real-GPU modes on the simulated
// node names its node there).
func driverEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "CUDA_DEVICE_ORDER" || k == "CUDA_VISIBLE_DEVICES" ||
			(strings.HasPrefix(k, "VGPU_") && k != "VGPU_SIM_STATE") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "CUDA_DEVICE_ORDER=PCI_BUS_ID")
}

// realVgpudCells are the cells of the real-GPU vgpud mode: two real kernels
// of very different lengths, alone, side by side, and with a tenant joining
// and one leaving; sc scales the timeline.
func realVgpudCells(sc func(float64) time.Duration) []vgpudCellSpec {
	tenant := func(name string, pct float64, kernel string) vgpudTenantSpec {
		return vgpudTenantSpec{Name: name, SharePct: pct, Workload: WorkKernel, Kernel: kernel}
	}
	churn := []vgpudTenantSpec{tenant("a20", 20, KernelShort), tenant("b30", 30, KernelLong),
		tenant("c50", 50, KernelShort)}
	churn[2].Start, churn[0].Stop = sc(5), sc(12)
	return []vgpudCellSpec{
		{Name: "alone-short", About: "one tenant, short kernels", Duration: sc(10),
			Tenants: []vgpudTenantSpec{tenant("a30", 30, KernelShort)}},
		{Name: "alone-long", About: "one tenant, long kernels", Duration: sc(10),
			Tenants: []vgpudTenantSpec{tenant("a30", 30, KernelLong)}},
		{Name: "hetero", About: "short kernels at 30% next to long kernels at 60%", Duration: sc(15),
			Tenants: []vgpudTenantSpec{tenant("short30", 30, KernelShort), tenant("long60", 60, KernelLong)}},
		{Name: "churn", About: "20% (short) and 30% (long) running; 50% (short) joins at 5 s; the 20% one is killed at 12 s",
			Duration: sc(18), Tenants: churn},
	}
}
