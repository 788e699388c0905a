package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

// simCell is one cell on the simulated node while it runs.
type simCell struct {
	r     *throttleRun
	node  string // the simulated node's state file
	ts    []*tenantState
	total time.Duration // warm-up + window
}

// runCell runs one cell on a fresh node in dir.
func (r *throttleRun) runCell(ctx context.Context, dir string, c cellSpec) (*cellResult, error) {
	sc := &simCell{r: r, node: filepath.Join(dir, "node"), total: c.Warmup + c.Window}
	// A fresh node per cell: no tenant of an earlier cell can still hold the
	// device, and every process's busy time starts at 0.
	ctxMem := uint64(0)
	if err := simgpu.Init(sc.node, simgpu.Config{Devices: 1, Memory: 80 << 30, SMs: r.opts.SMs,
		NsPerBlock: r.opts.NsPerBlock, ContextMemory: &ctxMem}); err != nil {
		return nil, fmt.Errorf("simulated node: %w", err)
	}
	var err error
	sc.ts, err = newTenants(dir, c.Tenants)
	defer func() { closeTenants(sc.ts) }()
	if err != nil {
		return nil, err
	}
	for _, t := range sc.ts {
		if t.spec.Start == 0 {
			if err := sc.startTenant(ctx, t, sc.total); err != nil {
				return nil, fmt.Errorf("tenant %s: %w", t.spec.Name, err)
			}
		}
	}
	return sc.control(ctx, c)
}

// control steps the controller every tick until the window is over. Tenants
// that start late (settle: from creation) and target changes happen between
// steps, at their offsets from the cell's start.
func (sc *simCell) control(ctx context.Context, c cellSpec) (*cellResult, error) {
	r, ts := sc.r, sc.ts
	l := newCellLoop(ts, r.opts.Tick, r.opts.Controller)
	changes := append([]TargetChange(nil), c.Changes...)
	busy := func(i int) uint64 { return ts[i].busy }
	for step := 1; ; step++ {
		now, el, err := l.await(ctx, step)
		if err != nil {
			return nil, err
		}
		if err := sc.startLate(ctx, el); err != nil {
			return nil, err
		}
		for len(changes) > 0 && el >= changes[0].At {
			ch := changes[0]
			changes = changes[1:]
			t := ts[ch.Tenant]
			if err := t.budget.SetComputeShare(0, ch.ShareBP, t.spec.FloorBP); err != nil {
				return nil, err
			}
		}
		// The simulated driver measures every process's busy time, so every
		// step is measured.
		if err := r.readBusy(sc.node, ts); err != nil {
			return nil, err
		}
		l.step(now, busy, true)
		if r.opts.StepLog != nil {
			l.logStep(r.opts.StepLog, c, el, func(int) string { return "" })
		}
		if err := l.apply(); err != nil {
			return nil, err
		}
		if c.Trace {
			s := traceSample{At: el, Busy: make([]uint64, len(ts))}
			for i, t := range ts {
				s.Busy[i] = t.busy
			}
			l.res.Trace = append(l.res.Trace, s)
		}
		l.openWindow(now, el, c.Warmup)
		if l.closeWindow(now, el, sc.total) {
			return l.res, nil
		}
	}
}

// startLate starts the tenants whose start offset has come, for what is left
// of the cell.
func (sc *simCell) startLate(ctx context.Context, el time.Duration) error {
	for _, t := range sc.ts {
		if t.spec.Start > 0 && len(t.procs) == 0 && el >= t.spec.Start {
			if err := sc.startTenant(ctx, t, sc.total-el); err != nil {
				return fmt.Errorf("tenant %s: %w", t.spec.Name, err)
			}
		}
	}
	return nil
}

// env is a tenant's environment: the simulated driver, and libvgpu preloaded
// on the tenant's slice; nothing of the caller's that would change either.
func (sc *simCell) env(t *tenantState) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || k == "CUDA_VISIBLE_DEVICES" ||
			strings.HasPrefix(k, "VGPU_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "LD_LIBRARY_PATH="+sc.r.paths.SimLibDir, "VGPU_SIM_STATE="+sc.node,
		"LD_PRELOAD="+sc.r.paths.LibVGPU, "VGPU_SLICE_DIR="+t.dir, "VGPU_FAIL_MODE=refuse")
}

// startTenant starts a tenant's processes to run for remaining (plus a second,
// so that none ends inside the window) and waits until each is READY: its
// pid is then known and its busy time can be told apart.
func (sc *simCell) startTenant(ctx context.Context, t *tenantState, remaining time.Duration) error {
	for k := 0; k < t.spec.Processes; k++ {
		args := sc.r.workloadArgs(t.spec.Workload, remaining.Seconds()+1)
		args = append(args, "--seed", strconv.Itoa(k+1))
		p, err := sc.r.start(ctx, sc.env(t), args)
		if err != nil {
			return err
		}
		t.procs = append(t.procs, p)
	}
	for _, p := range t.procs {
		select {
		case err := <-p.ready:
			if err != nil {
				return err
			}
		case <-time.After(30 * time.Second):
			return errors.New("throttle_load: no READY within 30s")
		case <-ctx.Done():
			return ctx.Err()
		}
		t.pids[p.cmd.Process.Pid] = true
	}
	return nil
}
