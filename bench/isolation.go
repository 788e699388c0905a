package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

// The noisy-neighbour isolation benchmark (`vgpu-bench isolation`): a victim
// (latency: a short kernel and a synchronize per step, like inference; or
// throughput: launches back to back, like training) next to 0, 1 and 3
// aggressors (flooding launches, or allocation churn plus launches), with vgpu
// (every tenant `vgpuctl run --compute P --compute-policy cap` through a real
// bin/vgpud on a fresh simulated node, like the throttle benchmark) and bare
// (the same processes on the same kind of node, no libvgpu), and per --compare
// peer the bare rows again with every tenant under LD_PRELOAD=<peer>. The
// victim's figures are reported relative to the same configuration with 0
// aggressors.

// Victim and aggressor kinds.
const (
	VictimLatency    = "latency"
	VictimThroughput = "throughput"
	AggressorFlood   = "flood"
	AggressorChurn   = "churn"
	IsoVgpu          = "vgpu"
	IsoBare          = "bare"
)

// Goals of the isolation benchmark for the vgpu rows, reported, never asserted.
const (
	GoalIsoThroughputRatio = 0.9 // victim throughput / alone, at least
	GoalIsoP99Ratio        = 2.0 // latency victim p99 / alone, at most
)

// IsolationOptions configures RunIsolation.
type IsolationOptions struct {
	Root string
	// Victims, Aggressors (counts), Configs to run. Every count is run with
	// flooding aggressors; Churn runs every nonzero count again with
	// allocation-churn aggressors (the alone row is the same for both kinds).
	Victims    []string
	Aggressors []int
	Configs    []string
	Churn      bool
	// Warmup is not counted; Measure is the counted part of the victim's run.
	Warmup, Measure time.Duration
	// VictimSharePct is the victim's compute share with vgpu; the aggressors
	// share the rest equally.
	VictimSharePct float64
	SMs            int
	NsPerBlock     uint64
	// LatencyWaves and FloodWaves size the victim's and aggressors' kernels
	// in waves of SMs blocks.
	LatencyWaves, FloodWaves int
	// Peers (--compare) are other interception libraries: per peer, the bare
	// rows again with every tenant under LD_PRELOAD=<peer.Lib> and its Env, as
	// a configuration named after the peer.
	Peers    []Peer
	KeepTemp bool
	Log      io.Writer
}

// DefaultIsolationOptions returns what `vgpu-bench isolation` runs.
func DefaultIsolationOptions() IsolationOptions {
	return IsolationOptions{Victims: []string{VictimLatency, VictimThroughput}, Aggressors: []int{0, 1, 3},
		Configs: []string{IsoVgpu, IsoBare}, Churn: true, Warmup: 2 * time.Second, Measure: 8 * time.Second,
		VictimSharePct: 50, SMs: 132, NsPerBlock: 13000, LatencyWaves: 8, FloodWaves: 100}
}

// QuickIsolation shortens o to a run of under a minute: 0.5 s warm-up, 1 s
// counted (the churn rows stay: they are half of what the benchmark asks, and
// the quick suite must stay under 3 minutes with them).
func QuickIsolation(o *IsolationOptions) {
	o.Warmup, o.Measure = 500*time.Millisecond, time.Second
}

func (o *IsolationOptions) validate() error {
	for _, v := range o.Victims {
		if v != VictimLatency && v != VictimThroughput {
			return fmt.Errorf("unknown victim %q (want latency, throughput)", v)
		}
	}
	for _, c := range o.Configs {
		if c != IsoVgpu && c != IsoBare {
			return fmt.Errorf("unknown configuration %q (want vgpu, bare)", c)
		}
	}
	seen := map[string]bool{}
	for _, p := range o.Peers {
		if p.Name == IsoVgpu || p.Name == IsoBare || seen[p.Name] {
			return fmt.Errorf("--compare: peer name %q is taken (vgpu, bare, or another peer)", p.Name)
		}
		seen[p.Name] = true
	}
	for _, n := range o.Aggressors {
		if n < 0 || n > 16 {
			return fmt.Errorf("aggressors %d out of range 0..16", n)
		}
	}
	switch {
	case len(o.Victims) == 0 || len(o.Configs) == 0 || len(o.Aggressors) == 0:
		return fmt.Errorf("nothing to measure: no victims, configurations or aggressor counts")
	case o.Warmup < 0 || o.Measure < 500*time.Millisecond:
		return fmt.Errorf("warmup %v (>= 0), measure %v (>= 500ms)", o.Warmup, o.Measure)
	case o.VictimSharePct <= 0 || o.VictimSharePct >= 100:
		return fmt.Errorf("victim share %g out of range (0, 100)", o.VictimSharePct)
	case o.SMs < 1 || o.NsPerBlock < 100 || o.LatencyWaves < 1 || o.FloodWaves < 1:
		return fmt.Errorf("sms %d, ns-per-block %d, waves %d/%d out of range", o.SMs, o.NsPerBlock, o.LatencyWaves, o.FloodWaves)
	}
	return nil
}

// isoCell is one run: a victim next to n aggressors of a kind, in a
// configuration (vgpu, bare, or a peer's name with Peer set).
type isoCell struct {
	Victim, Aggressor, Config string
	N                         int
	Peer                      *Peer
}

// isolationCells lists the cells of o in report order: per victim, per
// configuration (then per peer), the aggressor counts with flooding
// aggressors, then the nonzero counts with churning ones.
func isolationCells(o IsolationOptions) []isoCell {
	var out []isoCell
	add := func(v, c string, p *Peer) {
		for _, n := range o.Aggressors {
			out = append(out, isoCell{Victim: v, Aggressor: AggressorFlood, Config: c, N: n, Peer: p})
		}
		for _, n := range o.Aggressors {
			if o.Churn && n > 0 {
				out = append(out, isoCell{Victim: v, Aggressor: AggressorChurn, Config: c, N: n, Peer: p})
			}
		}
	}
	for _, v := range o.Victims {
		for _, c := range o.Configs {
			add(v, c, nil)
		}
		for i := range o.Peers {
			add(v, o.Peers[i].Name, &o.Peers[i])
		}
	}
	return out
}

// aggressorSharePct is each of n aggressors' share with vgpu: the rest of
// the device after the victim's, split equally, rounded down to 0.1 point.
func aggressorSharePct(victim float64, n int) float64 {
	if n <= 0 {
		return 0
	}
	return float64(int((100-victim)/float64(n)*10)) / 10
}

// RunIsolation runs every cell of opts.
func RunIsolation(ctx context.Context, opts IsolationOptions) (*IsolationReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("isolation options: %w", err)
	}
	tools, err := findVgpudTools(opts.Root, "isolation_load", opts.Log)
	if err != nil {
		return nil, err
	}
	r := &isoRun{opts: opts, vgpudTools: tools}
	tmp, err := os.MkdirTemp("", "vgpu-bench-isolation-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(r.log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	m := hostMachine(ctx, r.paths.Root, time.Now())
	m.Driver = DriverSim
	rep := &IsolationReport{Benchmark: "isolation", Machine: m, Config: IsolationConfig{
		SMs: opts.SMs, NsPerBlock: opts.NsPerBlock, WarmupS: opts.Warmup.Seconds(), MeasureS: opts.Measure.Seconds(),
		VictimSharePct: opts.VictimSharePct, LatencyKernelUs: float64(opts.LatencyWaves) * float64(opts.NsPerBlock) / 1e3,
		FloodKernelUs:       float64(opts.FloodWaves) * float64(opts.NsPerBlock) / 1e3,
		GoalThroughputRatio: GoalIsoThroughputRatio, GoalP99Ratio: GoalIsoP99Ratio, Peers: opts.Peers},
		Notes: isolationNotes()}
	for i, c := range isolationCells(opts) {
		fmt.Fprintf(r.log, "bench: isolation: %s victim, %d %s aggressor(s), %s\n", c.Victim, c.N, c.Aggressor, c.Config)
		row, err := r.runCell(ctx, filepath.Join(tmp, fmt.Sprintf("cell%d", i)), c)
		if err != nil {
			return nil, fmt.Errorf("%s victim, %d %s aggressors, %s: %w", c.Victim, c.N, c.Aggressor, c.Config, err)
		}
		if c.Victim == VictimLatency {
			fmt.Fprintf(r.log, "bench: isolation:   %.1f steps/s, p50 %.0f us, p99 %.0f us\n",
				row.StepsPerS, row.LatencyUs.Median, row.LatencyUs.P99)
		} else {
			fmt.Fprintf(r.log, "bench: isolation:   %.1f kernels/s\n", row.StepsPerS)
		}
		rep.Rows = append(rep.Rows, *row)
	}
	rep.Evaluate()
	return rep, nil
}

type isoRun struct {
	opts IsolationOptions
	vgpudTools
}

// isoProc is a started tenant: its process (vgpuctl, or the load itself
// bare), the load's pid from READY, and its stdout lines.
type isoProc struct {
	p     *tenantProc
	mu    sync.Mutex
	lines []string
	pid   int
}

func (t *isoProc) loadPid() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pid
}

// expectMapped fails unless a file mapped into pid has marker in its path: a
// peer's preload that silently failed must not be measured.
func expectMapped(pid int, marker string) error {
	if pid <= 0 {
		return fmt.Errorf("no pid in READY")
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return fmt.Errorf("reading its maps: %w", err)
	}
	if !strings.Contains(string(maps), marker) {
		return fmt.Errorf("%s is not mapped into pid %d (did the preload fail?)", strings.TrimPrefix(marker, "/"), pid)
	}
	return nil
}

func (t *isoProc) line(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if strings.HasPrefix(l, "READY ") {
		t.pid, _ = strconv.Atoi(lineFields(l)["pid"])
	}
	t.lines = append(t.lines, l)
}

// runCell runs one cell on a fresh node (with its own vgpud for vgpu): the
// aggressors, then the victim, whose figures make the row.
func (r *isoRun) runCell(ctx context.Context, dir string, c isoCell) (*IsolationRow, error) {
	env, stop, err := r.cellEnv(ctx, dir, c)
	if err != nil {
		return nil, err
	}
	defer stop()
	t := &isoTenants{r: r, c: c, env: env}
	defer t.stopAll()
	total := r.opts.Warmup + r.opts.Measure
	flood := strconv.Itoa(r.opts.FloodWaves * r.opts.SMs)
	share := aggressorSharePct(r.opts.VictimSharePct, c.N)
	for i := 0; i < c.N; i++ {
		args := []string{c.Aggressor, isoSecs(total + 60*time.Second), "--grid", flood}
		if _, err := t.start(ctx, fmt.Sprintf("aggr%d", i+1), share, args); err != nil {
			return nil, err
		}
	}
	vargs := []string{"flood", isoSecs(total), "--grid", flood, "--warmup", isoSecs(r.opts.Warmup)}
	if c.Victim == VictimLatency {
		vargs = []string{"latency", isoSecs(total), "--grid", strconv.Itoa(r.opts.LatencyWaves * r.opts.SMs),
			"--warmup", isoSecs(r.opts.Warmup)}
	}
	v, err := t.start(ctx, "victim", r.opts.VictimSharePct, vargs)
	if err != nil {
		return nil, err
	}
	if err := t.awaitVictim(ctx, v, total+60*time.Second); err != nil {
		return nil, err
	}
	return r.cellRow(c, v, share)
}

// isoSecs is a duration as the load program's seconds argument.
func isoSecs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

// cellEnv makes the cell's simulated node and, for vgpu, starts its vgpud;
// it returns the tenants' environment and what stops that vgpud.
func (r *isoRun) cellEnv(ctx context.Context, dir string, c isoCell) ([]string, func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("cell dir: %w", err)
	}
	node := filepath.Join(dir, "node")
	if err := simgpu.Init(node, simgpu.Config{Devices: 1, Memory: 80 << 30, SMs: r.opts.SMs,
		NsPerBlock: r.opts.NsPerBlock}); err != nil {
		return nil, nil, fmt.Errorf("simulated node: %w", err)
	}
	env := append(cleanEnv(), "LD_LIBRARY_PATH="+r.paths.SimLibDir, "VGPU_SIM_STATE="+node)
	stop := func() {}
	if c.Config == IsoVgpu {
		d, err := startBenchVgpud(ctx, DaemonOptions{}, r.vgpud, r.simLib, node, dir)
		if err != nil {
			return nil, nil, err
		}
		stop = func() {
			d.client.Close()
			_ = d.stop()
		}
		if err := d.awaitHealth(ctx, 30*time.Second); err != nil {
			stop()
			return nil, nil, err
		}
		env = append(env, "VGPU_SOCKET="+d.sock, "VGPU_LIBVGPU="+r.paths.LibVGPU)
	}
	if c.Peer != nil {
		env = peerEnviron(env, *c.Peer)
	}
	return env, stop, nil
}

// isoTenants are a cell's running load programs (aggressors, then the
// victim), started in its environment.
type isoTenants struct {
	r     *isoRun
	c     isoCell
	env   []string
	procs []*isoProc
}

// start starts one tenant (through `vgpuctl run` with its share for vgpu)
// and waits for its READY line; with a peer, it checks the peer's library
// is mapped in it.
func (t *isoTenants) start(ctx context.Context, name string, share float64, args []string) (*isoProc, error) {
	prog := t.r.load
	if t.c.Config == IsoVgpu {
		args = append([]string{"run", "--memory", "4GiB", "--compute", strconv.FormatFloat(share, 'f', -1, 64),
			"--compute-policy", "cap", "--id", name, "--", t.r.load}, args...)
		prog = t.r.vgpuctl
	}
	ip := &isoProc{}
	p, err := (&throttleRun{prog: prog}).startWith(ctx, t.env, args, ip.line)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ip.p = p
	t.procs = append(t.procs, ip)
	select {
	case err := <-p.ready:
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("%s: no READY within 30s: %s", name, strings.TrimSpace(p.errb.String()))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if t.c.Peer != nil {
		if err := expectMapped(ip.loadPid(), t.c.Peer.marker()); err != nil {
			return nil, fmt.Errorf("%s: peer %s: %w", name, t.c.Peer.Name, err)
		}
	}
	return ip, nil
}

// awaitVictim waits for the victim (the last tenant) to finish within
// limit; every aggressor must still be running then.
func (t *isoTenants) awaitVictim(ctx context.Context, v *isoProc, limit time.Duration) error {
	select {
	case <-v.p.done:
	case <-time.After(limit):
		return fmt.Errorf("victim did not finish within %v", limit)
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, p := range t.procs[:len(t.procs)-1] {
		select {
		case <-p.p.done:
			return fmt.Errorf("an aggressor exited before the victim's end: %s", strings.TrimSpace(p.p.errb.String()))
		default:
		}
	}
	return nil
}

// stopAll kills every tenant and waits (5 s each at most) for it to end.
func (t *isoTenants) stopAll() {
	pids, launchers := make([]int, len(t.procs)), make([]*tenantProc, len(t.procs))
	for i, p := range t.procs {
		pids[i], launchers[i] = p.pid, p.p
	}
	stopWorkloads(pids, launchers)
}

// cellRow is the row of a cell from its victim's output.
func (r *isoRun) cellRow(c isoCell, v *isoProc, share float64) (*IsolationRow, error) {
	v.mu.Lock()
	lines := append([]string(nil), v.lines...)
	v.mu.Unlock()
	res, err := parseVictim(lines)
	if err != nil {
		return nil, fmt.Errorf("victim: %w (stderr: %s)", err, strings.TrimSpace(v.p.errb.String()))
	}
	row := &IsolationRow{Victim: c.Victim, Aggressor: c.Aggressor, Aggressors: c.N, Config: c.Config,
		Peer: c.Peer != nil, Steps: res.steps, Seconds: res.seconds}
	if c.Config == IsoVgpu {
		row.VictimSharePct, row.AggressorSharePct = r.opts.VictimSharePct, share
	}
	if res.seconds > 0 {
		row.StepsPerS = float64(res.steps) / res.seconds
	}
	if c.Victim == VictimLatency {
		row.LatencyUs = Summarize(res.latUs)
	}
	return row, nil
}
