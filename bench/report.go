package bench

import (
	"fmt"
	"strings"
)

// The goals of the overhead benchmark. They are reported, not
// asserted: each row says whether it met its goal on the machine that ran it.
const (
	// GoalLaunchAddedNS: median ns libvgpu may add to one cuLaunchKernel.
	GoalLaunchAddedNS = 15.0
	// GoalAllocAddedNS: median ns libvgpu may add to one cuMemAlloc+cuMemFree pair.
	GoalAllocAddedNS = 60.0
	// GoalInitAddedMS: median ms libvgpu may add to a process's CUDA initialisation.
	GoalInitAddedMS = 2.0
	// GoalInitGrowthMS: how much the added init time may grow from the fewest to the
	// most concurrent processes. "No growth" needs a tolerance: on a busy machine the
	// difference of two medians moves by a fraction of a millisecond from run to run.
	GoalInitGrowthMS = 1.0
)

// Ops measured by the calls benchmark, in report order.
const (
	OpLaunch  = "launch"
	OpAlloc   = "alloc"
	OpGetInfo = "getinfo"
)

// AllOps lists every op bench_overhead knows, in report order.
var AllOps = []string{OpLaunch, OpAlloc, OpGetInfo}

// opLabel is how an op is named in the Markdown table.
func opLabel(op string) string {
	switch op {
	case OpLaunch:
		return "cuLaunchKernel"
	case OpAlloc:
		return "cuMemAlloc+cuMemFree (1 MiB)"
	case OpGetInfo:
		return "cuMemGetInfo"
	}
	return op
}

// callGoalNS returns the goal on the added median for op, or nil when none is set.
func callGoalNS(op string) *float64 {
	var g float64
	switch op {
	case OpLaunch:
		g = GoalLaunchAddedNS
	case OpAlloc:
		g = GoalAllocAddedNS
	default:
		return nil
	}
	return &g
}

// Machine says where a report was measured.
type Machine struct {
	Hostname   string `json:"hostname"`
	CPUModel   string `json:"cpu_model"`
	Cores      int    `json:"cores"`
	Kernel     string `json:"kernel,omitempty"`
	GoVersion  string `json:"go_version"`
	Driver     string `json:"driver"`                        // "simgpu" or the NVIDIA driver version
	CUDADriver string `json:"cuda_driver_version,omitempty"` // cuDriverGetVersion, e.g. "12.4"
	GPU        string `json:"gpu,omitempty"`                 // device name as the driver reports it
	GPUMemory  uint64 `json:"gpu_memory_bytes,omitempty"`
	Date       string `json:"date"` // RFC 3339, UTC
	Commit     string `json:"commit,omitempty"`
}

// OverheadConfig records how the figures were taken.
type OverheadConfig struct {
	Driver      string   `json:"driver"` // "sim" or "real"
	Ops         []string `json:"ops"`
	Threads     []int    `json:"threads"`
	Iters       int      `json:"iters"`  // timed batches per thread per run
	Batch       int      `json:"batch"`  // calls per timed batch
	Warmup      int      `json:"warmup"` // untimed batches per thread first
	Rounds      int      `json:"rounds"` // bare/libvgpu alternations per configuration
	InitProcs   []int    `json:"init_procs"`
	InitRounds  int      `json:"init_rounds"`
	Pin         bool     `json:"pin_threads"`
	Throttled   bool     `json:"throttled,omitempty"` // launches through the token bucket (tokens never short)
	Lib         string   `json:"lib,omitempty"`       // the preloaded library, when not build/libvgpu.so
	NsPerBlock  uint64   `json:"sim_ns_per_block,omitempty"`
	SampleNotes string   `json:"sample_notes"`
}

// CallRow is one call × thread-count line: ns per call, bare and with libvgpu.
type CallRow struct {
	Op      string  `json:"op"`
	Threads int     `json:"threads"`
	Bare    Summary `json:"bare_ns"`
	VGPU    Summary `json:"vgpu_ns"`
	// AddedMedianNS and AddedP99NS are VGPU minus Bare.
	AddedMedianNS float64 `json:"added_median_ns"`
	AddedP99NS    float64 `json:"added_p99_ns"`
	// RoundAddedNS holds, per round, libvgpu's median minus the bare median of the
	// same round: its spread shows how much of the difference is noise.
	RoundAddedNS []float64 `json:"round_added_median_ns"`
	GoalNS       *float64  `json:"goal_added_median_ns"` // nil: no goal for this call
	Met          *bool     `json:"met"`                  // nil: no goal
	// Noisy: the rounds disagree by more than the goal, so met / not met is not a
	// property of libvgpu alone here (typically threads >= cores on a busy machine,
	// where runs land either contended or time-sliced).
	Noisy bool `json:"noisy"`
}

// InitRow is one line of the init benchmark: Procs processes started at once.
type InitRow struct {
	Procs int `json:"procs"`
	// Bare and VGPU summarise per-process init time in ms (cuInit .. first alloc/free),
	// pooled over all processes of all rounds.
	Bare          Summary `json:"bare_ms"`
	VGPU          Summary `json:"vgpu_ms"`
	AddedMedianMS float64 `json:"added_median_ms"`
	AddedMaxMS    float64 `json:"added_max_ms"`
	// Load is spawn -> main() (dynamic loading and library constructors, where
	// libvgpu could hide work from the init figure), ms.
	BareLoad        Summary   `json:"bare_load_ms"`
	VGPULoad        Summary   `json:"vgpu_load_ms"`
	AddedLoadMedMS  float64   `json:"added_load_median_ms"`
	MaxLateMS       float64   `json:"max_late_ms"` // worst wake-up after the common start
	GoalMS          float64   `json:"goal_added_median_ms"`
	Met             bool      `json:"met"`
	RoundAddedMedMS []float64 `json:"round_added_median_ms"`
}

// GrowthRow compares the added init time at the fewest and the most processes.
type GrowthRow struct {
	FromProcs   int     `json:"from_procs"`
	ToProcs     int     `json:"to_procs"`
	FromAddedMS float64 `json:"from_added_median_ms"`
	ToAddedMS   float64 `json:"to_added_median_ms"`
	GrowthMS    float64 `json:"growth_ms"`
	GoalMS      float64 `json:"goal_growth_ms"`
	Met         bool    `json:"met"`
}

// OverheadReport is the result of `vgpu-bench overhead`.
type OverheadReport struct {
	Benchmark string         `json:"benchmark"` // "overhead"
	Machine   Machine        `json:"machine"`
	Config    OverheadConfig `json:"config"`
	Calls     []CallRow      `json:"calls"`
	Init      []InitRow      `json:"init"`
	Growth    *GrowthRow     `json:"init_growth,omitempty"`
	// AllMet is true when every row that has a goal met it.
	AllMet bool     `json:"all_met"`
	Notes  []string `json:"notes,omitempty"`
}

// Evaluate fills in the goal and met fields of every row, the growth row and AllMet.
func (r *OverheadReport) Evaluate() {
	all := true
	for i := range r.Calls {
		c := &r.Calls[i]
		c.GoalNS = callGoalNS(c.Op)
		c.Met = nil
		c.Noisy = false
		if c.GoalNS != nil {
			met := c.AddedMedianNS <= *c.GoalNS
			c.Met = &met
			all = all && met
			if len(c.RoundAddedNS) > 1 {
				s := Summarize(c.RoundAddedNS)
				c.Noisy = s.Max-s.Min > *c.GoalNS
			}
		}
	}
	for i := range r.Init {
		row := &r.Init[i]
		row.GoalMS = GoalInitAddedMS
		row.Met = row.AddedMedianMS <= GoalInitAddedMS
		all = all && row.Met
	}
	r.Growth = nil
	if len(r.Init) >= 2 {
		first, last := r.Init[0], r.Init[0]
		for _, row := range r.Init {
			if row.Procs < first.Procs {
				first = row
			}
			if row.Procs > last.Procs {
				last = row
			}
		}
		if last.Procs > first.Procs {
			g := &GrowthRow{
				FromProcs:   first.Procs,
				ToProcs:     last.Procs,
				FromAddedMS: first.AddedMedianMS,
				ToAddedMS:   last.AddedMedianMS,
				GrowthMS:    last.AddedMedianMS - first.AddedMedianMS,
				GoalMS:      GoalInitGrowthMS,
			}
			g.Met = g.GrowthMS <= GoalInitGrowthMS
			all = all && g.Met
			r.Growth = g
		}
	}
	r.AllMet = all
}

func yesNo(b bool) string {
	if b {
		return "met"
	}
	return "NOT met"
}

func signed(x float64, prec int) string {
	return fmt.Sprintf("%+.*f", prec, x)
}

// spread renders min…max of xs.
func spread(xs []float64, prec int) string {
	if len(xs) == 0 {
		return "—"
	}
	s := Summarize(xs)
	return fmt.Sprintf("%s … %s", signed(s.Min, prec), signed(s.Max, prec))
}

// Markdown renders the report as Markdown tables.
func (r *OverheadReport) Markdown() string {
	var b strings.Builder
	m := r.Machine
	gpu := m.GPU
	if gpu == "" {
		gpu = "—"
	}
	fmt.Fprintf(&b, "# vgpu overhead benchmark: %s, driver %s\n\n", gpu, m.Driver)
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- driver: %s (CUDA driver API %s), device: %s\n", m.Driver, orDash(m.CUDADriver), gpu)
	fmt.Fprintf(&b, "- %s, %s, commit %s\n", m.GoVersion, m.Date, orDash(m.Commit))
	c := r.Config
	fmt.Fprintf(&b, "- %d rounds alternating bare/libvgpu; per run %d timed batches of %d calls per thread after %d warm-up batches\n",
		c.Rounds, c.Iters, c.Batch, c.Warmup)
	if c.Throttled {
		b.WriteString("- throttled: the slice has a compute share whose tokens never run out, so every launch takes the " +
			"token bucket's hot path (and a completion marker every VGPU_MARKER_STRIDE tokens)\n")
	}
	if c.Lib != "" {
		fmt.Fprintf(&b, "- preloaded library: %s\n", c.Lib)
	}
	fmt.Fprintf(&b, "- %s\n\n", c.SampleNotes)

	if len(r.Calls) > 0 {
		b.WriteString("## Per call (ns per call; added = with libvgpu − bare)\n\n")
		b.WriteString("| call | threads | bare median | bare p99 | libvgpu median | libvgpu p99 | added median | added p99 | added per round | goal (added median) | result |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, row := range r.Calls {
			goal, res := "—", "no goal"
			if row.GoalNS != nil {
				goal = fmt.Sprintf("≤ %.0f", *row.GoalNS)
			}
			if row.Met != nil {
				res = yesNo(*row.Met)
			}
			if row.Noisy {
				res += " (noisy: rounds disagree)"
			}
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %s | %s | %s | %s | %s |\n",
				opLabel(row.Op), row.Threads, row.Bare.Median, row.Bare.P99, row.VGPU.Median, row.VGPU.P99,
				signed(row.AddedMedianNS, 1), signed(row.AddedP99NS, 1), spread(row.RoundAddedNS, 1), goal, res)
		}
		b.WriteString("\n")
	}
	if len(r.Init) > 0 {
		b.WriteString("## Process init (ms per process; N processes start at once)\n\n")
		b.WriteString("Init = cuInit + cuDeviceGet + cuDevicePrimaryCtxRetain + cuCtxSetCurrent + first cuMemAlloc/cuMemFree. " +
			"Load = spawn to main() (dynamic loading, constructors).\n\n")
		b.WriteString("| processes | bare median | bare max | libvgpu median | libvgpu max | added median | added max | added per round | added load (median) | goal (added median) | result |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, row := range r.Init {
			fmt.Fprintf(&b, "| %d | %.3f | %.3f | %.3f | %.3f | %s | %s | %s | %s | ≤ %.0f | %s |\n",
				row.Procs, row.Bare.Median, row.Bare.Max, row.VGPU.Median, row.VGPU.Max,
				signed(row.AddedMedianMS, 3), signed(row.AddedMaxMS, 3), spread(row.RoundAddedMedMS, 3),
				signed(row.AddedLoadMedMS, 3), row.GoalMS, yesNo(row.Met))
		}
		b.WriteString("\n")
	}
	if g := r.Growth; g != nil {
		fmt.Fprintf(&b, "Init growth %d → %d processes: added median %s ms → %s ms, growth %s ms (goal ≤ %.1f ms): %s\n\n",
			g.FromProcs, g.ToProcs, signed(g.FromAddedMS, 3), signed(g.ToAddedMS, 3), signed(g.GrowthMS, 3), g.GoalMS, yesNo(g.Met))
	}
	writeVerdict(&b, r.AllMet, r.Notes)
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// writeVerdict ends a benchmark's Markdown report: whether every goal was
// met, then its notes.
func writeVerdict(b *strings.Builder, allMet bool, notes []string) {
	if allMet {
		b.WriteString("**All goals met.**\n")
	} else {
		b.WriteString("**Some goals NOT met** (see the result column).\n")
	}
	for _, n := range notes {
		fmt.Fprintf(b, "\n> note: %s\n", n)
	}
}
