package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/tracker"
)

// The tracker benchmark's goals, reported, never asserted.
const (
	// GoalTrackerOpenP99MS: p99 from a device open to the subscriber having
	// the event, and to vgpud listing the process, eBPF tracker.
	GoalTrackerOpenP99MS = 10.0
	// GoalTrackerAddedOpenNS: ns the attached programs may add to one open
	// (median over rounds).
	GoalTrackerAddedOpenNS = 1000.0
	// GoalTrackerExitP99MS: p99 from a SIGKILL to the subscriber having the
	// exit (a dead process's charge is returned within 1 s).
	GoalTrackerExitP99MS = 1000.0
)

// Tracker kinds as the report names them (tracker.Tracker.Kind).
const (
	trackerEBPF   = "ebpf"
	trackerProcfs = "procfs"
)

// TrackerOptions configures RunTracker. DefaultTrackerOptions gives the
// values `vgpu-bench tracker` uses.
type TrackerOptions struct {
	// Root is the repository root (only for the report's commit).
	Root string
	// Latency: Opens / Exits samples with the eBPF tracker, ProcfsOpens /
	// ProcfsExits with the procfs scanner (each sample waits up to one scan).
	Opens       int
	Exits       int
	ProcfsOpens int
	ProcfsExits int
	// VgpudOpens: samples of open → bin/vgpud's GET /v1/processes lists the
	// process (eBPF; 0 skips them, and the need for a built tree).
	VgpudOpens int
	// ProcfsInterval is the scanner's period (0: the tracker's default).
	ProcfsInterval time.Duration
	// PollInterval is the eBPF tracker's ring-buffer poll period (0: the
	// tracker's default).
	PollInterval time.Duration
	// Syscall cost: Rounds ABBA rounds (detached, attached, attached,
	// detached); per phase OpsPerPhase open+close pairs of each file and
	// ForksPerPhase fork+exit+wait. Rounds 0 skips it.
	Rounds        int
	OpsPerPhase   int
	ForksPerPhase int
	// CPU: Procs idle processes of which Holders hold the stand-in device,
	// the tracker's CPU over CPUWindow, idle and with ChurnPerSec short-lived
	// processes per second opening the device. Procs 0 skips it.
	Procs       int
	Holders     int
	CPUWindow   time.Duration
	ChurnPerSec int
	// TempDir holds the stand-in device node ("" = the system's temp dir).
	TempDir string
	Log     io.Writer
}

// DefaultTrackerOptions returns the defaults of `vgpu-bench tracker`.
func DefaultTrackerOptions() TrackerOptions {
	return TrackerOptions{
		Opens: 500, Exits: 200, ProcfsOpens: 100, ProcfsExits: 50, VgpudOpens: 300,
		Rounds: 5, OpsPerPhase: 20000, ForksPerPhase: 300,
		Procs: 2000, Holders: 200, CPUWindow: 10 * time.Second, ChurnPerSec: 50,
	}
}

func (o *TrackerOptions) validate() error {
	switch {
	case o.Opens < 0 || o.Exits < 0 || o.ProcfsOpens < 0 || o.ProcfsExits < 0 || o.VgpudOpens < 0:
		return errors.New("sample counts must be >= 0")
	case o.Rounds < 0 || (o.Rounds > 0 && (o.OpsPerPhase < 1 || o.ForksPerPhase < 1)):
		return errors.New("rounds must be >= 0, and ops and forks per phase >= 1")
	case o.Procs < 0 || o.Holders < 0 || o.Holders > o.Procs:
		return fmt.Errorf("holders %d must be within 0..processes (%d)", o.Holders, o.Procs)
	case o.Procs > 0 && o.CPUWindow < 100*time.Millisecond:
		return fmt.Errorf("cpu window %s must be >= 100ms", o.CPUWindow)
	case o.ChurnPerSec < 0 || o.ChurnPerSec > 1000:
		return fmt.Errorf("churn %d/s out of range 0..1000", o.ChurnPerSec)
	case o.Opens+o.Exits+o.ProcfsOpens+o.ProcfsExits+o.VgpudOpens+o.Rounds+o.Procs == 0:
		return errors.New("nothing to measure")
	}
	return nil
}

// TrackerConfig records how the figures were taken.
type TrackerConfig struct {
	// Device is the stand-in node's number and driver, e.g. "203:0 (cpu/cpuid)".
	Device           string  `json:"device"`
	ProcfsIntervalMS float64 `json:"procfs_interval_ms"`
	PollIntervalMS   float64 `json:"poll_interval_ms"`
	Rounds           int     `json:"rounds"`
	OpsPerPhase      int     `json:"ops_per_phase"`
	ForksPerPhase    int     `json:"forks_per_phase"`
	Procs            int     `json:"processes"`
	Holders          int     `json:"holders"`
	CPUWindowS       float64 `json:"cpu_window_s"`
	ChurnPerSec      int     `json:"churn_per_s"`
	SampleNotes      string  `json:"sample_notes"`
}

// TrackerLatencyRow is one latency figure: open → event or SIGKILL → exit event.
type TrackerLatencyRow struct {
	What    string  `json:"what"`    // "open" or "exit"
	Tracker string  `json:"tracker"` // "ebpf" or "procfs"
	MS      Summary `json:"ms"`
	// Missed counts samples whose event did not come within the timeout.
	Missed int      `json:"missed"`
	GoalMS *float64 `json:"goal_p99_ms,omitempty"`
	Met    *bool    `json:"met,omitempty"`
}

// TrackerSyscallRow is the cost of one system call (pair) with the programs
// detached and attached. Detached and Attached summarise the per-phase means
// (ns per operation); RoundAddedNS is attached − detached per ABBA round.
type TrackerSyscallRow struct {
	Op            string    `json:"op"`
	Detached      Summary   `json:"detached_ns"`
	Attached      Summary   `json:"attached_ns"`
	RoundAddedNS  []float64 `json:"round_added_ns"`
	AddedMedianNS float64   `json:"added_median_ns"`
	GoalNS        *float64  `json:"goal_added_ns,omitempty"`
	Met           *bool     `json:"met,omitempty"`
	// Noisy: the rounds disagree by more than the goal (or, without one, by
	// more than the median added itself).
	Noisy bool `json:"noisy"`
}

// TrackerCPURow is the tracker's own CPU over one window.
type TrackerCPURow struct {
	Tracker string `json:"tracker"` // "ebpf" or "procfs"
	Load    string `json:"load"`    // "idle" or "churn"
	// CPUMS is the benchmark process's CPU (user+system) in the window minus
	// the same window without a tracker (BaselineMS); Percent is of one core.
	CPUMS      float64 `json:"cpu_ms"`
	BaselineMS float64 `json:"baseline_cpu_ms"`
	Percent    float64 `json:"cpu_percent_of_core"`
	WindowS    float64 `json:"window_s"`
	// Known is how many of the holders the tracker listed at the window's
	// end; ChurnPerSec the churn achieved in the window.
	Known       int     `json:"known_processes"`
	ChurnPerSec float64 `json:"churn_per_s"`
	Events      int     `json:"events"`
	Lost        uint64  `json:"lost"`
	// Met (eBPF rows): below the procfs scanner under the same load.
	Met *bool `json:"met,omitempty"`
}

// TrackerReport is the result of `vgpu-bench tracker`.
type TrackerReport struct {
	Benchmark string        `json:"benchmark"` // "tracker"
	Machine   Machine       `json:"machine"`
	Config    TrackerConfig `json:"config"`
	// Hook is what tracker.New gave without ForceProcfs: "ebpf", or
	// "procfs" when BPF could not load (then only the procfs figures exist).
	Hook     string              `json:"hook"`
	Hooks    string              `json:"hooks"`
	Latency  []TrackerLatencyRow `json:"latency"`
	Syscalls []TrackerSyscallRow `json:"syscalls,omitempty"`
	CPU      []TrackerCPURow     `json:"cpu,omitempty"`
	AllMet   bool                `json:"all_met"`
	// RuntimeS is how long the whole benchmark took.
	RuntimeS float64  `json:"runtime_s"`
	Notes    []string `json:"notes,omitempty"`
}

// Evaluate fills in the goal and met fields and AllMet.
func (r *TrackerReport) Evaluate() {
	all := true
	judge := func(met bool) *bool { all = all && met; return &met }
	for i := range r.Latency {
		row := &r.Latency[i]
		goal := 0.0
		switch {
		case (row.What == "open" || row.What == whatOpenVgpud) && row.Tracker == trackerEBPF:
			goal = GoalTrackerOpenP99MS
		case row.What == "exit":
			goal = GoalTrackerExitP99MS
		default:
			row.GoalMS, row.Met = nil, nil
			continue
		}
		row.GoalMS = &goal
		row.Met = judge(row.MS.N > 0 && row.Missed == 0 && row.MS.P99 <= goal)
	}
	for i := range r.Syscalls {
		row := &r.Syscalls[i]
		s := Summarize(row.RoundAddedNS)
		row.AddedMedianNS = s.Median
		row.GoalNS, row.Met = nil, nil
		tolerance := abs(s.Median)
		if strings.HasPrefix(row.Op, "open") {
			goal := GoalTrackerAddedOpenNS
			row.GoalNS = &goal
			row.Met = judge(s.N > 0 && s.Median <= goal)
			tolerance = max(tolerance, goal)
		}
		row.Noisy = s.N > 1 && s.Max-s.Min > tolerance
	}
	for i := range r.CPU {
		row := &r.CPU[i]
		row.Met = nil
		if row.Tracker != trackerEBPF {
			continue
		}
		for _, p := range r.CPU {
			if p.Tracker == trackerProcfs && p.Load == row.Load {
				row.Met = judge(row.CPUMS < p.CPUMS)
			}
		}
	}
	if r.Hook != trackerEBPF {
		all = false // the eBPF goals could not be measured
	}
	r.AllMet = all
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// standInDevice makes a character-device node under dir that stands in for
// /dev/nvidia0 (as the tracker's tests do): cpuid 203:0 where that driver is
// loaded (nobody else opens it), else null 1:3 (every open of /dev/null on
// the machine is then tracked too). The node needs a real driver: an open of
// an unregistered major fails and holds nothing.
func standInDevice(dir string) (string, tracker.Device, string, error) {
	d, name := tracker.Device{Major: 1, Minor: 3}, "mem/null"
	if data, err := os.ReadFile("/proc/devices"); err == nil && strings.Contains(string(data), "203 cpu/cpuid") {
		d, name = tracker.Device{Major: 203, Minor: 0}, "cpu/cpuid"
	}
	path := dir + "/vgpu-standin0"
	if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(d.Major, d.Minor))); err != nil {
		return "", d, "", fmt.Errorf("mknod stand-in device (needs root): %w", err)
	}
	return path, d, fmt.Sprintf("%d:%d (%s)", d.Major, d.Minor, name), nil
}

// benchEnv is what every part of the tracker benchmark shares.
type benchEnv struct {
	opts TrackerOptions
	node string
	dev  tracker.Device
	log  io.Writer
}

func (e *benchEnv) newTracker(ctx context.Context, procfs bool) (tracker.Tracker, error) {
	tr, err := tracker.New(ctx, tracker.Config{
		Majors: []uint32{e.dev.Major}, ForceProcfs: procfs, ProcfsInterval: e.opts.ProcfsInterval,
		PollInterval: e.opts.PollInterval, Log: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("tracker.New: %w", err)
	}
	return tr, nil
}

// RunTracker runs the tracker benchmark.
func RunTracker(ctx context.Context, opts TrackerOptions) (*TrackerReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("tracker options: %w", err)
	}
	if opts.ProcfsInterval <= 0 {
		opts.ProcfsInterval = 250 * time.Millisecond // tracker.Config's default
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = tracker.DefaultPollInterval
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	start := time.Now()
	root, err := repositoryRoot(opts.Root, findDaemonRoot)
	if err != nil {
		root = "." // the commit is only a label
	}
	tmp, err := os.MkdirTemp(opts.TempDir, "vgpu-bench-tracker-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	node, dev, devName, err := standInDevice(tmp)
	if err != nil {
		return nil, err
	}
	env := &benchEnv{opts: opts, node: node, dev: dev, log: opts.Log}
	rep := &TrackerReport{
		Benchmark: "tracker",
		Machine:   hostMachine(ctx, root, time.Now()),
		Config:    trackerConfig(opts, devName),
		Hooks: "eBPF: tracepoint/syscalls/sys_exit_{openat,openat2,open} (device opens), " +
			"tp_btf/sched_process_fork and tp_btf/sched_process_exit, ring buffer; procfs: /proc/*/fd rescan",
	}
	rep.Machine.Driver = "none (stand-in char device)"
	probe, err := env.newTracker(ctx, false)
	if err != nil {
		return nil, err
	}
	rep.Hook = probe.Kind()
	if err := probe.Close(); err != nil {
		return nil, fmt.Errorf("closing the tracker: %w", err)
	}
	fmt.Fprintf(env.log, "bench: tracker hook %s, stand-in device %s at %s\n", rep.Hook, devName, node)
	if err := runTrackerParts(ctx, env, rep); err != nil {
		return nil, err
	}
	rep.Evaluate()
	rep.Notes = trackerNotes(rep)
	rep.RuntimeS = time.Since(start).Seconds()
	return rep, nil
}

func trackerConfig(o TrackerOptions, devName string) TrackerConfig {
	return TrackerConfig{
		Device:           devName,
		ProcfsIntervalMS: float64(o.ProcfsInterval) / float64(time.Millisecond),
		PollIntervalMS:   float64(o.PollInterval) / float64(time.Millisecond),
		Rounds:           o.Rounds, OpsPerPhase: o.OpsPerPhase, ForksPerPhase: o.ForksPerPhase,
		Procs: o.Procs, Holders: o.Holders, CPUWindowS: o.CPUWindow.Seconds(), ChurnPerSec: o.ChurnPerSec,
		SampleNotes: "open latency: a fresh bash child stamps CLOCK_REALTIME ($EPOCHREALTIME, µs) right before " +
			"its open of the stand-in node and reports it; the benchmark's subscriber stamps its receipt of the " +
			"EventOpen (same clock). open → vgpud: the same child, and the benchmark's clock when the first " +
			"answer of GET /v1/processes that lists it arrives, asked every 0.2 ms of a bin/vgpud it started " +
			"(--tracker ebpf, report mode, simulated node). exit latency: time.Now before kill(SIGKILL) of a " +
			"holder the tracker knows → receipt of its EventExit. procfs samples start at a random phase of the " +
			"scan. syscalls: ns per operation (mean of a phase; opens: CPU time of the calling thread, " +
			"CLOCK_THREAD_CPUTIME_ID; forks: wall time), ABBA rounds of a fresh eBPF tracker attached vs none. " +
			"cpu: getrusage of the benchmark process (the tracker runs in it, with one subscriber draining its " +
			"events) over the window, minus the same window without a tracker",
	}
}

func runTrackerParts(ctx context.Context, env *benchEnv, rep *TrackerReport) error {
	o := env.opts
	kinds := []struct {
		procfs       bool
		opens, exits int
	}{{false, o.Opens, o.Exits}, {true, o.ProcfsOpens, o.ProcfsExits}}
	for _, k := range kinds {
		if !k.procfs && rep.Hook != trackerEBPF {
			continue
		}
		rows, err := env.latency(ctx, k.procfs, k.opens, k.exits)
		if err != nil {
			return err
		}
		rep.Latency = append(rep.Latency, rows...)
		if !k.procfs && o.VgpudOpens > 0 {
			row, err := env.vgpudLatency(ctx, o.VgpudOpens)
			if err != nil {
				return err
			}
			rep.Latency = append(rep.Latency, row)
		}
	}
	if o.Rounds > 0 && rep.Hook == trackerEBPF {
		rows, err := env.syscallCost(ctx)
		if err != nil {
			return err
		}
		rep.Syscalls = rows
	}
	if o.Procs > 0 {
		rows, err := env.cpu(ctx, rep.Hook == trackerEBPF)
		if err != nil {
			return err
		}
		rep.CPU = rows
	}
	return nil
}
