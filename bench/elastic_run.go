package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// elasticRun is one run of the elastic benchmark.
type elasticRun struct {
	opts                   ElasticOptions
	paths                  Paths
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
			"reclaim: lender POST /v1/slices {memory_bytes: 12GiB} (guaranteed, no process); borrower {memory_bytes: 2GiB, " +
				"memory_max_bytes: 12GiB, qos: burstable} running build/test/torchlike 9GiB 512MiB hold on a 16 GiB device; " +
				"then build/test/alloc --api alloc --chunk 1GiB --count 10 --step in the lender",
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
	n := &elasticNode{dir: dir, state: filepath.Join(dir, "node")}
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
	// vgpud adds a new slice's doorbell at its first tick after the slice was
	// created: a request before it waits for the tick (see the settle column).
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

// elasticResult is build/test/elastic's RESULT line.
type elasticResult struct {
	Err  int
	Name string
	Ns   int64
}

// parseElasticResult parses "RESULT err=<code> name=<name> ns=<ns>".
func parseElasticResult(l string) (elasticResult, error) {
	if !strings.HasPrefix(l, "RESULT ") {
		return elasticResult{}, fmt.Errorf("not a RESULT line: %q", l)
	}
	f := lineFields(l)
	e, err1 := strconv.Atoi(f["err"])
	ns, err2 := strconv.ParseInt(f["ns"], 10, 64)
	if err1 != nil || err2 != nil || f["name"] == "" || ns < 0 {
		return elasticResult{}, fmt.Errorf("malformed RESULT line: %q", l)
	}
	return elasticResult{Err: e, Name: f["name"], Ns: ns}, nil
}

// countLogMsg counts vgpud's JSON log records whose msg is msg.
func countLogMsg(log, msg string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
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

// benchProc is a child whose stdout lines are read with the instant each
// was read, and whose exit instant is recorded.
type benchProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan stampedLine
	done   chan struct{}
	exitAt time.Time
	status int // exit code, or 128 + signal
	errb   strings.Builder
}

type stampedLine struct {
	text string
	at   time.Time
}

func startBenchProc(ctx context.Context, env []string, prog string, args ...string) (*benchProc, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	p := &benchProc{cmd: cmd, lines: make(chan stampedLine, 64), done: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = &lockedBuilder{b: &p.errb}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", prog, err)
	}
	p.stdin = stdin
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- stampedLine{sc.Text(), time.Now()}
		}
		close(p.lines)
		_ = cmd.Wait()
		p.exitAt = time.Now()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.status = 128 + int(ws.Signal())
		} else {
			p.status = cmd.ProcessState.ExitCode()
		}
		close(p.done)
	}()
	return p, nil
}

// expect returns the next line starting with prefix (skipping others).
func (p *benchProc) expect(prefix string, timeout time.Duration) (stampedLine, error) {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				return stampedLine{}, fmt.Errorf("%s exited (status %d) before %q: %s", filepath.Base(p.cmd.Path),
					p.status, prefix, strings.TrimSpace(p.errb.String()))
			}
			if strings.HasPrefix(l.text, prefix) {
				return l, nil
			}
		case <-deadline:
			return stampedLine{}, fmt.Errorf("%s: no %q within %v", filepath.Base(p.cmd.Path), prefix, timeout)
		}
	}
}

// finish closes stdin (the programs free and exit), waits up to grace, then
// kills.
func (p *benchProc) finish(grace time.Duration) {
	_ = p.stdin.Close()
	go func() { // drain, so the reader never blocks
		for range p.lines {
		}
	}()
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// recordWriteCost times n durable record writes (atomicfile.Write with
// Durable: write, fsync, rename, fsync of the directory — what store.Update
// does for each slice a grant changes) of a 1 KiB file under dir.
func recordWriteCost(dir string, n int) (*ElasticWriteCost, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data := make([]byte, 1024)
	var ms []float64
	for i := range n {
		t0 := time.Now()
		if err := atomicfile.Write(filepath.Join(dir, "slice.json"), data, 0o644, atomicfile.Durable); err != nil {
			return nil, fmt.Errorf("record write: %w", err)
		}
		if i > 0 {
			ms = append(ms, float64(time.Since(t0))/1e6)
		}
	}
	return &ElasticWriteCost{StateFS: fsType(dir), Write: Summarize(ms)}, nil
}

// watchChild finds the one child of pid (vgpuctl run's workload) and returns
// a channel that receives the instant it dies (its pidfd readable).
func watchChild(pid int) (<-chan time.Time, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	child := 0
	for _, e := range ents {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, cut at its last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			child = cpid
			break
		}
	}
	if child == 0 {
		return nil, fmt.Errorf("no child of vgpuctl run (pid %d)", pid)
	}
	fd, err := unix.PidfdOpen(child, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", child, err)
	}
	out := make(chan time.Time, 1)
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}} //nolint:gosec // an fd
		for {
			if _, err := unix.Poll(fds, -1); err == nil || err != unix.EINTR {
				out <- time.Now()
				return
			}
		}
	}()
	return out, nil
}

// grantLogTimes returns, per round (slice ids g<round>-<i>), the sorted
// instants of vgpud's "elastic: memory granted" records (ms resolution).
func grantLogTimes(log string) map[int][]time.Time {
	out := map[int][]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg   string `json:"msg"`
			TS    string `json:"ts"`
			Slice string `json:"slice"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Msg != "elastic: memory granted" {
			continue
		}
		round, ok := grantRoundOf(rec.Slice)
		t, err := time.Parse(time.RFC3339Nano, rec.TS)
		if !ok || err != nil {
			continue
		}
		out[round] = append(out[round], t)
	}
	for _, ts := range out {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	}
	return out
}

// grantRoundOf parses a grant slice id "g<round>-<i>".
func grantRoundOf(id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, "g")
	if !ok {
		return 0, false
	}
	r, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(r)
	return n, err == nil && n >= 0
}

// planCount counts the groups of sorted instants more than gap apart: the
// plans (ticks) that granted a round's requests (one plan logs its grants
// together, after answering them all).
func planCount(ts []time.Time, gap time.Duration) int {
	if len(ts) == 0 {
		return 0
	}
	n := 1
	for i := 1; i < len(ts); i++ {
		if ts[i].Sub(ts[i-1]) > gap {
			n++
		}
	}
	return n
}
