package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/allocator"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/store"
)

// The slice operations behind the API (and the loop's and the container
// watcher's releases): allocate, release, list, get. They change the set of
// slices under Server.mu; see Server for who touches what.

// errNotFound, errClosing: answered 404 and 503.
var (
	errNotFound = errors.New("no such slice")
	errClosing  = errors.New("vgpud is shutting down")
)

// allocate carves, records and starts tracking a slice. The slice exists
// (and is answered) only once its record is durable on disk: after a crash
// vgpud has exactly the slices it acknowledged.
// A request without an id gets a generated one (the caller may set it first, to
// log refusals under it).
//
// The steps, in this order because each one's undo is cheaper than the next
// one's: check the request (nothing to undo), book it in the allocator
// (undone by the deferred Release until the slice is published), write its
// record (the durable step), publish it to the API and the loop.
func (s *Server) allocate(req api.AllocRequest) (api.Slice, error) {
	if err := s.checkAllocRequest(&req); err != nil {
		return api.Slice{}, err
	}
	devs, err := s.alloc.Allocate(req.ID, req)
	if err != nil {
		return api.Slice{}, err
	}
	booked := true
	defer func() {
		if booked {
			s.alloc.Release(req.ID)
		}
	}()
	if err := s.checkContextOverhead(devs); err != nil {
		return api.Slice{}, err
	}
	e, err := s.recordSlice(req, devs)
	if err != nil {
		return api.Slice{}, err
	}
	// From here on the booking stays, whether or not the slice is published:
	// its record is on disk and will be restored.
	booked = false
	if err := s.publish(e); err != nil {
		return api.Slice{}, err
	}
	s.cdi.publish(e.rec.Slice, func() bool { return s.sliceLive(req.ID) })
	s.log.Info("slice allocated", zap.String("slice", req.ID), zap.String("dir", e.rec.Slice.Dir),
		zap.Any("devices", devs), zap.String("qos", string(req.QoS)),
		zap.String("compute_policy", string(req.ComputePolicy)), zap.String("owner", ownerDesc(req.Owner)))
	return e.rec.Slice, nil
}

// checkAllocRequest completes and checks what a request says before anything
// is booked: its id (generated when missing), its QoS class, its compute
// policy (vgpud's default when none is named), its owner (a pid
// owner's start time filled in), and that the id is free and vgpud is not
// shutting down. These are cheap and need no undo, so they come first.
func (s *Server) checkAllocRequest(req *api.AllocRequest) error {
	if req.ID == "" {
		req.ID = newSliceID()
	}
	// Checked first (the store checks it too) to answer a bad id with a 400
	// that says the rule.
	if !api.ValidSliceID(req.ID) {
		return fmt.Errorf("%w: slice id %q: want %s", allocator.ErrInvalidRequest, req.ID, api.SliceIDRule)
	}
	req.QoS = req.QoS.Normalized()
	if req.ComputePolicy == "" {
		req.ComputePolicy = s.cfg.ComputePolicy // compute_policy; a bad name: the allocator's 400
	}
	if err := resolveOwner(&req.Owner); err != nil {
		return fmt.Errorf("%w: %w", allocator.ErrInvalidRequest, err)
	}

	s.mu.Lock()
	_, exists := s.slices[req.ID]
	quarantined := s.quarantinedID(req.ID)
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errClosing
	}
	if exists {
		// Also covers records the allocator could not restore (not booked).
		return fmt.Errorf("slice %s: %w", req.ID, allocator.ErrExists)
	}
	if quarantined {
		// Its id is held with what it holds until an operator resolves it.
		return fmt.Errorf("slice %s: %w: it is quarantined (vgpuctl quarantine list)", req.ID, allocator.ErrExists)
	}
	return nil
}

// checkContextOverhead refuses a placement that leaves a device's budget no
// room beyond the memory charged per CUDA context: such a slice could not
// allocate anything. It needs the placement (a percentage becomes bytes only
// there), hence after the booking.
func (s *Server) checkContextOverhead(devs []api.SliceDevice) error {
	overhead := uint64(s.cfg.ContextOverhead)
	for _, d := range devs {
		if d.MemoryBytes <= overhead {
			return fmt.Errorf("%w: %s on device %d leaves nothing after the %s charged per CUDA context (context_overhead)",
				allocator.ErrInvalidRequest, sizeString(d.MemoryBytes), d.Index, sizeString(overhead))
		}
	}
	return nil
}

// recordSlice watches the slice's owner and writes the slice's record and
// regions to disk; once it returns nil the slice is durable. The owner is
// watched before the write so that an owner already gone is refused (400)
// without leaving a record of a slice that would be released at once.
func (s *Server) recordSlice(req api.AllocRequest, devs []api.SliceDevice) (*sliceEntry, error) {
	var watch *ownerWatch
	if req.Owner.Kind == api.OwnerPID {
		var err error
		if watch, err = watchOwner(req.Owner.PID, req.Owner.StartTime); err != nil {
			return nil, fmt.Errorf("%w: %w", allocator.ErrInvalidRequest, err)
		}
	}
	rec := store.Record{
		Slice: api.Slice{
			ID:        req.ID,
			Devices:   devs,
			QoS:       req.QoS,
			Priority:  req.Priority,
			Owner:     req.Owner,
			CreatedAt: time.Now().UTC(),
			// Recorded resolved: a later change of vgpud's default does not
			// change an existing slice.
			ComputePolicy: req.ComputePolicy,
			IdleRelease:   req.IdleRelease,
		},
		Request:         req,
		ContextOverhead: uint64(s.cfg.ContextOverhead),
	}
	rec.Slice.Dir = s.store.Dir(req.ID) // what Create records
	region, err := s.store.Create(rec)
	if err != nil {
		watch.close()
		return nil, fmt.Errorf("record slice %s: %w", req.ID, err)
	}
	return &sliceEntry{rec: rec, region: region, owner: watch, placed: true, uuids: sliceUUIDs(rec.Slice)}, nil
}

// publish makes a recorded slice visible to the API and the enforcer loop
// (the loop picks it up by the version bump).
func (s *Server) publish(e *sliceEntry) error {
	s.mu.Lock()
	if s.closed {
		// Shutdown began while the record was written. The slice is recorded
		// and will be restored; it is not answered, so the client retries.
		s.mu.Unlock()
		e.close() // not under mu: unmapping is no business of the lock
		return errClosing
	}
	s.slices[e.rec.Slice.ID] = e
	s.version++
	s.mu.Unlock()
	if s.loop != nil && elasticEntry(e) {
		// A tick now: it adds the slice's elastic doorbells to those vgpud
		// waits on, so its first request is not left to the next tick.
		s.loop.wakeUp()
	}
	return nil
}

// release removes a slice: its record first (once that is gone the slice is
// gone, whatever happens next), then its booking. The slice stays listed until
// its record is gone, so a client that sees 404 never finds its files still
// there. Its regions are closed by the loop goroutine, which may be reading them.
func (s *Server) release(id, why string) error {
	s.mu.Lock()
	e, ok := s.slices[id]
	if !ok || e.releasing {
		s.mu.Unlock()
		return fmt.Errorf("slice %s: %w", id, errNotFound)
	}
	e.releasing = true // a concurrent release gets 404
	s.mu.Unlock()

	e.recMu.Lock() // an update's record write finishes first (update.go)
	err := s.store.Delete(id)
	e.recMu.Unlock()
	if errors.Is(err, store.ErrNotFound) {
		// Someone removed the files under us: the slice is gone all the same.
		s.log.Warn("slice record already gone from disk", zap.String("slice", id))
	} else if err != nil {
		s.mu.Lock()
		e.releasing = false
		s.mu.Unlock()
		return fmt.Errorf("remove slice %s: %w", id, err)
	}
	if e.placed {
		s.alloc.Release(id)
	}
	s.cdi.unpublish(id)
	s.mu.Lock()
	delete(s.slices, id)
	s.version++
	if s.loop != nil && s.apiSrv != nil && !s.closed {
		s.loop.closing = append(s.loop.closing, e)
	} else {
		e.close() // no loop reads it
	}
	s.mu.Unlock()
	s.log.Info("slice released", zap.String("slice", id), zap.String("why", why))
	return nil
}

// list returns every slice, sorted by id.
func (s *Server) list() []api.Slice {
	s.mu.Lock()
	out := make([]api.Slice, 0, len(s.slices))
	for _, e := range s.slices {
		out = append(out, e.rec.Slice)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Server) get(id string) (api.Slice, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.slices[id]
	if !ok {
		return api.Slice{}, false
	}
	return e.rec.Slice, true
}

// newSliceID makes an id for a request that names none: "s-" and 12 random
// hex digits (48 bits: collisions are refused with 409 anyway).
func newSliceID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return "s-" + hex.EncodeToString(b[:])
}

func ownerDesc(o api.Owner) string {
	switch o.Kind {
	case api.OwnerPID:
		return fmt.Sprintf("pid %d", o.PID)
	case api.OwnerContainer:
		return "container " + o.ContainerID
	case api.OwnerClaim:
		return "claim " + o.ClaimNamespace + "/" + o.ClaimName + " " + o.ClaimUID
	}
	return "none"
}
