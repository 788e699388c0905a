package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// order returns the bare/libvgpu order of round i: ABBA, so a machine that slowly
// speeds up or slows down biases neither side.
func order(i int) []bool {
	if i%2 == 0 {
		return []bool{false, true}
	}
	return []bool{true, false}
}

// calls runs every op × thread count, Rounds times bare and with libvgpu.
func (r *overheadRun) calls(ctx context.Context, report *OverheadReport) error {
	type key struct {
		op      string
		threads int
	}
	type acc struct {
		bare, vgpu  []float64
		roundAdded  []float64
		roundMedian [2]float64
	}
	accs := map[key]*acc{}
	for round := 0; round < r.opts.Rounds; round++ {
		for _, op := range r.opts.Ops {
			for _, threads := range r.opts.Threads {
				k := key{op, threads}
				a := accs[k]
				if a == nil {
					a = &acc{}
					accs[k] = a
				}
				for _, vgpu := range order(round) {
					samples, err := r.callsOnce(ctx, op, threads, vgpu)
					if err != nil {
						return err
					}
					med := Median(samples)
					fmt.Fprintf(r.log, "bench: round %d/%d %-7s threads=%d %-7s median %8.1f ns/call\n",
						round+1, r.opts.Rounds, op, threads, modeName(vgpu), med)
					if vgpu {
						a.vgpu = append(a.vgpu, samples...)
						a.roundMedian[1] = med
					} else {
						a.bare = append(a.bare, samples...)
						a.roundMedian[0] = med
					}
				}
				a.roundAdded = append(a.roundAdded, a.roundMedian[1]-a.roundMedian[0])
			}
		}
	}
	for _, op := range r.opts.Ops {
		for _, threads := range r.opts.Threads {
			a := accs[key{op, threads}]
			row := CallRow{Op: op, Threads: threads, Bare: Summarize(a.bare), VGPU: Summarize(a.vgpu),
				RoundAddedNS: a.roundAdded}
			row.AddedMedianNS = row.VGPU.Median - row.Bare.Median
			row.AddedP99NS = row.VGPU.P99 - row.Bare.P99
			report.Calls = append(report.Calls, row)
		}
	}
	return nil
}

func (r *overheadRun) callsOnce(ctx context.Context, op string, threads int, vgpu bool) ([]float64, error) {
	args := []string{"calls", "--op", op, "--threads", strconv.Itoa(threads),
		"--iters", strconv.Itoa(r.opts.Iters), "--batch", strconv.Itoa(r.opts.Batch),
		"--warmup", strconv.Itoa(r.opts.Warmup), "--device", strconv.Itoa(r.opts.Device)}
	if r.opts.Pin {
		args = append(args, "--pin")
	}
	if vgpu {
		args = append(args, "--expect-libvgpu")
	}
	out, err := r.exec(ctx, vgpu, args...)
	if err != nil {
		return nil, err
	}
	res, err := ParseCalls(out)
	if err != nil {
		return nil, fmt.Errorf("bench_overhead calls --op %s (%s): %w", op, modeName(vgpu), err)
	}
	if res.LibVGPU != vgpu {
		return nil, fmt.Errorf("bench_overhead calls --op %s (%s): libvgpu loaded = %v: "+
			"is it in /etc/ld.so.preload?", op, modeName(vgpu), res.LibVGPU)
	}
	if err := r.reclaim(); err != nil {
		return nil, err
	}
	return res.NsPerCall, nil
}

// inits runs the init benchmark for every process count.
func (r *overheadRun) inits(ctx context.Context, report *OverheadReport) error {
	for _, procs := range r.opts.InitProcs {
		var bare, vgpu, bareLoad, vgpuLoad, roundAdded []float64
		maxLate := 0.0
		overran := 0
		for round := 0; round < r.opts.InitRounds; round++ {
			var med [2]float64
			for _, withLib := range order(round) {
				res, late, err := r.initOnce(ctx, procs, withLib)
				if err != nil {
					return err
				}
				if late {
					overran++
				}
				var ms, load []float64
				for _, p := range res {
					ms = append(ms, float64(p.InitNS)/1e6)
					if p.LoadNS >= 0 {
						load = append(load, float64(p.LoadNS)/1e6)
					}
					if late := float64(p.LateNS) / 1e6; late > maxLate {
						maxLate = late
					}
				}
				s := Summarize(ms)
				fmt.Fprintf(r.log, "bench: round %d/%d init procs=%-3d %-7s median %.3f ms max %.3f ms\n",
					round+1, r.opts.InitRounds, procs, modeName(withLib), s.Median, s.Max)
				if withLib {
					vgpu, vgpuLoad = append(vgpu, ms...), append(vgpuLoad, load...)
					med[1] = s.Median
				} else {
					bare, bareLoad = append(bare, ms...), append(bareLoad, load...)
					med[0] = s.Median
				}
			}
			roundAdded = append(roundAdded, med[1]-med[0])
		}
		row := InitRow{Procs: procs, Bare: Summarize(bare), VGPU: Summarize(vgpu),
			BareLoad: Summarize(bareLoad), VGPULoad: Summarize(vgpuLoad), MaxLateMS: maxLate,
			RoundAddedMedMS: roundAdded}
		row.AddedMedianMS = row.VGPU.Median - row.Bare.Median
		row.AddedMaxMS = row.VGPU.Max - row.Bare.Max
		row.AddedLoadMedMS = row.VGPULoad.Median - row.BareLoad.Median
		if overran > 0 {
			report.Notes = append(report.Notes, fmt.Sprintf(
				"init with %d processes: in %d run(s) spawning them took longer than the head start, "+
					"so they did not all start at once", procs, overran))
		}
		report.Init = append(report.Init, row)
	}
	return nil
}

// monotonicNS reads CLOCK_MONOTONIC, the clock bench_overhead sleeps on.
func monotonicNS() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime: %w", err)
	}
	return ts.Nano(), nil
}

// initOnce starts procs processes that all begin their CUDA init at one common
// CLOCK_MONOTONIC instant, and returns each one's figures. overran is true when
// spawning them took longer than the head start they were given. (A process that
// wakes late because all of them wake at once on few cores is expected: that
// contention is part of what the benchmark measures.)
func (r *overheadRun) initOnce(ctx context.Context, procs int, vgpu bool) (res []InitResult, overran bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	now, err := monotonicNS()
	if err != nil {
		return nil, false, err
	}
	// Leave time to spawn every process (and for each to load) before the start.
	startAt := now + int64(50*time.Millisecond) + int64(procs)*int64(5*time.Millisecond)
	args := []string{"init", "--start-at", strconv.FormatInt(startAt, 10), "--device", strconv.Itoa(r.opts.Device)}
	if vgpu {
		args = append(args, "--expect-libvgpu")
	}
	base := r.environ(vgpu)
	type proc struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
	}
	ps := make([]*proc, procs)
	var startErr error
	for i := range ps {
		p := &proc{cmd: exec.CommandContext(ctx, r.paths.Prog, args...)}
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		spawn, err := monotonicNS()
		if err != nil {
			startErr = err
			break
		}
		p.cmd.Env = append(append([]string(nil), base...), "VGPU_BENCH_SPAWN_NS="+strconv.FormatInt(spawn, 10))
		if err := p.cmd.Start(); err != nil {
			startErr = fmt.Errorf("starting %s: %w", r.paths.Prog, err)
			break
		}
		ps[i] = p
	}
	var errs []error
	if startErr != nil {
		errs = append(errs, startErr)
		cancel() // the ones already started must not wait for the others
	} else if spawned, err := monotonicNS(); err == nil && spawned > startAt {
		overran = true
	}
	for i, p := range ps {
		if p == nil {
			continue
		}
		if err := p.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("init process %d/%d (%s): %w: %s", i+1, procs, modeName(vgpu),
				err, strings.TrimSpace(p.stderr.String())))
			continue
		}
		ir, err := ParseInit(p.stdout.Bytes())
		if err != nil {
			errs = append(errs, fmt.Errorf("init process %d/%d (%s): %w", i+1, procs, modeName(vgpu), err))
			continue
		}
		if ir.LibVGPU != vgpu {
			errs = append(errs, fmt.Errorf("init process %d/%d (%s): libvgpu loaded = %v", i+1, procs,
				modeName(vgpu), ir.LibVGPU))
			continue
		}
		res = append(res, *ir)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, false, err
	}
	if err := r.reclaim(); err != nil {
		return nil, false, err
	}
	return res, overran, nil
}
