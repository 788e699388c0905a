package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/shm"
)

// The daemon benchmark's goals, reported, never asserted.
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
	// The samples (ms, in the order taken), for the CDFs `vgpu-bench plot`
	// draws; reports from before they were kept have none.
	AllocSamplesMS   []float64 `json:"alloc_samples_ms,omitempty"`
	ReleaseSamplesMS []float64 `json:"release_samples_ms,omitempty"`
	GoalMS           float64   `json:"goal_p99_ms"`
	Met              bool      `json:"met"`
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
	writeVerdict(&b, r.AllMet, r.Notes)
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
				"the slice durable, on the state dir's filesystem, state_fs, and the write of its CDI spec, which " +
				"vgpud publishes for every slice as on a real node, into a private CDI dir holding the node's spec).",
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
