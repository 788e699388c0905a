package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// sleepers starts n distinct sleeping processes (the live owners of the
// benchmark's slots) and returns them with a function that ends them.
func sleepers(ctx context.Context, n int) ([]*exec.Cmd, func(), error) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, func() {}, fmt.Errorf("live processes: %w", err)
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
	}
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			stop()
			return nil, func() {}, err
		}
		c := exec.Command(sleep, "3600")
		if err := c.Start(); err != nil {
			stop()
			return nil, func() {}, fmt.Errorf("starting live process %d/%d: %w", i+1, n, err)
		}
		cmds = append(cmds, c)
	}
	return cmds, stop, nil
}

// listDriver is a DriverProcesses that reports a fixed list per device: each
// live process with exactly its charge, so the backstop matches every process
// and finds no violation.
type listDriver map[string][]enforcer.DriverProcess

func (d listDriver) Processes(uuid string) ([]enforcer.DriverProcess, error) { return d[uuid], nil }

func cpuClock(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// runTickBench measures enforcer.Loop.Tick over opts.Slices slices.
func runTickBench(ctx context.Context, opts DaemonOptions, dir string, log io.Writer) (*TickResult, error) {
	nprocs := opts.Slices * opts.ProcsPerSlice
	fmt.Fprintf(log, "bench: tick: starting %d live processes\n", nprocs)
	procs, stop, err := sleepers(ctx, nprocs)
	defer stop()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "bench: tick: creating %d slices in %s\n", opts.Slices, dir)
	tracked, driver, err := tickSlices(opts, dir, procs)
	defer func() {
		for _, ts := range tracked {
			_ = ts.Slice.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	l := &enforcer.Loop{Mode: enforcer.ModeReport, Mapper: enforcer.NewProcfsMapper(""), Driver: driver}
	defer l.Close()
	res := &TickResult{Slices: opts.Slices, LiveProcesses: nprocs}
	if err := timeTicks(ctx, opts, l, tracked, res, log); err != nil {
		return nil, err
	}
	return res, nil
}

// tickSlices creates the benchmark's slices, alternating over two GPUs, and
// claims ProcsPerSlice slots in each for live processes, each charged 1 MiB;
// the driver it returns lists exactly those processes with that charge, so
// the backstop finds every process where the slots say and nothing to do.
// On error the slices made so far are returned too, to be closed.
func tickSlices(opts DaemonOptions, dir string, procs []*exec.Cmd) ([]enforcer.TrackedSlice, listDriver, error) {
	uuids := []string{"GPU-00000000-0000-4000-8000-00000000000a", "GPU-00000000-0000-4000-8000-00000000000b"}
	driver := listDriver{}
	const charge = 1 << 20
	tracked := make([]enforcer.TrackedSlice, 0, opts.Slices)
	for i := 0; i < opts.Slices; i++ {
		id := fmt.Sprintf("bench-%05d", i)
		uuid := uuids[i%len(uuids)]
		sdir := filepath.Join(dir, id)
		if err := shm.CreateSlice(sdir, shm.SliceSpec{ID: id, Slots: opts.SlotsPerSlice,
			Devices: []shm.DeviceBudget{{UUID: uuid, MemoryLimit: 1 << 30, ComputeShareBP: shm.MaxShareBP}}}); err != nil {
			return tracked, nil, fmt.Errorf("creating slice %s: %w", id, err)
		}
		sl, err := shm.OpenSlice(sdir)
		if err != nil {
			return tracked, nil, fmt.Errorf("opening slice %s: %w", id, err)
		}
		tracked = append(tracked, enforcer.TrackedSlice{ID: id, Slice: sl, UUIDs: []string{uuid}})
		for k := 0; k < opts.ProcsPerSlice; k++ {
			p := procs[i*opts.ProcsPerSlice+k]
			ident, err := enforcer.ProcessIdentity(p.Process.Pid)
			if err != nil {
				return tracked, nil, fmt.Errorf("live process %d: %w", p.Process.Pid, err)
			}
			slot, err := sl.Usage.ClaimSlot(ident)
			if err != nil {
				return tracked, nil, fmt.Errorf("slice %s: %w", id, err)
			}
			sl.Usage.Charge(slot, 0, charge, 1<<30)
			driver[uuid] = append(driver[uuid], enforcer.DriverProcess{HostPID: p.Process.Pid, UsedBytes: charge})
		}
	}
	return tracked, driver, nil
}

// timeTicks runs the first tick (timed alone: it reads every slot table and
// opens every pidfd), Warmup untimed ones and Ticks timed ones on this locked
// OS thread, so the thread's CPU clock is the tick's own cost; allocations
// are counted over the timed ticks only.
func timeTicks(ctx context.Context, opts DaemonOptions, l *enforcer.Loop, tracked []enforcer.TrackedSlice,
	res *TickResult, log io.Writer) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu, pcpu, wall []float64
	var ms0, ms1 runtime.MemStats
	for i := -1; i < opts.Warmup+opts.Ticks; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i == opts.Warmup {
			runtime.GC()
			runtime.ReadMemStats(&ms0)
		}
		t0, p0, w0 := cpuClock(unix.CLOCK_THREAD_CPUTIME_ID), cpuClock(unix.CLOCK_PROCESS_CPUTIME_ID), time.Now()
		tr := l.Tick(tracked)
		t1, p1, w1 := cpuClock(unix.CLOCK_THREAD_CPUTIME_ID), cpuClock(unix.CLOCK_PROCESS_CPUTIME_ID), time.Now()
		res.Reclaimed += tr.ReclaimedBytes
		res.Errors += len(tr.Errors)
		if len(tr.Errors) > 0 && res.Errors == len(tr.Errors) {
			fmt.Fprintf(log, "bench: tick: error: %s\n", tr.Errors[0])
		}
		switch {
		case i == -1:
			res.FirstCPUMS = float64(t1-t0) / 1e6
			fmt.Fprintf(log, "bench: tick: first tick %.3f ms CPU\n", res.FirstCPUMS)
		case i >= opts.Warmup:
			cpu = append(cpu, float64(t1-t0)/1e6)
			pcpu = append(pcpu, float64(p1-p0)/1e6)
			wall = append(wall, float64(w1.Sub(w0))/1e6)
		}
	}
	runtime.ReadMemStats(&ms1)
	res.AllocsPerTick = float64(ms1.Mallocs-ms0.Mallocs) / float64(opts.Ticks)
	res.BytesPerTick = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(opts.Ticks)
	res.CPU, res.ProcessCPU, res.Wall = Summarize(cpu), Summarize(pcpu), Summarize(wall)
	fmt.Fprintf(log, "bench: tick: %d ticks, CPU median %.3f ms p99 %.3f ms\n", len(cpu), res.CPU.Median, res.CPU.P99)
	return nil
}
