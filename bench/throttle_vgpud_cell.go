package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// vgpudTenant is a tenant of a vgpud-mode cell while it runs: `vgpuctl run`
// and, below it, throttle_load (pid, from its READY line).
type vgpudTenant struct {
	spec       vgpudTenantSpec
	proc       *tenantProc
	pid        int
	start, end int64 // CLOCK_MONOTONIC ns: READY, and the kill or the cell's end
	// judgedEnd is where its figures end: end, or for a tenant killed mid-cell
	// the last sample period the sampler had read before the kill
	// (sampler.readThroughNs).
	judgedEnd int64
	killed    bool
	retargets []retargetAt // done, in order
}

// retargetAt is a retarget as done: when the update was asked (the instant
// its settle is measured from) and the new share.
type retargetAt struct {
	at  int64 // CLOCK_MONOTONIC ns
	pct float64
}

// vgpudCell is a cell while it runs.
type vgpudCell struct {
	r      *vgpudRun
	spec   vgpudCellSpec
	d      *benchVgpud
	smp    *sampler
	ts     []*vgpudTenant
	t0     int64
	events []VgpudEvent
}

// runCell runs c on the run's node in dir (a fresh one on the simulated
// driver), with its own vgpud and sampler.
func (r *vgpudRun) runCell(ctx context.Context, dir string, c vgpudCellSpec) (*VgpudCell, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cell dir: %w", err)
	}
	vc := &vgpudCell{r: r, spec: c}
	if c.NsPerBlock == 0 && r.opts.Driver == DriverSim {
		vc.spec.NsPerBlock = r.opts.NsPerBlock
	}
	period, queueNs, err := r.node.setUp(dir, vc.spec)
	if err != nil {
		return nil, err
	}
	if vc.d, err = r.node.startVgpud(ctx, dir); err != nil {
		return nil, err
	}
	defer func() { _ = vc.d.stop() }()
	defer vc.d.client.Close()
	if err := vc.d.awaitHealth(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if vc.smp, err = r.node.startSampler(ctx, period); err != nil {
		return nil, err
	}
	defer vc.smp.stop()
	defer vc.stopTenants()
	if err := vc.run(ctx); err != nil {
		return nil, err
	}
	// Every period up to the cell's end complete and read by the sampler.
	if err := sleepCtx(ctx, time.Duration(2*period)+3*samplerPoll); err != nil {
		return nil, err
	}
	if err := vc.check(); err != nil {
		return nil, err
	}
	res := vc.result(period)
	res.DurationS = c.Duration.Seconds()
	res.SamplePeriodNs, res.DeviceQueueNs = uint64(period), queueNs
	return res, nil
}

// run starts and stops the tenants on the cell's schedule until its end.
func (vc *vgpudCell) run(ctx context.Context) error {
	for _, t := range vc.spec.Tenants {
		vc.ts = append(vc.ts, &vgpudTenant{spec: t})
	}
	var offsets []time.Duration
	for _, t := range vc.ts {
		offsets = append(offsets, t.spec.Start)
		if t.spec.Stop > 0 {
			offsets = append(offsets, t.spec.Stop)
		}
		for _, rt := range t.spec.Retargets {
			offsets = append(offsets, rt.At)
		}
	}
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] < offsets[j] })
	vc.t0 = monoNow()
	for _, off := range append(offsets, vc.spec.Duration) {
		if err := sleepCtx(ctx, time.Duration(vc.t0+off.Nanoseconds()-monoNow())); err != nil {
			return err
		}
		if err := vc.smp.alive(); err != nil {
			return err
		}
		if err := vc.startAt(ctx, off); err != nil {
			return err
		}
		if err := vc.retargetAt(ctx, off); err != nil {
			return err
		}
		for _, t := range vc.ts {
			if t.spec.Stop == off && t.spec.Stop > 0 && !t.killed {
				t.end = monoNow()
				t.judgedEnd = min(t.end, vc.smp.readThroughNs())
				_ = syscall.Kill(t.pid, syscall.SIGKILL)
				t.killed = true
				vc.events = append(vc.events, VgpudEvent{AtS: vc.rel(t.end), Kind: "leave", Tenant: t.spec.Name})
			}
		}
	}
	end := vc.t0 + vc.spec.Duration.Nanoseconds()
	for _, t := range vc.ts {
		if !t.killed {
			t.end, t.judgedEnd = end, end
		}
	}
	return nil
}

func (vc *vgpudCell) rel(ns int64) float64 { return float64(ns-vc.t0) / 1e9 }

// startAt starts the tenants due at off, all at once, and waits until each is
// READY (its start instant).
func (vc *vgpudCell) startAt(ctx context.Context, off time.Duration) error {
	var due []*vgpudTenant
	for _, t := range vc.ts {
		if t.spec.Start == off && t.proc == nil {
			due = append(due, t)
		}
	}
	pids := make([]int, len(due))
	for i, t := range due {
		seconds := (vc.spec.Duration - off + 3*time.Second).Seconds()
		prog, place := vc.r.node.command(t.spec, seconds, i+1)
		args := append([]string{"run", "--memory", "2GiB", "--compute", strconv.FormatFloat(t.spec.SharePct, 'f', -1, 64),
			"--compute-policy", "cap", "--id", t.spec.Name}, place...)
		args = append(append(args, "--"), prog...)
		run := &throttleRun{prog: vc.r.vgpuctl}
		p, err := run.startWith(ctx, vc.env(), args, func(l string) {
			if strings.HasPrefix(l, "READY ") {
				pids[i], _ = strconv.Atoi(lineFields(l)["pid"])
			}
		})
		if err != nil {
			return fmt.Errorf("tenant %s: %w", t.spec.Name, err)
		}
		t.proc = p
	}
	for i, t := range due {
		select {
		case err := <-t.proc.ready:
			if err != nil {
				return fmt.Errorf("tenant %s: %w", t.spec.Name, err)
			}
		case <-time.After(30 * time.Second):
			return fmt.Errorf("tenant %s: no READY within 30s", t.spec.Name)
		case <-ctx.Done():
			return ctx.Err()
		}
		t.start, t.pid = monoNow(), pids[i]
		if t.pid <= 0 {
			return fmt.Errorf("tenant %s: READY without a pid", t.spec.Name)
		}
		kind := "start"
		if off > 0 {
			kind = "join"
		}
		vc.events = append(vc.events, VgpudEvent{AtS: vc.rel(t.start), Kind: kind, Tenant: t.spec.Name})
	}
	return nil
}

// retargetAt changes the shares due at off through `vgpuctl update`, the
// user's path, and records each as a change of its tenant: its settle is
// measured from the instant the update was asked, against the new share.
func (vc *vgpudCell) retargetAt(ctx context.Context, off time.Duration) error {
	for _, t := range vc.ts {
		for _, rt := range t.spec.Retargets {
			if rt.At != off || t.proc == nil || t.killed {
				continue
			}
			pct := strconv.FormatFloat(rt.SharePct, 'f', -1, 64)
			cmd := exec.CommandContext(ctx, vc.r.vgpuctl, "update", t.spec.Name, "--compute", pct)
			cmd.Env = vc.env()
			at := monoNow()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("tenant %s: vgpuctl update --compute %s: %w: %s", t.spec.Name, pct, err,
					strings.TrimSpace(string(out)))
			}
			t.retargets = append(t.retargets, retargetAt{at: at, pct: rt.SharePct})
			vc.events = append(vc.events, VgpudEvent{AtS: vc.rel(at), Kind: "retarget", Tenant: t.spec.Name,
				TargetPct: rt.SharePct})
		}
	}
	return nil
}

// env is a tenant's environment: the node's driver, the cell's vgpud and libvgpu.
func (vc *vgpudCell) env() []string {
	return append(vc.r.node.env(), "VGPU_SOCKET="+vc.d.sock, "VGPU_LIBVGPU="+vc.r.paths.LibVGPU)
}

// check fails the cell when a tenant that should still run has exited (its
// figures would be of a shorter life than reported).
func (vc *vgpudCell) check() error {
	for _, t := range vc.ts {
		if t.killed || t.proc == nil {
			continue
		}
		select {
		case <-t.proc.done:
			return fmt.Errorf("tenant %s exited before the cell's end (%v): %s", t.spec.Name,
				t.proc.cmd.ProcessState, strings.TrimSpace(t.proc.errb.String()))
		default:
		}
	}
	return nil
}

// stopTenants kills every tenant's throttle_load, then its vgpuctl.
func (vc *vgpudCell) stopTenants() {
	pids, launchers := make([]int, len(vc.ts)), make([]*tenantProc, len(vc.ts))
	for i, t := range vc.ts {
		pids[i], launchers[i] = t.pid, t.proc
	}
	stopWorkloads(pids, launchers)
}

// result computes every tenant's figures from the sampler's records.
func (vc *vgpudCell) result(period int64) *VgpudCell {
	res := &VgpudCell{Name: vc.spec.Name, About: vc.spec.About, NsPerBlock: vc.spec.NsPerBlock, Events: vc.events}
	for _, t := range vc.ts {
		sp := tenantSpan{target: t.spec.SharePct, start: t.start, end: t.judgedEnd,
			changes: []int64{t.start}, labels: []string{"start"}}
		for _, o := range vc.ts {
			if o == t {
				continue
			}
			if o.spec.Start > 0 && o.start > t.start && o.start < t.judgedEnd {
				sp.changes, sp.labels = append(sp.changes, o.start), append(sp.labels, "join "+o.spec.Name)
			}
			if o.killed && o.end > t.start && o.end < t.judgedEnd {
				sp.changes, sp.labels = append(sp.changes, o.end), append(sp.labels, "leave "+o.spec.Name)
			}
		}
		for _, rt := range t.retargets {
			sp.changes = append(sp.changes, rt.at)
			sp.labels = append(sp.labels, "retarget "+strconv.FormatFloat(rt.pct, 'f', -1, 64)+"%")
		}
		sortChanges(&sp)
		if len(t.retargets) > 0 {
			sp.targets = targetsAt(sp.changes, t.spec.SharePct, t.retargets)
		}
		s := vc.smp.series(map[int]bool{t.pid: true}, vc.t0, t.judgedEnd)
		f := tenantFigures(s, sp, vc.t0, vc.r.opts)
		f.Name, f.Workload, f.Grid, f.Policy, f.Pid = t.spec.Name, t.spec.Workload, t.spec.Grid, "cap", t.pid
		f.Kernel = t.spec.Kernel
		res.Tenants = append(res.Tenants, f)
	}
	return res
}

// targetsAt is the target in force from each change on: the first one's
// until the first retarget, then each retarget's (retargets in time order).
func targetsAt(changes []int64, first float64, retargets []retargetAt) []float64 {
	out := make([]float64, len(changes))
	for i, c := range changes {
		out[i] = first
		for _, rt := range retargets {
			if rt.at <= c {
				out[i] = rt.pct
			}
		}
	}
	return out
}

func sortChanges(sp *tenantSpan) {
	idx := make([]int, len(sp.changes))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return sp.changes[idx[a]] < sp.changes[idx[b]] })
	ch, lb := make([]int64, len(idx)), make([]string, len(idx))
	for i, k := range idx {
		ch[i], lb[i] = sp.changes[k], sp.labels[k]
	}
	sp.changes, sp.labels = ch, lb
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
