package bench

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// idleProcs are the CPU part's sleeping processes: the first holders hold
// the stand-in node open (sh opens it, then execs sleep keeping the fd).
type idleProcs struct{ cmds []*exec.Cmd }

func startIdleProcs(node string, n, holders int) (*idleProcs, error) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, fmt.Errorf("no sleep program: %w", err)
	}
	shell, err := exec.LookPath("sh")
	if err != nil {
		return nil, fmt.Errorf("no sh: %w", err)
	}
	p := &idleProcs{}
	for i := 0; i < n; i++ {
		cmd := exec.Command(sleep, "86400")
		if i < holders {
			cmd = exec.Command(shell, "-c", `exec 3<"$1" && exec "$2" 86400`, "sh", node, sleep)
		}
		if err := cmd.Start(); err != nil {
			p.stop()
			return nil, fmt.Errorf("starting process %d of %d: %w", i+1, n, err)
		}
		p.cmds = append(p.cmds, cmd)
	}
	return p, nil
}

// holderPIDs are the pids of the processes that hold the node.
func (p *idleProcs) holderPIDs(holders int) map[int]bool {
	pids := make(map[int]bool, holders)
	for _, c := range p.cmds[:holders] {
		pids[c.Process.Pid] = true
	}
	return pids
}

func (p *idleProcs) stop() {
	for _, c := range p.cmds {
		_ = c.Process.Kill()
	}
	for _, c := range p.cmds {
		_ = c.Wait()
	}
	p.cmds = nil
}

// churner is a shell loop that starts a process opening the node (which
// then exits) about rate times a second; it prints one byte per process.
type churner struct {
	cmd *exec.Cmd
	n   atomic.Int64
}

const churnScript = `while :; do sh -c 'exec 3<"$1"' sh "$1"; printf x; sleep "$2"; done`

func startChurn(node string, rate int) (*churner, error) {
	period := strconv.FormatFloat(1/float64(rate), 'f', 4, 64)
	c := &churner{cmd: exec.Command("sh", "-c", churnScript, "sh", node, period)}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("churn pipe: %w", err)
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the churn loop: %w", err)
	}
	go func() {
		buf := make([]byte, 256)
		for {
			k, err := out.Read(buf)
			c.n.Add(int64(k))
			if err != nil {
				return
			}
		}
	}()
	return c, nil
}

func (c *churner) count() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

func (c *churner) stop() {
	_ = unix.Kill(-c.cmd.Process.Pid, unix.SIGKILL)
	_ = c.cmd.Wait()
}

// processCPU is this process's user+system CPU time.
func processCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// cpu measures the tracker's CPU with Procs processes alive, idle and with
// churn: per load a window without a tracker (the baseline), then one per kind.
func (e *benchEnv) cpu(ctx context.Context, withEBPF bool) ([]TrackerCPURow, error) {
	o := e.opts
	fmt.Fprintf(e.log, "bench: starting %d processes (%d holding the device)\n", o.Procs, o.Holders)
	procs, err := startIdleProcs(e.node, o.Procs, o.Holders)
	if err != nil {
		return nil, err
	}
	defer procs.stop()
	if err := sleepCtx(ctx, time.Second); err != nil { // the holders' sh execs sleep
		return nil, err
	}
	kinds := []string{trackerProcfs}
	if withEBPF {
		kinds = []string{trackerEBPF, trackerProcfs}
	}
	var rows []TrackerCPURow
	for _, load := range []string{"idle", "churn"} {
		if load == "churn" && o.ChurnPerSec == 0 {
			continue
		}
		var churn *churner
		if load == "churn" {
			if churn, err = startChurn(e.node, o.ChurnPerSec); err != nil {
				return nil, err
			}
		}
		loadRows, err := e.cpuLoad(ctx, load, kinds, churn, procs.holderPIDs(o.Holders))
		if churn != nil {
			churn.stop()
		}
		if err != nil {
			return nil, err
		}
		rows = append(rows, loadRows...)
	}
	return rows, nil
}

func (e *benchEnv) cpuLoad(ctx context.Context, load string, kinds []string, churn *churner, holders map[int]bool) ([]TrackerCPURow, error) {
	base, err := e.cpuWindow(ctx, "", load, churn, holders)
	if err != nil {
		return nil, err
	}
	var rows []TrackerCPURow
	for _, kind := range kinds {
		row, err := e.cpuWindow(ctx, kind, load, churn, holders)
		if err != nil {
			return nil, err
		}
		row.BaselineMS = base.CPUMS
		row.CPUMS -= base.CPUMS
		row.Percent = row.CPUMS / (row.WindowS * 1000) * 100
		rows = append(rows, row)
	}
	return rows, nil
}

// cpuWindow measures one window with a fresh tracker of kind ("" = none).
// Known counts the holders the tracker lists, not the churn's short-lived
// openers, one of which may be alive when the window ends.
func (e *benchEnv) cpuWindow(ctx context.Context, kind, load string, churn *churner, holders map[int]bool) (TrackerCPURow, error) {
	name := kind
	if name == "" {
		name = "no tracker"
	}
	fmt.Fprintf(e.log, "bench: cpu, %s, %s, %s window\n", load, name, e.opts.CPUWindow)
	row := TrackerCPURow{Tracker: kind, Load: load}
	var stop func()
	var rec *recorder
	var lost func() uint64
	var known func() int
	if kind != "" {
		tr, err := e.newTracker(ctx, kind == trackerProcfs)
		if err != nil {
			return row, err
		}
		defer tr.Close()
		if tr.Kind() != kind {
			return row, fmt.Errorf("asked for the %s tracker, got %s", kind, tr.Kind())
		}
		rec, stop = newRecorder(tr, e.dev)
		defer stop()
		lost = tr.Lost
		known = func() int {
			n := 0
			for _, p := range tr.Processes() {
				if holders[p.PID] {
					n++
				}
			}
			return n
		}
	}
	// Start-up (the seed scan, its garbage) is not the steady cost.
	if err := sleepCtx(ctx, min(time.Second, e.opts.CPUWindow)); err != nil {
		return row, err
	}
	runtime.GC()
	cpu0, err := processCPU()
	if err != nil {
		return row, err
	}
	ev0, ch0, t0 := 0, churn.count(), time.Now()
	if rec != nil {
		ev0 = rec.count()
	}
	if err := sleepCtx(ctx, e.opts.CPUWindow); err != nil {
		return row, err
	}
	cpu1, err := processCPU()
	if err != nil {
		return row, err
	}
	wall := time.Since(t0)
	row.WindowS = wall.Seconds()
	row.CPUMS = float64(cpu1-cpu0) / 1e6
	row.ChurnPerSec = float64(churn.count()-ch0) / wall.Seconds()
	if rec != nil {
		row.Events = rec.count() - ev0
		row.Lost = lost()
		row.Known = known()
	}
	return row, nil
}
