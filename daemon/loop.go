package daemon

import (
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/enforcer"
)

// runLoop drives the enforcer every EnforcerInterval until Shutdown. A tick
// that runs long delays the next one (time.Ticker drops ticks) rather than
// queueing them.
func (s *Server) runLoop() {
	defer close(s.loopDone)
	t := time.NewTicker(time.Duration(s.cfg.EnforcerInterval))
	defer t.Stop()
	s.tick() // right away: a restart returns dead processes' charges at once
	for {
		select {
		case <-s.stopLoop:
			s.closeReleased()
			return
		case <-t.C:
			s.tick()
		}
	}
}

// closeReleased unmaps the regions of slices released since the last tick.
func (s *Server) closeReleased() {
	s.mu.Lock()
	closing := s.closing
	s.closing = nil
	s.mu.Unlock()
	for _, e := range closing {
		e.close()
	}
}

// tick is one round of the enforcer: release slices whose owner died, then
// let the enforcer loop reclaim dead processes' charges, map pids, read the
// driver and run the backstop over every enforced slice.
func (s *Server) tick() {
	s.closeReleased()
	s.refreshView()

	// Owners: one poll(2) over every owner's pidfd.
	s.deadBuf = s.poller.dead(s.watches, s.deadBuf[:0])
	if len(s.deadBuf) > 0 {
		for _, i := range s.deadBuf {
			e := s.view[i]
			id := e.rec.Slice.ID
			if err := s.release(id, "owner "+ownerDesc(e.rec.Slice.Owner)+" exited"); err != nil {
				s.log.Error("release slice of a dead owner", zap.String("slice", id), zap.Error(err))
			}
		}
		s.closeReleased()
		s.refreshView()
	}

	s.attr.newTick()
	rep := s.loop.Tick(s.tracked)
	s.compute.step(time.Now(), s.tracked, &rep)
	st := &tickState{at: time.Now().UTC(), report: rep}
	if len(rep.Errors) > 0 {
		msgs := make([]string, 0, len(rep.Errors))
		for _, te := range rep.Errors {
			msgs = append(msgs, te.Slice+": "+te.Err)
		}
		st.err = strings.Join(msgs, "; ")
	}
	s.latest.Store(st)
	s.metrics.ObserveTick(&st.report)
}

// refreshView rebuilds the loop's list of tracked slices when the set of
// slices changed since the last tick; otherwise it costs one lock.
func (s *Server) refreshView() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.viewOK && s.version == s.viewVer {
		return
	}
	s.viewOK, s.viewVer = true, s.version
	s.view = s.view[:0]
	for _, e := range s.slices {
		if e.placed && e.region != nil {
			s.view = append(s.view, e)
		}
	}
	s.tracked = s.tracked[:0]
	s.watches = s.watches[:0]
	s.attr.reset()
	s.cgroups.Reset()
	for _, e := range s.view {
		s.tracked = append(s.tracked, enforcer.TrackedSlice{ID: e.rec.Slice.ID, Slice: e.region, UUIDs: e.uuids})
		s.watches = append(s.watches, e.owner)
		switch o := e.rec.Slice.Owner; o.Kind {
		case api.OwnerPID:
			s.attr.setOwner(o.PID, e.rec.Slice.ID)
		case api.OwnerContainer:
			s.cgroups.Set(o.ContainerID, e.rec.Slice.ID)
		}
	}
}
