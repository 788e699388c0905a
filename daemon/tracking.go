package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

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

// containerHolders counts, per container id, the live processes holding a
// tracked device (nil without a tracker).
func (ts *trackerState) containerHolders() map[string]int {
	if ts == nil {
		return nil
	}
	out := map[string]int{}
	for _, p := range ts.t.Processes() {
		if p.ContainerID != "" {
			out[p.ContainerID]++
		}
	}
	return out
}

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
