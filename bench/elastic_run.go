package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// elasticRun is one run of the elastic benchmark.
type elasticRun struct {
	opts                   ElasticOptions
	paths                  Paths
	nodeRoot               string // where the simulated nodes' state files go
	vgpud, vgpuctl, simLib string
	elastic, torch, allocP string // build/test/elastic, torchlike, alloc
	log                    io.Writer
}

func newElasticRun(opts ElasticOptions) (*elasticRun, error) {
	root, err := repositoryRoot(opts.Root, findDaemonRoot)
	if err != nil {
		return nil, err
	}
	test := filepath.Join(root, "build", "test")
	r := &elasticRun{opts: opts, paths: pathsAt(root), vgpud: filepath.Join(root, "bin", "vgpud"),
		vgpuctl: filepath.Join(root, "bin", "vgpuctl"),
		simLib:  filepath.Join(root, "build", "simgpu", "libnvidia-ml.so.1"), elastic: filepath.Join(test, "elastic"),
		torch: filepath.Join(test, "torchlike"), allocP: filepath.Join(test, "alloc"), log: opts.Log}
	if r.log == nil {
		r.log = io.Discard
	}
	for _, f := range []string{r.vgpud, r.vgpuctl, r.simLib, r.elastic, r.torch, r.allocP, r.paths.LibVGPU,
		filepath.Join(r.paths.SimLibDir, "libcuda.so.1")} {
		if !fileExists(f) {
			return nil, fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	return r, nil
}

// grantDeviceBytes sizes the grant node's device: every slice at its
// ceiling, and 4 GiB more, at least 16 GiB.
func grantDeviceBytes(o ElasticOptions, c int) uint64 {
	return max(16<<30, uint64(c)*o.Max+4<<30)
}

func (r *elasticRun) newReport(ctx context.Context, tmp string) *ElasticReport {
	m := hostMachine(ctx, r.paths.Root, time.Now())
	m.Driver = DriverSim
	o := r.opts
	interval := o.EnforcerInterval
	if interval == "" {
		interval = "vgpud's default (50ms)"
	}
	maxC := 1
	for _, c := range o.Concurrency {
		maxC = max(maxC, c)
	}
	return &ElasticReport{Benchmark: "elastic", Machine: m, Config: ElasticConfig{
		Concurrency: o.Concurrency, Rounds: o.Rounds, BaseBytes: o.Base, MaxBytes: o.Max, AllocBytes: o.Alloc,
		ContextBytes: elasticContextBytes, DeviceBytes: grantDeviceBytes(o, maxC), Reclaims: o.Reclaims,
		EnforcerInterval: interval, StateFS: fsType(tmp),
		Commands: []string{
			"bin/vgpud --enforcer-mode enforce --log-level debug --log-format json --nvml-lib build/simgpu/libnvidia-ml.so.1 (one per row / repetition, fresh simulated node)",
			fmt.Sprintf("grant: POST /v1/slices {memory_bytes: %d, memory_max_bytes: %d, qos: burstable} per tenant; "+
				"build/test/elastic --step --alloc %d under LD_PRELOAD=build/libvgpu.so VGPU_SLICE_DIR=<slice>", o.Base, o.Max, o.Alloc),
			"reclaim (16 GiB device): lender POST /v1/slices {memory_bytes: 12GiB} (guaranteed, no process); " +
				"bin/vgpuctl run --memory 2GiB --memory-max 12GiB --qos burstable --id borrower -- build/test/torchlike " +
				"9GiB 512MiB hold; then build/test/alloc --api alloc --chunk 1GiB --count 10 --step in the lender's slice",
		},
		SampleNotes: "grant: each sample is the wall time (CLOCK_MONOTONIC, inside the tenant) of the allocation " +
			"past the base — refused by the budget, request posted, vgpud's grant, retry — after all tenants of a " +
			"round held their context and were released together (a line on each stdin); one untimed warm-up round " +
			"per row. reclaim: from the benchmark reading the lender's \"PHASE ready\" line to the borrower's budget " +
			"memory_limit lowered (polled read-only every 100 µs) and to the workload's death (its pidfd readable; the borrower runs under `vgpuctl run`, so that vgpud attributes the workload to its slice).",
	}}
}

// elasticNode is a simulated node with a running vgpud.
type elasticNode struct {
	dir   string
	state string
	d     *benchVgpud
}

func (r *elasticRun) startNode(ctx context.Context, dir string, mem uint64) (*elasticNode, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	nodeDir, err := os.MkdirTemp(r.nodeRoot, "node-")
	if err != nil {
		return nil, err
	}
	n := &elasticNode{dir: dir, state: filepath.Join(nodeDir, "node")}
	if err := simgpu.Init(n.state, simgpu.Config{Devices: 1, Memory: mem, SMs: simSMs}); err != nil {
		return nil, fmt.Errorf("creating the simulated node: %w", err)
	}
	extra := []string{"--enforcer-mode", "enforce", "--log-level", "debug", "--log-format", "json"}
	if r.opts.EnforcerInterval != "" {
		extra = append(extra, "--enforcer-interval", r.opts.EnforcerInterval)
	}
	d, err := startBenchVgpud(ctx, DaemonOptions{}, r.vgpud, r.simLib, n.state, dir, extra...)
	if err != nil {
		return nil, err
	}
	n.d = d
	if err := d.awaitHealth(ctx, r.opts.StepTimeout); err != nil {
		_ = d.stop()
		return nil, err
	}
	return n, nil
}

// stop ends vgpud and returns its log (also left in vgpud.log, for --keep).
func (n *elasticNode) stop() string {
	n.d.client.Close()
	_ = n.d.stop()
	log := n.d.out.String()
	_ = os.WriteFile(filepath.Join(n.dir, "vgpud.log"), []byte(log), 0o644)
	return log
}

// env is a tenant's environment in slice dir.
func (r *elasticRun) env(n *elasticNode, sliceDir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || k == "CUDA_VISIBLE_DEVICES" || strings.HasPrefix(k, "VGPU_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LD_LIBRARY_PATH="+r.paths.SimLibDir, "VGPU_SIM_STATE="+n.state)
	if sliceDir == "" {
		return env
	}
	return append(env, "LD_PRELOAD="+r.paths.LibVGPU, "VGPU_SLICE_DIR="+sliceDir)
}

// grantRow measures c slices asking at once, opts.Rounds times after one
// warm-up round, on a fresh node whose state dir is under dir.
func (r *elasticRun) grantRow(ctx context.Context, dir string, c int, settle time.Duration) (*ElasticGrantRow, error) {
	n, err := r.startNode(ctx, dir, grantDeviceBytes(r.opts, c))
	if err != nil {
		return nil, err
	}
	row := &ElasticGrantRow{Concurrency: c, StateFS: fsType(dir), Rounds: r.opts.Rounds, SettleMS: float64(settle) / 1e6}
	var runErr error
	releases := map[int]time.Time{}
	for round := 0; round <= r.opts.Rounds && runErr == nil; round++ {
		var res []elasticResult
		res, releases[round], runErr = r.grantRound(ctx, n, round, c, settle)
		if round == 0 {
			continue // warm-up
		}
		for _, x := range res {
			if x.Err != 0 {
				row.Refused++
				row.RefusedErrs = append(row.RefusedErrs, x.Name)
				row.RefusedMS = append(row.RefusedMS, float64(x.Ns)/1e6)
				continue
			}
			row.SamplesMS = append(row.SamplesMS, float64(x.Ns)/1e6)
		}
	}
	log := n.stop()
	if runErr != nil {
		return nil, fmt.Errorf("%w; vgpud's log ends: %s", runErr, tail(log, 2000))
	}
	row.Latency = Summarize(row.SamplesMS)
	row.LoggedGrants = countLogMsg(log, "elastic: memory granted")
	row.LoggedRefusals = countLogMsg(log, "elastic: request refused")
	var lastMS []float64
	plans := map[int]int{}
	for round, ts := range grantLogTimes(log) {
		rel, ok := releases[round]
		if round == 0 || !ok || len(ts) == 0 {
			continue
		}
		lastMS = append(lastMS, float64(ts[len(ts)-1].Sub(rel))/1e6)
		plans[planCount(ts, time.Millisecond)]++
	}
	row.LastLoggedMS = Summarize(lastMS)
	row.PlansPerRound = plans
	return row, nil
}

// grantRound creates c slices, holds c tenants at "PHASE ready", releases
// them together and collects their RESULT lines; then ends them and releases
// the slices.
func (r *elasticRun) grantRound(ctx context.Context, n *elasticNode, round, c int, settle time.Duration) (
	out []elasticResult, released time.Time, err error,
) {
	o := r.opts
	var procs []*benchProc
	var ids []string
	defer func() {
		for _, p := range procs {
			p.finish(5 * time.Second)
		}
		for _, id := range ids {
			_ = n.d.client.Release(ctx, id)
		}
	}()
	var created time.Time
	for i := range c {
		id := fmt.Sprintf("g%d-%d", round, i)
		sl, err := n.d.client.Alloc(ctx, api.AllocRequest{ID: id, MemoryBytes: o.Base, MemoryMaxBytes: o.Max,
			QoS: api.QoSBurstable})
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("alloc slice %s: %w", id, err)
		}
		ids = append(ids, id)
		created = time.Now()
		p, err := startBenchProc(ctx, r.env(n, sl.Dir), r.elastic, "--step", "--alloc", strconv.FormatUint(o.Alloc, 10))
		if err != nil {
			return nil, time.Time{}, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if _, err := p.expect("PHASE ready", o.StepTimeout); err != nil {
			return nil, time.Time{}, err
		}
	}
	// The steady case: the slices made a while before their requests (the
	// settle-0 row has them right after).
	if wait := time.Until(created.Add(settle)); wait > 0 {
		time.Sleep(wait)
	}
	released = time.Now()
	for _, p := range procs { // release them together
		if _, err := io.WriteString(p.stdin, "\n"); err != nil {
			return nil, released, fmt.Errorf("releasing a tenant: %w", err)
		}
	}
	out = make([]elasticResult, 0, c)
	for _, p := range procs {
		l, err := p.expect("RESULT", o.StepTimeout)
		if err != nil {
			return nil, released, err
		}
		res, err := parseElasticResult(l.text)
		if err != nil {
			return nil, released, err
		}
		out = append(out, res)
	}
	return out, released, nil
}

// reclaim runs the lender-wakes scenario opts.Reclaims times.
func (r *elasticRun) reclaim(ctx context.Context, dir string) (*ElasticReclaim, error) {
	rc := &ElasticReclaim{Repeats: r.opts.Reclaims}
	for i := range r.opts.Reclaims {
		shrink, evict, borrowed, before, after, status, err := r.reclaimOnce(ctx, filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			return nil, fmt.Errorf("repetition %d: %w", i+1, err)
		}
		fmt.Fprintf(r.log, "bench: elastic: reclaim %d: shrink %.2f ms, evict %.2f ms (borrowed %s, exit %d)\n",
			i+1, shrink, evict, sizeText(borrowed), status)
		rc.ShrinkMS = append(rc.ShrinkMS, shrink)
		rc.EvictMS = append(rc.EvictMS, evict)
		rc.BorrowedBytes = append(rc.BorrowedBytes, borrowed)
		rc.LimitBefore = append(rc.LimitBefore, before)
		rc.LimitAfter = append(rc.LimitAfter, after)
		rc.ExitStatus = append(rc.ExitStatus, status)
	}
	rc.Shrink, rc.Evict = Summarize(rc.ShrinkMS), Summarize(rc.EvictMS)
	return rc, nil
}

func (r *elasticRun) reclaimOnce(ctx context.Context, dir string) (shrinkMS, evictMS float64, borrowed, before,
	after uint64, status int, err error,
) {
	const gib = uint64(1) << 30
	to := r.opts.StepTimeout
	n, err := r.startNode(ctx, dir, 16*gib)
	if err != nil {
		return 0, 0, 0, 0, 0, 0, err
	}
	var procs []*benchProc
	defer func() {
		for _, p := range procs {
			p.finish(5 * time.Second)
		}
		log := n.stop()
		if err != nil {
			err = fmt.Errorf("%w; vgpud's log ends: %s", err, tail(log, 2000))
		}
	}()
	cl := n.d.client
	lender, err := cl.Alloc(ctx, api.AllocRequest{ID: "lender", MemoryBytes: 12 * gib})
	if err != nil {
		return 0, 0, 0, 0, 0, 0, fmt.Errorf("alloc lender: %w", err)
	}
	// The borrower the user's way (`vgpuctl run`): vgpud attributes the
	// workload to its slice by ancestry, so the backstop may act on it.
	bp, err := startBenchProc(ctx, append(r.env(n, ""), "VGPU_SOCKET="+n.d.sock, "VGPU_LIBVGPU="+r.paths.LibVGPU),
		r.vgpuctl, "run", "--memory", "2GiB", "--memory-max", "12GiB", "--qos", "burstable", "--id", "borrower", "--",
		r.torch, strconv.FormatUint(9*gib, 10), strconv.FormatUint(512<<20, 10), "hold")
	if err != nil {
		return 0, 0, 0, 0, 0, 0, err
	}
	procs = append(procs, bp)
	if _, err = bp.expect("HOLDING", to); err != nil {
		return 0, 0, 0, 0, 0, 0, err
	}
	got, err := cl.Get(ctx, "borrower")
	if err != nil {
		return 0, 0, 0, 0, 0, 0, fmt.Errorf("get borrower: %w", err)
	}
	borrowed = got.Devices[0].BorrowedBytes()
	if borrowed == 0 || got.Devices[0].Loans[0].From != "lender" {
		return 0, 0, 0, 0, 0, 0, fmt.Errorf("the borrower borrowed nothing from the lender: %+v", got.Devices[0])
	}
	// The workload's own death (vgpuctl's exit comes after it, and after
	// vgpuctl's own clean-up), from a pidfd.
	died, err := watchChild(bp.cmd.Process.Pid)
	if err != nil {
		return 0, 0, 0, 0, 0, 0, err
	}
	bsl := got
	b, err := shm.OpenBudget(filepath.Join(bsl.Dir, shm.BudgetFile), false)
	if err != nil {
		return 0, 0, 0, 0, 0, 0, fmt.Errorf("open the borrower's budget: %w", err)
	}
	defer b.Close()
	before = b.MemoryLimit(0)
	type lowered struct {
		at    time.Time
		limit uint64
	}
	shrunk := make(chan lowered, 1)
	stopPoll := make(chan struct{})
	defer close(stopPoll)
	go func() {
		for {
			if l := b.MemoryLimit(0); l < before {
				shrunk <- lowered{time.Now(), l}
				return
			}
			select {
			case <-stopPoll:
				return
			default:
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	wake, err := startBenchProc(ctx, r.env(n, lender.Dir), r.allocP, "--api", "alloc", "--chunk", "1GiB",
		"--count", "10", "--step")
	if err != nil {
		return 0, 0, 0, 0, 0, 0, err
	}
	procs = append(procs, wake)
	ready, err := wake.expect("PHASE ready", to)
	if err != nil {
		return 0, 0, 0, 0, 0, 0, err
	}
	select {
	case s := <-shrunk:
		shrinkMS, after = float64(s.at.Sub(ready.at))/1e6, s.limit
	case <-time.After(to):
		return 0, 0, 0, 0, 0, 0, fmt.Errorf("the borrower's limit still %s %v after the lender woke", sizeText(before), to)
	}
	select {
	case at := <-died:
		evictMS = float64(at.Sub(ready.at)) / 1e6
	case <-time.After(to):
		return 0, 0, 0, 0, 0, 0, fmt.Errorf("the borrower still runs %v after the lender woke", to)
	}
	select {
	case <-bp.done:
		status = bp.status
	case <-time.After(to):
		return 0, 0, 0, 0, 0, 0, fmt.Errorf("the borrower still runs %v after the lender woke", to)
	}
	return shrinkMS, evictMS, borrowed, before, after, status, nil
}
