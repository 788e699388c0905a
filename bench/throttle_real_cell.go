package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// calibrationHold is how long the calibration run keeps the GPU busy after
// calibrating, while NVML is asked whether it names the process.
const calibrationHold = 2 * time.Second

// calibrate runs `throttle_real calibrate` bare (no libvgpu, nothing else on the
// GPU): the iterations for a kernel of KernelMs, and its device time alone. It
// then keeps the GPU busy for 2 s while NVML is asked whether it names the
// process.
func (r *realRun) calibrate(ctx context.Context) error {
	// The program's default grid is one block per SM; a grid of more waves needs
	// the SM count, so it is calibrated by a second run once the first said it.
	if err := r.calibrateOnce(ctx, r.ropts.Waves == 1); err != nil {
		return err
	}
	if r.ropts.Waves > 1 {
		if err := r.calibrateOnce(ctx, true, "--grid", strconv.Itoa(r.ropts.Waves*r.cal.SMs)); err != nil {
			return err
		}
	}
	r.cal.KernelMsTarget, r.cal.SyncEvery, r.cal.Nodes = r.ropts.KernelMs, r.ropts.SyncEvery, r.ropts.Nodes
	return nil
}

// calibrateOnce runs the calibration once (extra: more arguments) and records
// its figures in r.cal; holdGPU keeps the program busy afterwards for the NVML
// question (the last run holds it).
func (r *realRun) calibrateOnce(ctx context.Context, holdGPU bool, extra ...string) error {
	a := append([]string{"calibrate", "--kernel-ms", strconv.FormatFloat(r.ropts.KernelMs, 'f', -1, 64),
		"--block", strconv.Itoa(r.ropts.Block)}, extra...)
	if holdGPU {
		a = append(a, "--seconds", strconv.FormatFloat(calibrationHold.Seconds(), 'f', 3, 64))
	}
	calLine := make(chan string, 1)
	p, err := r.startWith(ctx, r.env(""), a, func(l string) {
		if strings.HasPrefix(l, "CALIBRATE ") {
			select {
			case calLine <- l:
			default:
			}
		}
	})
	if err != nil {
		return err
	}
	defer p.stop()
	l, err := awaitCalibration(ctx, p, calLine)
	if err != nil {
		return err
	}
	if err := r.parseCalibration(l); err != nil {
		return err
	}
	r.askNVMLAbout(p)
	select {
	case <-p.done:
	case <-time.After(calibrationHold + 30*time.Second):
		return errors.New("throttle_real calibrate did not finish")
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.cmd.ProcessState == nil || !p.cmd.ProcessState.Success() {
		return fmt.Errorf("throttle_real calibrate failed (%v): %s", p.cmd.ProcessState, strings.TrimSpace(p.errb.String()))
	}
	return nil
}

// awaitCalibration waits for the CALIBRATE line; a program that exits prints
// it before it ends, so the line is looked for once more then.
func awaitCalibration(ctx context.Context, p *tenantProc, calLine chan string) (string, error) {
	select {
	case l := <-calLine:
		return l, nil
	case <-p.done:
		select {
		case l := <-calLine:
			return l, nil
		default:
			return "", fmt.Errorf("throttle_real calibrate exited without calibrating (%v): %s",
				p.cmd.ProcessState, strings.TrimSpace(p.errb.String()))
		}
	case <-time.After(60 * time.Second):
		return "", errors.New("throttle_real calibrate: no result within 60s")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// parseCalibration reads "CALIBRATE iters=.. kernel_ns=.. sms=.. grid=.. block=..".
func (r *realRun) parseCalibration(l string) error {
	f := lineFields(l)
	var err error
	get := func(k string) uint64 {
		v, e := strconv.ParseUint(f[k], 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("calibration line %q: %s: %w", l, k, e)
		}
		return v
	}
	r.cal.Iters, r.cal.KernelNs = get("iters"), get("kernel_ns")
	r.cal.SMs, r.cal.Grid, r.cal.Block = int(get("sms")), int(get("grid")), int(get("block"))
	if err == nil && (r.cal.KernelNs == 0 || r.cal.Iters == 0) {
		err = fmt.Errorf("calibration line %q: zero kernel time or iterations", l)
	}
	return err
}

// askNVMLAbout polls NVML while p holds the GPU (up to calibrationHold):
// whether its per-process samples name p decides where achieved shares can
// come from (NVML reports host pids, so not from inside a pid namespace).
func (r *realRun) askNVMLAbout(p *tenantProc) {
	pid := p.cmd.Process.Pid
	deadline := time.Now().Add(calibrationHold)
	for r.nvml != nil && !r.cal.NVMLSawCalibration && time.Now().Before(deadline) {
		samples, err := r.nvml.ProcessUtilization(r.cal.UUID, 0)
		if err == nil {
			for _, s := range samples {
				if s.HostPID == pid && s.SMPercent > 0 {
					r.cal.NVMLSawCalibration = true
				}
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-p.done:
			deadline = time.Time{}
		}
	}
}

// realCell is one cell on the real GPU while it runs.
type realCell struct {
	r        *realRun
	ts       []*tenantState
	self     [][]*atomic.Uint64 // per tenant, per process: the busy ns it reported
	tracker  *utilTracker
	nvmlBusy []float64 // per tenant, cumulative, from NVML
}

// cell runs one cell: tenants' slices and processes, the controller stepping
// every tick on the measured shares, figures over the window.
func (r *realRun) cell(ctx context.Context, dir string, c cellSpec) (*cellResult, error) {
	rc := &realCell{r: r, self: make([][]*atomic.Uint64, len(c.Tenants))}
	total := c.Warmup + c.Window
	var err error
	rc.ts, err = newTenants(dir, c.Tenants)
	defer func() { closeTenants(rc.ts) }()
	if err != nil {
		return nil, err
	}
	if err := rc.start(ctx, total); err != nil {
		return nil, err
	}
	rc.tracker = &utilTracker{lastUs: uint64(time.Now().UnixMicro()), pidUs: map[int]uint64{}}
	rc.nvmlBusy = make([]float64, len(rc.ts))
	return rc.control(ctx, c, total)
}

// start starts every tenant's processes, each reporting its own busy time
// (BUSY lines, kept in rc.self), and waits until all are READY: their pids
// are then known, for NVML's samples.
func (rc *realCell) start(ctx context.Context, total time.Duration) error {
	r := rc.r
	for i, t := range rc.ts {
		for k := 0; k < t.spec.Processes; k++ {
			busy := &atomic.Uint64{}
			rc.self[i] = append(rc.self[i], busy)
			args := append([]string{t.spec.Workload, strconv.FormatFloat(total.Seconds()+1, 'f', 3, 64),
				"--iters", strconv.FormatUint(r.cal.Iters, 10), "--kernel-ns", strconv.FormatUint(r.cal.KernelNs, 10),
				"--grid", strconv.Itoa(r.cal.Grid)}, r.geometry()...)
			p, err := r.startWith(ctx, r.env(t.dir), args, func(l string) {
				if strings.HasPrefix(l, "BUSY ") {
					if v, err := strconv.ParseUint(lineFields(l)["busy_ns"], 10, 64); err == nil {
						busy.Store(v)
					}
				}
			})
			if err != nil {
				return fmt.Errorf("tenant %s: %w", t.spec.Name, err)
			}
			t.procs = append(t.procs, p)
		}
	}
	for _, t := range rc.ts {
		for _, p := range t.procs {
			select {
			case err := <-p.ready:
				if err != nil {
					return fmt.Errorf("tenant %s: %w", t.spec.Name, err)
				}
			case <-time.After(60 * time.Second):
				return fmt.Errorf("tenant %s: throttle_real: no READY within 60s", t.spec.Name)
			case <-ctx.Done():
				return ctx.Err()
			}
			t.pids[p.cmd.Process.Pid] = true
		}
	}
	return nil
}

// control steps the controller every tick until the window is over. Beside
// the achieved share it reports the programs' own figure (SelfPct).
func (rc *realCell) control(ctx context.Context, c cellSpec, total time.Duration) (*cellResult, error) {
	r := rc.r
	l := newCellLoop(rc.ts, r.opts.Tick, r.opts.Controller)
	var winSelf []uint64
	for step := 1; ; step++ {
		now, el, err := l.await(ctx, step)
		if err != nil {
			return nil, err
		}
		if err := rc.checkRunning(); err != nil {
			return nil, err
		}
		measured := r.cal.Measure == MeasureSelf
		if r.cal.Measure == MeasureNVML {
			if measured, err = rc.measureNVML(); err != nil {
				return nil, err
			}
		}
		l.step(now, rc.busyOf, measured)
		if r.opts.StepLog != nil {
			l.logStep(r.opts.StepLog, c, el, func(i int) string { return fmt.Sprintf(" self_busy_ns=%d", rc.selfBusy(i)) })
		}
		if err := l.apply(); err != nil {
			return nil, err
		}
		if l.openWindow(now, el, c.Warmup) {
			winSelf = make([]uint64, len(rc.ts))
			for i := range rc.ts {
				winSelf[i] = rc.selfBusy(i)
			}
		}
		if l.closeWindow(now, el, total) {
			w := float64(l.res.Window.Nanoseconds())
			for i := range l.res.Tenants {
				l.res.Tenants[i].SelfPct = float64(rc.selfBusy(i)-winSelf[i]) / w * 100
			}
			return l.res, nil
		}
	}
}

// checkRunning fails the cell when a tenant's program has ended: each runs
// past the window, so an early end is a failure and its share would be wrong.
func (rc *realCell) checkRunning() error {
	for _, t := range rc.ts {
		for _, p := range t.procs {
			select {
			case <-p.done:
				return fmt.Errorf("tenant %s: throttle_real exited early (%v): %s", t.spec.Name,
					p.cmd.ProcessState, strings.TrimSpace(p.errb.String()))
			default:
			}
		}
	}
	return nil
}

// selfBusy is tenant i's busy ns by its programs' own reports.
func (rc *realCell) selfBusy(i int) uint64 {
	var s uint64
	for _, b := range rc.self[i] {
		s += b.Load()
	}
	return s
}

// measureNVML adds NVML's samples since the last query to each tenant's busy
// time (as vgpud measures it); false when NVML is not in use.
func (rc *realCell) measureNVML() (bool, error) {
	r := rc.r
	if r.nvml == nil {
		return false, nil
	}
	samples, err := r.nvml.ProcessUtilization(r.cal.UUID, rc.tracker.lastUs)
	if err != nil {
		return false, fmt.Errorf("NVML process utilization: %w", err)
	}
	perPid := map[int]float64{}
	rc.tracker.add(samples, perPid)
	for pid, b := range perPid {
		for i, t := range rc.ts {
			if t.pids[pid] {
				rc.nvmlBusy[i] += b
			}
		}
	}
	return true, nil
}

// busyOf is tenant i's busy ns from the chosen measure.
func (rc *realCell) busyOf(i int) uint64 {
	if rc.r.cal.Measure == MeasureNVML {
		return uint64(rc.nvmlBusy[i])
	}
	return rc.selfBusy(i)
}
