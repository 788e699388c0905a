package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/containers"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/tracker"
)

// The process tracker (package tracker): which host process holds which GPU
// device open, from the kernel (eBPF) or a procfs scan. vgpud uses its events
// so that a process's exit is acted on at once — the enforcer runs a tick
// right away, returning a dead process's charge within milliseconds rather
// than at the next poll — and its process map to know which container's
// processes hold a slice's devices (activity.go).

// trackerState is vgpud's tracker and the goroutine forwarding its events.
type trackerState struct {
	t      tracker.Tracker
	cancel context.CancelFunc
	done   chan struct{}
}

// exitRewakes are the extra ticks after a tracked process's exit event.
var exitRewakes = [...]time.Duration{20 * time.Millisecond, 200 * time.Millisecond}

// startTracker starts the tracker the config asks for (nil: off) and a
// goroutine that wakes the enforcer loop whenever a tracked process exits,
// forks (a fork carries the parent's devices: the child is known at birth) or
// opens a GPU device.
func startTracker(cfg Config, log *zap.Logger, wake func()) (*trackerState, error) {
	if cfg.Tracker == TrackerOff {
		log.Info("process tracker off: dead processes are found by the enforcer's polling")
		return nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	t, err := tracker.New(ctx, tracker.Config{Majors: cfg.TrackerMajors, ForceProcfs: cfg.Tracker == TrackerProcfs,
		Log: log})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("process tracker: %w", err)
	}
	if cfg.Tracker == TrackerEBPF && t.Kind() != TrackerEBPF {
		cancel()
		_ = t.Close()
		return nil, fmt.Errorf("process tracker: tracker is %q but eBPF is unavailable (see the log line above; "+
			"use auto to fall back to the procfs scanner)", TrackerEBPF)
	}
	log.Info("process tracker running", zap.String("kind", t.Kind()), zap.Uint32s("majors", cfg.TrackerMajors))
	ts := &trackerState{t: t, cancel: cancel, done: make(chan struct{})}
	events, unsubscribe := t.Subscribe(256)
	go func() {
		defer close(ts.done)
		defer unsubscribe()
		for ev := range events {
			switch ev.Kind {
			case tracker.EventExit:
				// The exit tracepoint fires early in the kernel's exit path,
				// while /proc still shows the process running: a tick now may
				// judge it alive. Ticks shortly after see it dead (zombie or
				// gone); wakes merge, so a burst of exits costs a few ticks.
				wake()
				for _, d := range exitRewakes {
					time.AfterFunc(d, wake)
				}
			case tracker.EventFork, tracker.EventOpen:
				// A slice whose process opens a device again is active from
				// this tick: what it lent is its own again at once.
				wake()
			}
		}
	}()
	return ts, nil
}

// kind is the running tracker's kind, "off" without one.
func (ts *trackerState) kind() string {
	if ts == nil {
		return TrackerOff
	}
	return ts.t.Kind()
}

// lost is how many tracker events were lost (0 without a tracker).
func (ts *trackerState) lost() uint64 {
	if ts == nil {
		return 0
	}
	return ts.t.Lost()
}

// sliceHolders counts, per slice, the live processes the tracker knows to
// hold a GPU device in the cgroup of the slice's container (nil without a
// tracker). The cgroup path is the kernel's word, recorded when the process
// opened the device (or was forked by one that had).
func (ts *trackerState) sliceHolders(attr *containers.CgroupAttributor) map[string]int {
	if ts == nil {
		return nil
	}
	out := map[string]int{}
	for _, p := range ts.t.Processes() {
		if id, ok := attr.SliceOfPath(p.CgroupPath); ok {
			out[id]++
		}
	}
	return out
}

// cgroupOf is the cgroup path the tracker recorded for host process pid.
func (ts *trackerState) cgroupOf(pid int) (string, bool) {
	if ts == nil {
		return "", false
	}
	p, ok := ts.t.Lookup(pid)
	return p.CgroupPath, ok && p.CgroupPath != ""
}

// trackedMapper maps a slot's process (its pid and pid namespace as it sees
// them, its start time) to its host pid from the tracker's record of the
// process, made by the kernel when it opened a GPU device; a process the
// tracker does not know (it has not opened one yet, or there is no tracker)
// goes to the procfs scanner. It does not declare processes gone from exit
// events: the exit tracepoint fires before the process's files — and so its
// GPU memory — are released, so a charge is returned once the process is
// really gone (its pidfd turns readable), which the re-wakes above make
// prompt.
type trackedMapper struct {
	tracker func() *trackerState
	procfs  *enforcer.ProcfsMapper
}

// Resolve implements enforcer.Resolver.
func (m trackedMapper) Resolve(id shm.SlotIdentity) (int, enforcer.MapResult) {
	if ts := m.tracker(); ts != nil && !id.Claiming && id.PIDNamespace != 0 && id.StartTime != 0 {
		if p, ok := ts.t.FindInNamespace(id.PIDNamespace, id.PID, id.StartTime); ok {
			return p.PID, enforcer.MapFound
		}
	}
	return m.procfs.Resolve(id)
}

// HostPID implements enforcer.PIDMapper.
func (m trackedMapper) HostPID(id shm.SlotIdentity) (int, bool) {
	hp, res := m.Resolve(id)
	return hp, res == enforcer.MapFound
}

// BeginTick implements enforcer.TickAware: the scanner scans at most once a tick.
func (m trackedMapper) BeginTick() { m.procfs.BeginTick() }

// stop closes the tracker: its programs are detached and the forwarding
// goroutine ends.
func (ts *trackerState) stop() error {
	if ts == nil {
		return nil
	}
	ts.cancel()
	err := ts.t.Close()
	<-ts.done
	return err
}
