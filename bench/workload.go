package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// Runs of the workload benchmark (its rows), besides the --compare peers.
const (
	ModeBare      = "bare"
	ModeVGPUMem   = "vgpu-mem"      // libvgpu, a slice with a memory cap only
	ModeVGPUShare = "vgpu-share100" // libvgpu, a slice with a compute share of 100 %
)

// GoalWorkloadAddedPct is the median step time libvgpu may add, in percent.
const GoalWorkloadAddedPct = 0.5

// WorkloadOptions configures RunWorkload; DefaultWorkloadOptions gives the
// defaults of `vgpu-bench workload`.
type WorkloadOptions struct {
	Root string // holds build/ ("" = FindRoot)
	// Rounds: alternations of every run (forward, then backward: ABBA).
	Rounds int
	// Steps timed per run, after Warmup untimed ones.
	Steps, Warmup int
	// The step: Launches kernels of Grid blocks, a graph of GraphNodes kernel
	// nodes, CopyBytes host-to-device, a cache of Blocks device blocks of which
	// one is freed and allocated again every ReallocEvery steps.
	Launches, Grid, GraphNodes, Blocks, CopyBytes, ReallocEvery int
	// NsPerBlock: the simulated device time of one wave of blocks (SMs = 132).
	NsPerBlock uint64
	// MemoryCap: the memory limit of both libvgpu slices.
	MemoryCap uint64
	// Peers are other interception libraries run beside bare and libvgpu.
	Peers      []Peer
	RunTimeout time.Duration
	Log        io.Writer
}

// DefaultWorkloadOptions returns the defaults.
func DefaultWorkloadOptions() WorkloadOptions {
	return WorkloadOptions{
		Rounds: 10, Steps: 400, Warmup: 20,
		Launches: 48, Grid: simSMs, GraphNodes: 8, Blocks: 8, CopyBytes: 256 << 10, ReallocEvery: 8,
		NsPerBlock: 20_000, MemoryCap: 16 << 30, RunTimeout: 2 * time.Minute,
	}
}

func (o *WorkloadOptions) validate() error {
	switch {
	case o.Rounds < 1, o.Steps < 1, o.Warmup < 0:
		return fmt.Errorf("rounds %d and steps %d must be >= 1, warmup %d >= 0", o.Rounds, o.Steps, o.Warmup)
	case o.Launches < 0, o.GraphNodes < 0, o.Launches+o.GraphNodes == 0:
		return fmt.Errorf("launches %d, graph nodes %d: want some kernels", o.Launches, o.GraphNodes)
	case o.Grid < 1, o.Blocks < 1, o.CopyBytes < 0, o.CopyBytes > 1<<20, o.ReallocEvery < 0:
		return fmt.Errorf("grid %d, blocks %d (>= 1), copy bytes %d (0..1 MiB), realloc every %d (>= 0)",
			o.Grid, o.Blocks, o.CopyBytes, o.ReallocEvery)
	case o.NsPerBlock < 1:
		return fmt.Errorf("ns per block %d must be >= 1", o.NsPerBlock)
	case o.RunTimeout <= 0:
		return fmt.Errorf("run timeout %v must be > 0", o.RunTimeout)
	}
	return nil
}

// WorkloadConfig records how the figures were taken.
type WorkloadConfig struct {
	Rounds         int     `json:"rounds"`
	Steps          int     `json:"steps_per_run"`
	Warmup         int     `json:"warmup_steps"`
	Launches       int     `json:"launches_per_step"`
	Grid           int     `json:"grid_blocks"`
	GraphNodes     int     `json:"graph_kernel_nodes"`
	Blocks         int     `json:"cache_blocks"`
	CopyBytes      int     `json:"htod_bytes_per_step"`
	ReallocEvery   int     `json:"realloc_every_steps"`
	CallsPerStep   int     `json:"driver_calls_per_step"`
	SMs            int     `json:"sim_sms"`
	NsPerBlock     uint64  `json:"sim_ns_per_block"`
	LaunchDeviceUS float64 `json:"sim_device_us_per_kernel"`
	StepDeviceUS   float64 `json:"sim_device_us_per_step"`
	MemoryCap      uint64  `json:"memory_cap_bytes"`
	Peers          []Peer  `json:"peers,omitempty"`
}

// WorkloadRow is one run's step times (µs) and what it adds to bare.
type WorkloadRow struct {
	Mode string  `json:"mode"` // bare, vgpu-mem, vgpu-share100 or a peer's name
	Peer bool    `json:"peer,omitempty"`
	Step Summary `json:"step_us"`
	// AddedMedianPct, AddedP99Pct: (this − bare) / bare × 100, of the pooled median and p99.
	AddedMedianPct float64 `json:"added_median_pct"`
	AddedP99Pct    float64 `json:"added_p99_pct"`
	AddedMedianUS  float64 `json:"added_median_us"`
	// RoundAddedPct: per round, this run's median against the bare median of the same round.
	RoundAddedPct []float64 `json:"round_added_median_pct,omitempty"`
	GoalPct       *float64  `json:"goal_added_median_pct,omitempty"` // libvgpu rows only
	Met           *bool     `json:"met,omitempty"`
	// RatioToVGPU (peers): the peer's added median over vgpu-mem's; nil when
	// libvgpu added nothing measurable.
	RatioToVGPU *float64 `json:"ratio_to_vgpu_mem,omitempty"`
}

// WorkloadReport is the result of `vgpu-bench workload`.
type WorkloadReport struct {
	Benchmark string         `json:"benchmark"` // "workload"
	Machine   Machine        `json:"machine"`
	Config    WorkloadConfig `json:"config"`
	Rows      []WorkloadRow  `json:"rows"`
	AllMet    bool           `json:"all_met"`
	Notes     []string       `json:"notes,omitempty"`
}

// workloadOut is what workload_step prints.
type workloadOut struct {
	Steps        int      `json:"steps"`
	Kernels      int      `json:"kernels_per_step"`
	CallsPerStep int      `json:"calls_per_step"`
	StepNS       []uint64 `json:"step_ns"`
}

type workloadRun struct {
	opts        WorkloadOptions
	prog        string
	lib         string
	simLib      string
	state       string
	slices      map[string]string // mode -> slice dir
	usages      []*shm.UsageRegion
	callsPerRun int
}

// RunWorkload times build/test/workload_step per step, bare and under libvgpu
// (memory cap only; compute share 100 %) and every peer, alternating.
func RunWorkload(ctx context.Context, opts WorkloadOptions) (*WorkloadReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("workload options: %w", err)
	}
	root, err := repositoryRoot(opts.Root, FindRoot)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	p := pathsAt(root)
	r := &workloadRun{opts: opts, prog: filepath.Join(root, "build", "test", "workload_step"),
		lib: p.LibVGPU, simLib: p.SimLibDir, slices: map[string]string{}}
	for _, f := range []string{r.prog, r.lib, filepath.Join(p.SimLibDir, "libcuda.so.1")} {
		if !fileExists(f) {
			return nil, fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	tmp, err := os.MkdirTemp("", "vgpu-bench-workload-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := r.setup(tmp); err != nil {
		return nil, err
	}
	defer func() {
		for _, u := range r.usages {
			u.Close()
		}
	}()

	modes := []string{ModeBare, ModeVGPUMem, ModeVGPUShare}
	for _, peer := range opts.Peers {
		modes = append(modes, peer.Name)
	}
	pooled := make([][]float64, len(modes))
	roundMed := make([][]float64, len(modes))
	for round := 0; round < opts.Rounds; round++ {
		for _, i := range rotation(len(modes), round) {
			us, err := r.once(ctx, modes[i])
			if err != nil {
				return nil, err
			}
			med := Median(us)
			fmt.Fprintf(log, "bench: round %d/%d %-14s median %8.1f µs/step\n", round+1, opts.Rounds, modes[i], med)
			pooled[i] = append(pooled[i], us...)
			roundMed[i] = append(roundMed[i], med)
		}
	}

	kernelUS := float64(opts.NsPerBlock) * float64((opts.Grid+simSMs-1)/simSMs) / 1e3
	report := &WorkloadReport{
		Benchmark: "workload",
		Machine:   hostMachine(ctx, root, time.Now()),
		Config: WorkloadConfig{
			Rounds: opts.Rounds, Steps: opts.Steps, Warmup: opts.Warmup, Launches: opts.Launches,
			Grid: opts.Grid, GraphNodes: opts.GraphNodes, Blocks: opts.Blocks, CopyBytes: opts.CopyBytes,
			ReallocEvery: opts.ReallocEvery, CallsPerStep: r.callsPerRun, SMs: simSMs,
			NsPerBlock: opts.NsPerBlock, LaunchDeviceUS: kernelUS,
			StepDeviceUS: kernelUS * float64(opts.Launches+opts.GraphNodes),
			MemoryCap:    opts.MemoryCap, Peers: opts.Peers,
		},
	}
	report.Machine.Driver = "simgpu"
	for i, m := range modes {
		row := WorkloadRow{Mode: m, Peer: i >= 3, Step: Summarize(pooled[i])}
		report.Rows = append(report.Rows, row)
	}
	for i := range report.Rows {
		for j := range roundMed[i] {
			b := roundMed[0][j]
			report.Rows[i].RoundAddedPct = append(report.Rows[i].RoundAddedPct, (roundMed[i][j]-b)/b*100)
		}
	}
	report.Notes = append(report.Notes,
		"the simulated device runs in real time: a step's kernels take their device time, "+
			"so the step is as long as its device work plus what the host adds; a cost libvgpu adds "+
			"while the stream is busy is hidden, as it is on a GPU")
	report.Evaluate()
	return report, nil
}

// Evaluate fills the added figures, the goals and AllMet from the rows' steps.
func (r *WorkloadReport) Evaluate() {
	all := true
	if len(r.Rows) == 0 {
		r.AllMet = false
		return
	}
	bare := r.Rows[0].Step
	var vgpuAdded float64
	for i := range r.Rows {
		row := &r.Rows[i]
		row.GoalPct, row.Met, row.RatioToVGPU = nil, nil, nil
		if i == 0 {
			row.RoundAddedPct = nil
			continue
		}
		row.AddedMedianUS = row.Step.Median - bare.Median
		if bare.Median > 0 {
			row.AddedMedianPct = row.AddedMedianUS / bare.Median * 100
		}
		if bare.P99 > 0 {
			row.AddedP99Pct = (row.Step.P99 - bare.P99) / bare.P99 * 100
		}
		switch {
		case row.Mode == ModeVGPUMem || row.Mode == ModeVGPUShare:
			g := GoalWorkloadAddedPct
			met := row.AddedMedianPct <= g
			row.GoalPct, row.Met = &g, &met
			all = all && met
			if row.Mode == ModeVGPUMem {
				vgpuAdded = row.AddedMedianUS
			}
		case row.Peer:
			row.RatioToVGPU = PeerRatio(row.AddedMedianUS, vgpuAdded)
		}
	}
	r.AllMet = all
}

// Markdown renders the report.
func (r *WorkloadReport) Markdown() string {
	var b strings.Builder
	m, c := r.Machine, r.Config
	fmt.Fprintf(&b, "# vgpu workload benchmark: a training/inference step, driver %s\n\n", m.Driver)
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", m.GoVersion, m.Date, orDash(m.Commit))
	fmt.Fprintf(&b, "- step: %d cuLaunchKernel of %d blocks + cuGraphLaunch of a %d-kernel graph, "+
		"%d B cuMemcpyHtoDAsync + 4 KiB cuMemcpyDtoHAsync, cuStreamSynchronize; a cache of %d blocks "+
		"(1..%d MiB), one freed and allocated again every %d steps (%d driver calls per step)\n",
		c.Launches, c.Grid, c.GraphNodes, c.CopyBytes, c.Blocks, c.Blocks, c.ReallocEvery, c.CallsPerStep)
	fmt.Fprintf(&b, "- simulated device: %d SMs, %d ns per wave of blocks: %.1f µs of device time per kernel, "+
		"%.0f µs per step\n", c.SMs, c.NsPerBlock, c.LaunchDeviceUS, c.StepDeviceUS)
	fmt.Fprintf(&b, "- %d rounds, each run in turn (forward, then backward: ABBA); %d timed steps per run after %d warm-up; "+
		"%s = memory cap %d GiB only, %s = the same and a compute share of 100 %% (the token bucket's hot path, "+
		"tokens never short)\n", c.Rounds, c.Steps, c.Warmup, ModeVGPUMem, c.MemoryCap>>30, ModeVGPUShare)
	for _, p := range c.Peers {
		fmt.Fprintf(&b, "- peer %s: LD_PRELOAD=%s %s\n", p.Name, p.Lib, strings.Join(p.Env, " "))
	}
	b.WriteString("\n## Step time (µs; added = run − bare, of the pooled median / p99)\n\n")
	b.WriteString("| run | steps | median | p99 | added median | added p99 | added median per round | goal | result |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, row := range r.Rows {
		added, addedP99, rounds, goal, res := "—", "—", "—", "—", "—"
		if row.Mode != ModeBare {
			added = fmt.Sprintf("%s µs (%s %%)", signed(row.AddedMedianUS, 1), signed(row.AddedMedianPct, 2))
			addedP99 = signed(row.AddedP99Pct, 2) + " %"
			rounds = spread(row.RoundAddedPct, 2) + " %"
		}
		if row.GoalPct != nil {
			goal = fmt.Sprintf("≤ %.1f %%", *row.GoalPct)
			res = yesNo(*row.Met)
		}
		if row.Peer {
			res = "peer: " + ratioString(row.RatioToVGPU) + " libvgpu's added"
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %s | %s | %s | %s | %s |\n", row.Mode, row.Step.N,
			row.Step.Median, row.Step.P99, added, addedP99, rounds, goal, res)
	}
	b.WriteString("\n")
	writeVerdict(&b, r.AllMet, r.Notes)
	return b.String()
}

// setup creates the simulated node and the two libvgpu slices.
func (r *workloadRun) setup(tmp string) error {
	r.state = filepath.Join(tmp, "sim.state")
	ctxMem := uint64(simContextBytes)
	if err := simgpu.Init(r.state, simgpu.Config{Devices: 1, Memory: simMemory, SMs: simSMs,
		NsPerBlock: r.opts.NsPerBlock, ContextMemory: &ctxMem}); err != nil {
		return fmt.Errorf("creating the simulated node: %w", err)
	}
	for _, mode := range []string{ModeVGPUMem, ModeVGPUShare} {
		dir := filepath.Join(tmp, mode)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("slice dir: %w", err)
		}
		spec := shm.SliceSpec{ID: "vgpu-bench-" + mode, Devices: []shm.DeviceBudget{{
			MemoryLimit: r.opts.MemoryCap, ContextOverhead: simContextBytes, ComputeShareBP: shm.MaxShareBP}}}
		if mode == ModeVGPUShare {
			spec.Flags = shm.BudgetFlagManaged
			spec.Devices[0].TokenRate, spec.Devices[0].TokenBurst = unspentRate, unspentRate
		}
		if err := shm.CreateSlice(dir, spec); err != nil {
			return fmt.Errorf("creating slice %s: %w", mode, err)
		}
		u, err := shm.OpenUsage(filepath.Join(dir, shm.UsageFile))
		if err != nil {
			return fmt.Errorf("opening slice %s: %w", mode, err)
		}
		r.usages = append(r.usages, u)
		r.slices[mode] = dir
	}
	return nil
}

// once runs workload_step as mode and returns its step times in µs.
func (r *workloadRun) once(ctx context.Context, mode string) ([]float64, error) {
	o := r.opts
	args := []string{"--steps", strconv.Itoa(o.Steps), "--warmup", strconv.Itoa(o.Warmup),
		"--launches", strconv.Itoa(o.Launches), "--grid", strconv.Itoa(o.Grid),
		"--graph-nodes", strconv.Itoa(o.GraphNodes), "--blocks", strconv.Itoa(o.Blocks),
		"--copy-bytes", strconv.Itoa(o.CopyBytes), "--realloc-every", strconv.Itoa(o.ReallocEvery)}
	env := baseEnviron(r.simLib, r.state)
	switch mode {
	case ModeBare:
	case ModeVGPUMem, ModeVGPUShare:
		env = append(env, "LD_PRELOAD="+r.lib, "VGPU_SLICE_DIR="+r.slices[mode], "VGPU_FAIL_MODE=refuse")
		args = append(args, "--expect-lib", "/libvgpu.so")
	default:
		for _, p := range o.Peers {
			if p.Name == mode {
				env = peerEnviron(env, p)
				args = append(args, "--expect-lib", p.marker())
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.RunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.prog, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("workload_step (%s): %w: %s", mode, err, strings.TrimSpace(stderr.String()))
	}
	var out workloadOut
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("workload_step (%s): %w", mode, err)
	}
	if len(out.StepNS) != o.Steps {
		return nil, fmt.Errorf("workload_step (%s): %d steps, want %d", mode, len(out.StepNS), o.Steps)
	}
	r.callsPerRun = out.CallsPerStep
	for _, u := range r.usages {
		if _, err := u.Reclaim(enforcer.ProcessAlive); err != nil {
			return nil, fmt.Errorf("reclaiming the benchmark slice: %w", err)
		}
	}
	us := make([]float64, len(out.StepNS))
	for i, ns := range out.StepNS {
		us[i] = float64(ns) / 1e3
	}
	return us, nil
}
