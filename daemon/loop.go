package daemon

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/containers"
	"github.com/vgpu-project/vgpu/enforcer"
)

// enforcerLoop is the enforcer loop's goroutine (run) and the state it owns.
//
// Locking, field by field:
//   - the fields under "loop goroutine only" are read and written by run and
//     what it calls (tick, refreshView, closeReleased), and by nobody else
//     once New has built them, so they take no lock;
//   - closing is shared with the API: release appends to it and closeAll
//     drains it, both under Server.mu; the loop drains it under Server.mu too;
//   - latest and compute's status are written by the loop and published
//     atomically, for the API and the metrics to read from any goroutine;
//   - stop and done are the loop's start/stop handshake with Shutdown;
//   - budgetMu is held by the loop while the controller writes token rates
//     and while it unmaps released regions, and by an update while it writes a
//     budget (update.go): a budget's seqlock takes one writer at a time, and a
//     region must not be unmapped under a write. Taken before Server.mu.
//
// The loop reads the set of slices (Server.slices, Server.version) under
// Server.mu only, and the mapped regions without it: it is their only reader,
// and their only closer once the loop runs (see closing), so a region is never
// unmapped under a tick that reads it.
type enforcerLoop struct {
	srv *Server
	enf *enforcer.Loop // reclaim, pid map, driver figures, backstop

	// Shared with other goroutines (see above).
	latest   atomic.Pointer[tickState] // the last tick's report (top, health)
	compute  *computeShares            // token rates from achieved shares (compute.go); Status from anywhere
	activity *activityTracker          // empty / idle slices, idle release (activity.go); Status from anywhere
	bell     *doorbell                 // elastic requests ring the loop (elastic_bell.go)
	closing  []*sliceEntry             // released, regions still mapped; guarded by Server.mu
	budgetMu sync.Mutex                // budget writes and unmapping (see above)
	wake     chan struct{}             // a tick now (a tracked process exited); buffered 1
	// elasticWake: an elastic step now (the doorbell rang); buffered 1.
	elasticWake chan struct{}
	stop        chan struct{} // closed by Shutdown: run returns
	done        chan struct{} // closed by run when it has returned

	// Loop goroutine only.
	attr    *ancestry                    // a process to the slice its ancestor owns
	cgroups *containers.CgroupAttributor // a process to its container's slice
	poller  ownerPoller                  // one poll(2) over the owners' pidfds
	view    []*sliceEntry                // the slices the loop tracks, in a stable order
	tracked []enforcer.TrackedSlice      // view, as the enforcer takes it
	watches []*ownerWatch                // view's owners (nil: none), as the poller takes them
	viewVer uint64                       // Server.version that view was built at
	viewOK  bool                         // view was built at all
	deadBuf []int                        // scratch: indexes in view of dead owners
	elastic *elasticBroker               // elastic memory grants (elastic.go)
	regions regionWatch                  // region files changed behind vgpud's back (regionwatch.go)
}

// tickState is what the last tick left for the API.
type tickState struct {
	at     time.Time
	report enforcer.TickReport
	err    string
}

// newEnforcerLoop builds the loop for s (it does not run yet: Start runs it).
func newEnforcerLoop(s *Server, o options) (*enforcerLoop, error) {
	mode, err := enforcer.ParseMode(s.cfg.EnforcerMode)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	l := &enforcerLoop{
		srv:     s,
		attr:    newAncestry(o.procRoot),
		cgroups: containers.NewCgroupAttributor(o.procRoot),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.enf = &enforcer.Loop{
		Mode:       mode,
		Mapper:     trackedMapper{tracker: func() *trackerState { return s.tracker }, procfs: enforcer.NewProcfsMapper(o.procRoot)},
		Driver:     driverProcesses{s.gpus},
		Attributor: attributors{l.attr, l.cgroups},
		Kill:       o.kill,
		Log:        s.log.Named("enforcer"),
		Tolerance:  uint64(s.cfg.BackstopTolerance),
	}
	l.cgroups.Known = func(pid int) (string, bool) { return s.tracker.cgroupOf(pid) }
	l.compute = newComputeShares(s.gpus, s.log.Named("compute"))
	l.compute.guard = newComputeGuard(s.log.Named("enforcer"), mode)
	l.activity = newActivityTracker(s.log.Named("activity"))
	l.elastic = newElasticBroker(s.log.Named("elastic"))
	l.elasticWake = make(chan struct{}, 1)
	l.bell = newDoorbell(l.ringElastic)
	return l, nil
}

// run drives the enforcer every EnforcerInterval until Shutdown closes stop.
// A tick that runs long delays the next one (time.Ticker drops ticks) rather
// than queueing them.
func (l *enforcerLoop) run() {
	defer close(l.done)
	t := time.NewTicker(time.Duration(l.srv.cfg.EnforcerInterval))
	defer t.Stop()
	defer l.elastic.persisting.Wait() // grants' records written before vgpud stops
	go l.bell.run()
	defer l.bell.close()
	l.tick() // right away: a restart returns dead processes' charges at once
	for {
		select {
		case <-l.stop:
			l.compute.guard.close() // no process stays stopped after vgpud
			l.closeReleased()
			return
		case <-t.C:
			l.tick()
		case <-l.wake:
			l.tick()
		case <-l.elasticWake:
			l.elasticOnly()
		}
	}
}

// ringElastic asks for an elastic step now (the doorbell, any goroutine);
// rings while one is pending merge into it.
func (l *enforcerLoop) ringElastic() {
	select {
	case l.elasticWake <- struct{}{}:
	default:
	}
}

// elasticOnly answers elastic requests without a whole tick: from the last
// tick's picture of the slices (their use at most one interval old; the
// driver's figure of each device is read afresh), so a request waits for no
// NVML process scan, controller or backstop. A slice the last tick did not
// see (just created) needs a whole tick.
func (l *enforcerLoop) elasticOnly() {
	l.closeReleased()
	l.refreshView()
	st := l.latest.Load()
	if st == nil {
		l.tick()
		return
	}
	seen := make(map[string]bool, len(st.report.Slices))
	for i := range st.report.Slices {
		seen[st.report.Slices[i].ID] = true
	}
	for _, e := range l.view {
		if !seen[e.rec.Slice.ID] {
			l.tick()
			return
		}
	}
	l.stepElastic(time.Now(), &st.report, false)
}

// wakeUp asks for a tick now (from any goroutine); wakes while one is
// pending merge into it.
func (l *enforcerLoop) wakeUp() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// closeReleased unmaps the regions of slices released since the last tick.
func (l *enforcerLoop) closeReleased() {
	l.budgetMu.Lock()
	defer l.budgetMu.Unlock()
	l.srv.mu.Lock()
	closing := l.closing
	l.closing = nil
	l.srv.mu.Unlock()
	for _, e := range closing {
		e.close()
	}
}

// tick is one round of the enforcer: release slices whose owner died, then
// let the enforcer loop reclaim dead processes' charges, map pids, read the
// driver and run the backstop over every enforced slice.
func (l *enforcerLoop) tick() {
	l.closeReleased()
	l.refreshView()
	l.releaseDeadOwners()
	l.regions.check(l.srv, l.view)

	l.attr.newTick()
	for i := range l.tracked {
		l.tracked[i].Allowance = l.elastic.allowanceOf(l.tracked[i].ID)
	}
	rep := l.enf.Tick(l.tracked)
	l.budgetMu.Lock()
	l.compute.step(time.Now(), l.tracked, &rep)
	l.budgetMu.Unlock()
	l.releaseEmpty(l.activity.step(time.Now(), l.view, &rep, l.srv.computeByDevice(), l.srv.tracker.sliceHolders(l.cgroups)))
	l.stepElastic(time.Now(), &rep, true)
	st := &tickState{at: time.Now().UTC(), report: rep}
	if len(rep.Errors) > 0 {
		msgs := make([]string, 0, len(rep.Errors))
		for _, te := range rep.Errors {
			msgs = append(msgs, te.Slice+": "+te.Err)
		}
		st.err = strings.Join(msgs, "; ")
	}
	l.latest.Store(st)
	l.srv.metrics.ObserveTick(&st.report)
}

// releaseDeadOwners releases the slices whose owner process exited (one
// poll(2) over every owner's pidfd), then rebuilds the view without them so
// that the enforcer never sees a released slice's region.
func (l *enforcerLoop) releaseDeadOwners() {
	l.deadBuf = l.poller.dead(l.watches, l.deadBuf[:0])
	if len(l.deadBuf) == 0 {
		return
	}
	for _, i := range l.deadBuf {
		e := l.view[i]
		id := e.rec.Slice.ID
		if err := l.srv.release(id, "owner "+ownerDesc(e.rec.Slice.Owner)+" exited"); err != nil {
			l.srv.log.Error("release slice of a dead owner", zap.String("slice", id), zap.Error(err))
		}
	}
	l.closeReleased()
	l.refreshView()
}

// releaseEmpty releases the slices the activity tracker found empty for their
// idle release (their regions are unmapped at the next tick).
func (l *enforcerLoop) releaseEmpty(ids []string) {
	for _, id := range ids {
		a := l.activity.Status()[id]
		why := fmt.Sprintf("empty for %v, its idle release %v", time.Since(a.Since).Round(time.Millisecond),
			a.ReleaseAt.Sub(a.Since))
		if err := l.srv.release(id, why); err != nil {
			l.srv.log.Error("release an empty slice", zap.String("slice", id), zap.Error(err))
		}
	}
}

// refreshView rebuilds the loop's list of tracked slices when the set of
// slices changed since the last tick; otherwise it costs one lock.
func (l *enforcerLoop) refreshView() {
	s := l.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.viewOK && s.version == l.viewVer {
		return
	}
	l.viewOK, l.viewVer = true, s.version
	l.view = l.view[:0]
	for _, e := range s.slices {
		if e.placed && e.region != nil {
			l.view = append(l.view, e)
		}
	}
	l.tracked = l.tracked[:0]
	l.watches = l.watches[:0]
	l.attr.reset()
	l.cgroups.Reset()
	for _, e := range l.view {
		l.tracked = append(l.tracked, enforcer.TrackedSlice{ID: e.rec.Slice.ID, Slice: e.region, UUIDs: e.uuids})
		l.watches = append(l.watches, e.owner)
		switch o := e.rec.Slice.Owner; o.Kind {
		case api.OwnerPID:
			l.attr.setOwner(o.PID, e.rec.Slice.ID)
		case api.OwnerContainer:
			l.cgroups.Set(o.ContainerID, e.rec.Slice.ID)
		case api.OwnerClaim:
			for _, pod := range o.PodUIDs {
				l.cgroups.SetPod(pod, e.rec.Slice.ID)
			}
		}
	}
}

// driverProcesses hands the enforcer loop the driver's per-process memory in
// the loop's own type (the loop knows nothing of NVML).
type driverProcesses struct{ gpus GPUs }

func (d driverProcesses) Processes(uuid string) ([]enforcer.DriverProcess, error) {
	ps, err := d.gpus.Processes(uuid)
	if err != nil {
		return nil, err
	}
	out := make([]enforcer.DriverProcess, len(ps))
	for i, p := range ps {
		out[i] = enforcer.DriverProcess(p)
	}
	return out, nil
}
