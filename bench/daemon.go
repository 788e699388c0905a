package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// The daemon benchmark's goals (issue 3, "Must show"), reported, never asserted.
const (
	// GoalTickCPUMS: CPU ms one enforcer tick over 1,000 slices may take (p99).
	GoalTickCPUMS = 5.0
	// GoalAllocP99MS: p99 latency of one slice allocation through vgpud's API.
	GoalAllocP99MS = 2.0
)

// DaemonOptions configures RunDaemon. DefaultDaemonOptions gives the values
// `vgpu-bench daemon` uses.
type DaemonOptions struct {
	// Root is the repository root holding bin/ and build/ ("" = found from the
	// working directory or the executable).
	Root string
	// Tick benchmark: Slices slices, each with ProcsPerSlice slots owned by
	// live processes (distinct sleeping children), SlotsPerSlice slots in each
	// usage file (0 = shm.DefaultSlots, what vgpud creates); Ticks timed
	// ticks after Warmup untimed ones. Slices 0 skips it.
	Slices        int
	ProcsPerSlice int
	SlotsPerSlice int
	Ticks         int
	Warmup        int
	// Alloc benchmark: Allocs sequential allocations through a real vgpud on
	// a simulated 2-GPU node, released in batches of AllocBatch (each release
	// timed too). Allocs 0 skips it.
	Allocs     int
	AllocBatch int
	AllocBytes uint64
	// Vgpud is the daemon binary ("" = <root>/bin/vgpud).
	Vgpud string
	// StartTimeout bounds vgpud's start-up (socket answering).
	StartTimeout time.Duration
	// TempDir is where the temporary slices, node and vgpud state dir go
	// ("" = the system's temp dir). Its filesystem decides what vgpud's
	// fsyncs cost: compare a disk with tmpfs (/dev/shm).
	TempDir  string
	KeepTemp bool
	Log      io.Writer
}

// DefaultDaemonOptions returns the defaults of `vgpu-bench daemon`.
func DefaultDaemonOptions() DaemonOptions {
	return DaemonOptions{
		Slices:        1000,
		ProcsPerSlice: 2,
		Ticks:         200,
		Warmup:        10,
		Allocs:        1000,
		AllocBatch:    50,
		AllocBytes:    512 << 20,
		StartTimeout:  30 * time.Second,
	}
}

func (o *DaemonOptions) validate() error {
	switch {
	case o.Slices < 0 || o.Slices > 100000:
		return fmt.Errorf("slices %d out of range 0..100000", o.Slices)
	case o.Slices > 0 && (o.ProcsPerSlice < 0 || o.ProcsPerSlice > 16):
		return fmt.Errorf("processes per slice %d out of range 0..16", o.ProcsPerSlice)
	case o.SlotsPerSlice < 0 || o.SlotsPerSlice > shm.MaxSlots || (o.Slices > 0 && o.SlotsPerSlice != 0 && o.SlotsPerSlice < o.ProcsPerSlice):
		return fmt.Errorf("slots per slice %d: must hold the processes and be at most %d", o.SlotsPerSlice, shm.MaxSlots)
	case o.Slices > 0 && o.Ticks < 1:
		return fmt.Errorf("ticks %d must be >= 1", o.Ticks)
	case o.Warmup < 0:
		return fmt.Errorf("warmup %d must be >= 0", o.Warmup)
	case o.Allocs < 0:
		return fmt.Errorf("allocs %d must be >= 0", o.Allocs)
	case o.Allocs > 0 && o.AllocBatch < 1:
		return fmt.Errorf("alloc batch %d must be >= 1", o.AllocBatch)
	case o.Allocs > 0 && o.AllocBytes == 0:
		return errors.New("alloc bytes must be > 0")
	case o.Slices == 0 && o.Allocs == 0:
		return errors.New("nothing to measure: --slices 0 and --allocs 0")
	}
	return nil
}

// DaemonConfig records how the figures were taken.
type DaemonConfig struct {
	Slices        int    `json:"slices"`
	ProcsPerSlice int    `json:"processes_per_slice"`
	SlotsPerSlice int    `json:"slots_per_slice"`
	Ticks         int    `json:"ticks"`
	Warmup        int    `json:"warmup_ticks"`
	Allocs        int    `json:"allocs"`
	AllocBatch    int    `json:"alloc_batch"`
	AllocBytes    uint64 `json:"alloc_bytes"`
	// StateFS is the filesystem type of the temp dir holding vgpud's state.
	StateFS     string `json:"state_fs"`
	SampleNotes string `json:"sample_notes"`
}

// TickResult is the enforcer tick benchmark.
type TickResult struct {
	Slices        int `json:"slices"`
	LiveProcesses int `json:"live_processes"`
	// CPU is the tick's own CPU time (CLOCK_THREAD_CPUTIME_ID of the locked
	// thread running Tick), ms; ProcessCPU adds every other thread of the
	// process in that interval (GC, runtime), ms; Wall is elapsed time, ms.
	CPU        Summary `json:"cpu_ms"`
	ProcessCPU Summary `json:"process_cpu_ms"`
	Wall       Summary `json:"wall_ms"`
	// FirstCPUMS is the first tick (whole slot tables read, every process
	// verified and its pidfd opened): paid once per slice and process.
	FirstCPUMS    float64 `json:"first_tick_cpu_ms"`
	AllocsPerTick float64 `json:"allocs_per_tick"`
	BytesPerTick  float64 `json:"bytes_per_tick"`
	Reclaimed     uint64  `json:"reclaimed_bytes"` // must be 0: every process is alive
	Errors        int     `json:"errors"`
	GoalCPUMS     float64 `json:"goal_p99_cpu_ms"`
	Met           bool    `json:"met"`
}

// AllocResult is the alloc-latency benchmark.
type AllocResult struct {
	Allocs   int     `json:"allocs"`
	Releases int     `json:"releases"`
	Devices  int     `json:"devices"`
	Alloc    Summary `json:"alloc_ms"`
	Release  Summary `json:"release_ms"`
	GoalMS   float64 `json:"goal_p99_ms"`
	Met      bool    `json:"met"`
}

// DaemonReport is the result of `vgpu-bench daemon`.
type DaemonReport struct {
	Benchmark string       `json:"benchmark"` // "daemon"
	Machine   Machine      `json:"machine"`
	Config    DaemonConfig `json:"config"`
	Tick      *TickResult  `json:"tick,omitempty"`
	Alloc     *AllocResult `json:"alloc,omitempty"`
	AllMet    bool         `json:"all_met"`
	Notes     []string     `json:"notes,omitempty"`
}

// Evaluate fills in the goal and met fields and AllMet.
func (r *DaemonReport) Evaluate() {
	all := true
	if t := r.Tick; t != nil {
		t.GoalCPUMS = GoalTickCPUMS
		t.Met = t.CPU.N > 0 && t.CPU.P99 <= GoalTickCPUMS && t.Errors == 0 && t.Reclaimed == 0
		all = all && t.Met
	}
	if a := r.Alloc; a != nil {
		a.GoalMS = GoalAllocP99MS
		a.Met = a.Alloc.N > 0 && a.Alloc.P99 <= GoalAllocP99MS
		all = all && a.Met
	}
	r.AllMet = all
}

// Markdown renders the report.
func (r *DaemonReport) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# vgpu daemon benchmark: driver %s\n\n", orDash(m.Driver))
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", m.GoVersion, m.Date, orDash(m.Commit))
	fmt.Fprintf(&b, "- %s\n\n", r.Config.SampleNotes)
	if t := r.Tick; t != nil {
		c := r.Config
		b.WriteString("## Enforcer tick (ms per tick)\n\n")
		fmt.Fprintf(&b, "%d slices (%d slots each), %d live processes (%d per slice), %d timed ticks after %d warm-up ticks; "+
			"backstop in report mode with a driver listing every process.\n\n",
			t.Slices, c.SlotsPerSlice, t.LiveProcesses, c.ProcsPerSlice, c.Ticks, c.Warmup)
		b.WriteString("| figure | median | p99 | max | goal | result |\n|---|---:|---:|---:|---:|---|\n")
		fmt.Fprintf(&b, "| tick CPU (thread) | %.3f | %.3f | %.3f | p99 ≤ %.0f | %s |\n",
			t.CPU.Median, t.CPU.P99, t.CPU.Max, t.GoalCPUMS, yesNo(t.Met))
		fmt.Fprintf(&b, "| process CPU during the tick | %.3f | %.3f | %.3f | — | — |\n",
			t.ProcessCPU.Median, t.ProcessCPU.P99, t.ProcessCPU.Max)
		fmt.Fprintf(&b, "| wall | %.3f | %.3f | %.3f | — | — |\n\n", t.Wall.Median, t.Wall.P99, t.Wall.Max)
		fmt.Fprintf(&b, "First tick (reads every slot table, verifies every process, opens its pidfd): %.3f ms CPU. "+
			"Steady state: %.1f allocations, %.0f bytes allocated per tick; %d errors, %d bytes reclaimed.\n\n",
			t.FirstCPUMS, t.AllocsPerTick, t.BytesPerTick, t.Errors, t.Reclaimed)
	}
	if a := r.Alloc; a != nil {
		b.WriteString("## Slice allocation through vgpud (ms per request, unix socket)\n\n")
		fmt.Fprintf(&b, "%d sequential allocations of %s on a simulated %d-GPU node, released in batches of %d; "+
			"vgpud's state dir on %s.\n\n",
			a.Allocs, sizeText(r.Config.AllocBytes), a.Devices, r.Config.AllocBatch, orDash(r.Config.StateFS))
		b.WriteString("| request | n | median | p99 | max | goal | result |\n|---|---:|---:|---:|---:|---:|---|\n")
		fmt.Fprintf(&b, "| POST /v1/slices (alloc) | %d | %.3f | %.3f | %.3f | p99 ≤ %.0f | %s |\n",
			a.Alloc.N, a.Alloc.Median, a.Alloc.P99, a.Alloc.Max, a.GoalMS, yesNo(a.Met))
		fmt.Fprintf(&b, "| DELETE /v1/slices/{id} (release) | %d | %.3f | %.3f | %.3f | — | — |\n\n",
			a.Release.N, a.Release.Median, a.Release.P99, a.Release.Max)
	}
	if r.AllMet {
		b.WriteString("**All goals met.**\n")
	} else {
		b.WriteString("**Some goals NOT met** (see the result column).\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n> note: %s\n", n)
	}
	return b.String()
}

// fsType names the filesystem holding path (statfs magic), or "unknown".
func fsType(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}

func sizeText(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// repositoryRoot is root made absolute, or, when root is empty, what find
// finds (FindRoot: a built tree; findDaemonRoot: a source tree).
func repositoryRoot(root string, find func() (string, error)) (string, error) {
	if root == "" {
		r, err := find()
		if err != nil {
			return "", err
		}
		root = r
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("repository root: %w", err)
	}
	return abs, nil
}

// findDaemonRoot finds the repository root holding go.mod and the Makefile.
func findDaemonRoot() (string, error) {
	return findRootWhere(func(d string) bool {
		return fileExists(filepath.Join(d, "go.mod")) && fileExists(filepath.Join(d, "Makefile"))
	}, "no repository root (go.mod, Makefile) under %s: pass --root")
}

// RunDaemon runs the enforcer tick and the alloc-latency benchmarks.
func RunDaemon(ctx context.Context, opts DaemonOptions) (*DaemonReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("daemon options: %w", err)
	}
	if opts.SlotsPerSlice == 0 {
		opts.SlotsPerSlice = shm.DefaultSlots
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	root, err := repositoryRoot(opts.Root, findDaemonRoot)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(opts.TempDir, "vgpu-bench-daemon-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	rep := &DaemonReport{
		Benchmark: "daemon",
		Machine:   hostMachine(ctx, root, time.Now()),
		Config: DaemonConfig{
			Slices: opts.Slices, ProcsPerSlice: opts.ProcsPerSlice, SlotsPerSlice: opts.SlotsPerSlice,
			Ticks: opts.Ticks, Warmup: opts.Warmup, Allocs: opts.Allocs, AllocBatch: opts.AllocBatch,
			AllocBytes: opts.AllocBytes, StateFS: fsType(tmp),
			SampleNotes: "tick: enforcer.Loop.Tick called in-process on a locked OS thread; CPU from " +
				"CLOCK_THREAD_CPUTIME_ID around each tick. alloc: wall time of each API request from a Go client " +
				"over vgpud's unix socket (bin/vgpud on a simulated node; each alloc includes the fsyncs that make " +
				"the slice durable, on the state dir's filesystem, state_fs).",
		},
	}
	rep.Machine.Driver = "simgpu"
	if opts.Slices > 0 {
		tr, err := runTickBench(ctx, opts, filepath.Join(tmp, "tick"), log)
		if err != nil {
			return nil, err
		}
		rep.Tick = tr
	}
	if opts.Allocs > 0 {
		ar, gpu, err := runAllocBench(ctx, opts, root, filepath.Join(tmp, "alloc"), log)
		if err != nil {
			return nil, err
		}
		rep.Alloc = ar
		rep.Machine.GPU = gpu
	}
	rep.Evaluate()
	if rep.Alloc != nil && !rep.Alloc.Met && rep.Config.StateFS != "tmpfs" {
		rep.Notes = append(rep.Notes, fmt.Sprintf("each allocation fsyncs its files and directories "+
			"(the slice is durable when acknowledged), so its latency includes the fsyncs of this %s filesystem; "+
			"`--tmp /dev/shm` measures the same requests without the storage", rep.Config.StateFS))
	}
	return rep, nil
}

// sleepers starts n distinct sleeping processes (the live owners of the
// benchmark's slots) and returns them with a function that ends them.
func sleepers(ctx context.Context, n int) ([]*exec.Cmd, func(), error) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, func() {}, fmt.Errorf("live processes: %w", err)
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
	}
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			stop()
			return nil, func() {}, err
		}
		c := exec.Command(sleep, "3600")
		if err := c.Start(); err != nil {
			stop()
			return nil, func() {}, fmt.Errorf("starting live process %d/%d: %w", i+1, n, err)
		}
		cmds = append(cmds, c)
	}
	return cmds, stop, nil
}

// listDriver is a DriverProcesses that reports a fixed list per device: each
// live process with exactly its charge, so the backstop matches every process
// and finds no violation.
type listDriver map[string][]enforcer.DriverProcess

func (d listDriver) Processes(uuid string) ([]enforcer.DriverProcess, error) { return d[uuid], nil }

func cpuClock(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// runTickBench measures enforcer.Loop.Tick over opts.Slices slices.
func runTickBench(ctx context.Context, opts DaemonOptions, dir string, log io.Writer) (*TickResult, error) {
	nprocs := opts.Slices * opts.ProcsPerSlice
	fmt.Fprintf(log, "bench: tick: starting %d live processes\n", nprocs)
	procs, stop, err := sleepers(ctx, nprocs)
	defer stop()
	if err != nil {
		return nil, err
	}
	uuids := []string{"GPU-00000000-0000-4000-8000-00000000000a", "GPU-00000000-0000-4000-8000-00000000000b"}
	driver := listDriver{}
	const charge = 1 << 20
	fmt.Fprintf(log, "bench: tick: creating %d slices in %s\n", opts.Slices, dir)
	tracked := make([]enforcer.TrackedSlice, 0, opts.Slices)
	defer func() {
		for _, ts := range tracked {
			_ = ts.Slice.Close()
		}
	}()
	for i := 0; i < opts.Slices; i++ {
		id := fmt.Sprintf("bench-%05d", i)
		uuid := uuids[i%len(uuids)]
		sdir := filepath.Join(dir, id)
		if err := shm.CreateSlice(sdir, shm.SliceSpec{ID: id, Slots: opts.SlotsPerSlice,
			Devices: []shm.DeviceBudget{{UUID: uuid, MemoryLimit: 1 << 30, ComputeShareBP: shm.MaxShareBP}}}); err != nil {
			return nil, fmt.Errorf("creating slice %s: %w", id, err)
		}
		sl, err := shm.OpenSlice(sdir)
		if err != nil {
			return nil, fmt.Errorf("opening slice %s: %w", id, err)
		}
		tracked = append(tracked, enforcer.TrackedSlice{ID: id, Slice: sl, UUIDs: []string{uuid}})
		for k := 0; k < opts.ProcsPerSlice; k++ {
			p := procs[i*opts.ProcsPerSlice+k]
			ident, err := enforcer.ProcessIdentity(p.Process.Pid)
			if err != nil {
				return nil, fmt.Errorf("live process %d: %w", p.Process.Pid, err)
			}
			slot, err := sl.Usage.ClaimSlot(ident)
			if err != nil {
				return nil, fmt.Errorf("slice %s: %w", id, err)
			}
			sl.Usage.Charge(slot, 0, charge, 1<<30)
			driver[uuid] = append(driver[uuid], enforcer.DriverProcess{HostPID: p.Process.Pid, UsedBytes: charge})
		}
	}

	l := &enforcer.Loop{Mode: enforcer.ModeReport, Mapper: enforcer.NewProcfsMapper(""), Driver: driver}
	defer l.Close()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	res := &TickResult{Slices: opts.Slices, LiveProcesses: nprocs}
	var cpu, pcpu, wall []float64
	var ms0, ms1 runtime.MemStats
	for i := -1; i < opts.Warmup+opts.Ticks; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if i == opts.Warmup {
			runtime.GC()
			runtime.ReadMemStats(&ms0)
		}
		t0, p0, w0 := cpuClock(unix.CLOCK_THREAD_CPUTIME_ID), cpuClock(unix.CLOCK_PROCESS_CPUTIME_ID), time.Now()
		tr := l.Tick(tracked)
		t1, p1, w1 := cpuClock(unix.CLOCK_THREAD_CPUTIME_ID), cpuClock(unix.CLOCK_PROCESS_CPUTIME_ID), time.Now()
		res.Reclaimed += tr.ReclaimedBytes
		res.Errors += len(tr.Errors)
		if len(tr.Errors) > 0 && res.Errors == len(tr.Errors) {
			fmt.Fprintf(log, "bench: tick: error: %s\n", tr.Errors[0])
		}
		switch {
		case i == -1:
			res.FirstCPUMS = float64(t1-t0) / 1e6
			fmt.Fprintf(log, "bench: tick: first tick %.3f ms CPU\n", res.FirstCPUMS)
		case i >= opts.Warmup:
			cpu = append(cpu, float64(t1-t0)/1e6)
			pcpu = append(pcpu, float64(p1-p0)/1e6)
			wall = append(wall, float64(w1.Sub(w0))/1e6)
		}
	}
	runtime.ReadMemStats(&ms1)
	res.AllocsPerTick = float64(ms1.Mallocs-ms0.Mallocs) / float64(opts.Ticks)
	res.BytesPerTick = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(opts.Ticks)
	res.CPU, res.ProcessCPU, res.Wall = Summarize(cpu), Summarize(pcpu), Summarize(wall)
	fmt.Fprintf(log, "bench: tick: %d ticks, CPU median %.3f ms p99 %.3f ms\n", len(cpu), res.CPU.Median, res.CPU.P99)
	return res, nil
}

// allocRequest is the benchmark's request: a guaranteed slice with a 1%
// compute share, so that a batch of them fits on one GPU.
func allocRequest(opts DaemonOptions) api.AllocRequest {
	return api.AllocRequest{MemoryBytes: opts.AllocBytes, ComputePercent: 1, QoS: api.QoSGuaranteed}
}

// runAllocBench starts bin/vgpud on a simulated 2-GPU node and measures
// sequential allocations and releases through its unix socket.
func runAllocBench(ctx context.Context, opts DaemonOptions, root, dir string, log io.Writer) (*AllocResult, string, error) {
	vgpud := opts.Vgpud
	if vgpud == "" {
		vgpud = filepath.Join(root, "bin", "vgpud")
	}
	simLib := filepath.Join(root, "build", "simgpu", "libnvidia-ml.so.1")
	for _, f := range []string{vgpud, simLib} {
		if !fileExists(f) {
			return nil, "", fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("alloc bench dir: %w", err)
	}
	const devices = 2
	state := filepath.Join(dir, "node")
	if err := simgpu.Init(state, simgpu.Config{Devices: devices, Memory: 80 << 30, SMs: simSMs}); err != nil {
		return nil, "", fmt.Errorf("creating the simulated node: %w", err)
	}
	st, err := simgpu.Status(state)
	if err != nil {
		return nil, "", fmt.Errorf("simulated node: %w", err)
	}
	gpu := st.Devices[0].Name

	sock := filepath.Join(dir, "vgpud.sock")
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, vgpud, "--state-dir", filepath.Join(dir, "state"), "--socket", sock,
		"--metrics-addr", "", "--enforcer-mode", "report", "--log-level", "warn",
		"--nvml-lib", simLib)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || strings.HasPrefix(k, "VGPU_") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "LD_LIBRARY_PATH="+filepath.Dir(simLib), "VGPU_SIM_STATE="+state)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	fmt.Fprintf(log, "bench: alloc: starting %s\n", vgpud)
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("starting vgpud: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("vgpud did not stop on SIGTERM within 10s: %w", <-exited)
		}
	}
	defer stop()

	client := api.NewClient(sock)
	defer client.Close()
	deadline := time.Now().Add(opts.StartTimeout)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, herr := client.Health(hctx)
		cancel()
		if herr == nil {
			break
		}
		select {
		case err := <-exited:
			stopped = true
			return nil, "", fmt.Errorf("vgpud exited before answering (%v): %s", err, strings.TrimSpace(stderr.String()))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, "", fmt.Errorf("vgpud did not answer on %s within %s: %v: %s", sock, opts.StartTimeout,
				herr, strings.TrimSpace(stderr.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	devs, err := client.Devices(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("vgpud devices: %w", err)
	}

	res := &AllocResult{Devices: len(devs)}
	var allocMS, releaseMS []float64
	var held []string
	release := func() error {
		for _, id := range held {
			t0 := time.Now()
			if err := client.Release(ctx, id); err != nil {
				return fmt.Errorf("release %s: %w", id, err)
			}
			releaseMS = append(releaseMS, float64(time.Since(t0))/1e6)
		}
		held = held[:0]
		return nil
	}
	// A few untimed requests first: connection set-up, first-use paths.
	for i := 0; i < 3; i++ {
		s, err := client.Alloc(ctx, allocRequest(opts))
		if err != nil {
			return nil, "", fmt.Errorf("warm-up alloc: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		if err := client.Release(ctx, s.ID); err != nil {
			return nil, "", fmt.Errorf("warm-up release: %w", err)
		}
	}
	fmt.Fprintf(log, "bench: alloc: %d allocations\n", opts.Allocs)
	for i := 0; i < opts.Allocs; i++ {
		t0 := time.Now()
		s, err := client.Alloc(ctx, allocRequest(opts))
		if err != nil {
			return nil, "", fmt.Errorf("alloc %d/%d: %w", i+1, opts.Allocs, err)
		}
		allocMS = append(allocMS, float64(time.Since(t0))/1e6)
		held = append(held, s.ID)
		if len(held) == opts.AllocBatch {
			if err := release(); err != nil {
				return nil, "", err
			}
		}
	}
	if err := release(); err != nil {
		return nil, "", err
	}
	if err := stop(); err != nil {
		return nil, "", fmt.Errorf("vgpud did not stop cleanly: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	res.Allocs, res.Releases = len(allocMS), len(releaseMS)
	res.Alloc, res.Release = Summarize(allocMS), Summarize(releaseMS)
	fmt.Fprintf(log, "bench: alloc: median %.3f ms p99 %.3f ms\n", res.Alloc.Median, res.Alloc.P99)
	return res, gpu, nil
}
