package daemon

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/allocator"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/shm"
)

// Changing a live slice's compute share and policy, and a claim's slice's
// pods (PATCH /v1/slices/{id}).
//
// The steps, in this order so that a refusal or a failure at any point
// changes nothing and a crash leaves a state vgpud restarts from:
//  1. check the request (api.UpdateRequest.Validate: the alloc request's
//     rules) and the slice (live, enforced), and hold its recMu (updates of
//     one slice go one at a time, and its release waits);
//  2. grow the booking to the larger of the old and the new share on each
//     device (the allocator refuses, changing nothing, when a guaranteed
//     slice's new share does not fit beside the others);
//  3. write the record (atomic and durable: after a crash vgpud has the old
//     record or the new one, and books it as recorded);
//  4. shrink the booking to the new shares (a shrink always fits);
//  5. write the budget (share, floor, policy, the new share's static token
//     rate) under its seqlock, serialized with the controller's writes by
//     enforcerLoop.budgetMu. A crash before this step leaves a budget behind
//     its record, which the store's Load sets from the record.
//
// The controller keeps what it learnt about the slice (its scale): it reads
// the share from the budget every tick, so the next tick steps to the new
// target at once.

// Errors of an update answered 409: the slice exists but cannot be changed now.
var (
	errQuarantined = errors.New("it is quarantined: restore it first (vgpuctl quarantine restore)")
	errNotEnforced = errors.New("it is not enforced (its record no longer fits this node)")
)

// conflictError marks an update refused with 409.
type conflictError struct{ err error }

func (e conflictError) Error() string { return e.err.Error() }
func (e conflictError) Unwrap() error { return e.err }

func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req api.UpdateRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	sl, err := s.update(id, req)
	if err != nil {
		s.log.Info("update refused", zap.String("slice", id), zap.Error(err))
		var refused *allocator.RefusedError
		var conflict conflictError
		switch {
		case errors.As(err, &refused):
			writeError(w, http.StatusConflict, api.Error{
				Error:   fmt.Sprintf("slice %s: the new compute share does not fit beside the other slices' guaranteed shares", id),
				Reasons: refused.Reasons})
		case errors.As(err, &conflict):
			writeError(w, http.StatusConflict, api.Error{Error: err.Error()})
		default:
			s.writeErr(w, err)
		}
		return
	}
	writeJSON(w, http.StatusOK, sl)
}

// update changes slice id as req says and returns it as it is now (the steps
// are above).
func (s *Server) update(id string, req api.UpdateRequest) (api.Slice, error) {
	if err := req.Validate(); err != nil {
		return api.Slice{}, fmt.Errorf("slice %s: %w", id, err)
	}
	e, rec, err := s.beginUpdate(id)
	if err != nil {
		return api.Slice{}, err
	}
	defer e.recMu.Unlock()
	next, err := updatedRecord(rec, req)
	if err != nil {
		return api.Slice{}, err
	}
	spec, err := store.Spec(next)
	if err != nil {
		return api.Slice{}, fmt.Errorf("%w: slice %s: %w", allocator.ErrInvalidRequest, id, err)
	}
	oldPct, newPct := computePercents(rec.Slice), computePercents(next.Slice)
	if err := s.alloc.SetCompute(id, maxEach(oldPct, newPct)); err != nil {
		return api.Slice{}, fmt.Errorf("slice %s: %w", id, err)
	}
	if err := s.store.Update(next); err != nil {
		if uerr := s.alloc.SetCompute(id, oldPct); uerr != nil && !errors.Is(uerr, allocator.ErrNotBooked) {
			s.log.Error("undo a compute booking", zap.String("slice", id), zap.Error(uerr))
		}
		if errors.Is(err, store.ErrNotFound) {
			return api.Slice{}, fmt.Errorf("slice %s: %w", id, errNotFound) // its files removed under us
		}
		return api.Slice{}, fmt.Errorf("record slice %s: %w", id, err)
	}
	if err := s.alloc.SetCompute(id, newPct); err != nil && !errors.Is(err, allocator.ErrNotBooked) {
		s.log.Error("shrink a compute booking to the recorded share", zap.String("slice", id), zap.Error(err))
	}
	return s.applyUpdate(e, next, spec)
}

// beginUpdate finds the live slice id and returns it holding its recMu, with
// its record as it is now (its devices and policy change only under recMu;
// the region watch's Tampered mark, under mu, is not an update's business).
func (s *Server) beginUpdate(id string) (*sliceEntry, store.Record, error) {
	s.mu.Lock()
	e, ok := s.slices[id]
	s.mu.Unlock()
	if ok {
		e.recMu.Lock() // not under mu: it waits for another update's disk write
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	switch {
	case s.closed:
		err = errClosing
	case !ok && s.quarantinedID(id):
		err = conflictError{fmt.Errorf("slice %s: %w", id, errQuarantined)}
	case !ok || e.releasing || s.slices[id] != e:
		err = fmt.Errorf("slice %s: %w", id, errNotFound)
	case !e.placed || e.region == nil:
		err = conflictError{fmt.Errorf("slice %s: %w", id, errNotEnforced)}
	}
	if err != nil {
		if ok {
			e.recMu.Unlock()
		}
		return nil, store.Record{}, err
	}
	return e, e.rec, nil
}

// applyUpdate writes the recorded change into the slice's budget and its
// entry. The budget is written holding budgetMu (the controller writes token
// rates under it: the seqlock takes one writer at a time, and the loop unmaps
// released regions under it) and mu (a release without a running loop unmaps
// under it), so the region cannot be unmapped under the write.
func (s *Server) applyUpdate(e *sliceEntry, next store.Record, spec shm.SliceSpec) (api.Slice, error) {
	id := next.Slice.ID
	s.loop.budgetMu.Lock()
	defer s.loop.budgetMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slices[id] != e || e.releasing || e.region == nil {
		return api.Slice{}, fmt.Errorf("slice %s: %w", id, errNotFound) // released meanwhile
	}
	if err := store.SetCompute(e.region.Budget, spec); err != nil {
		// Recorded: a restart sets the budget from the record.
		return api.Slice{}, fmt.Errorf("slice %s: recorded, but its budget was not written: %w", id, err)
	}
	// A fresh Devices slice: lists handed out before share the old one.
	e.rec.Slice.Devices = next.Slice.Devices
	e.rec.Slice.ComputePolicy = next.Slice.ComputePolicy
	if !slices.Equal(e.rec.Slice.Owner.PodUIDs, next.Slice.Owner.PodUIDs) {
		// Only the field that changed: the loop reads the owner's kind
		// without mu (activity); it reads the pods under mu (refreshView).
		e.rec.Slice.Owner.PodUIDs = next.Slice.Owner.PodUIDs
		s.version++ // the loop's view: the pods' cgroups are the slice's members
	}
	s.log.Info("slice updated", zap.String("slice", id), zap.Any("devices", next.Slice.Devices),
		zap.String("compute_policy", string(next.Slice.ComputePolicy)), zap.Strings("pod_uids", next.Slice.Owner.PodUIDs))
	return e.rec.Slice, nil
}

// updatedRecord is rec with req's changes: new shares on its devices (a
// device req names must be one of the slice's), the policy and, for a
// claim's slice, its pods.
func updatedRecord(rec store.Record, req api.UpdateRequest) (store.Record, error) {
	id := rec.Slice.ID
	devs := append([]api.SliceDevice(nil), rec.Slice.Devices...)
	named := 0
	for i := range devs {
		if req.ComputePercent != nil {
			devs[i].ComputePercent = *req.ComputePercent
		}
		if p, ok := req.DeviceComputePercent[devs[i].UUID]; ok {
			devs[i].ComputePercent = p
			named++
		}
	}
	if named != len(req.DeviceComputePercent) {
		return store.Record{}, fmt.Errorf("%w: slice %s: device_compute_percent names a device the slice is not on (it is on %v)",
			allocator.ErrInvalidRequest, id, sliceUUIDs(rec.Slice))
	}
	rec.Slice.Devices = devs
	if req.ComputePolicy != "" {
		rec.Slice.ComputePolicy = req.ComputePolicy
	}
	if req.PodUIDs != nil {
		if rec.Slice.Owner.Kind != api.OwnerClaim {
			return store.Record{}, fmt.Errorf("%w: slice %s: pod_uids: only a claim's slice has pods (its owner is %q)",
				allocator.ErrInvalidRequest, id, rec.Slice.Owner.Kind)
		}
		owner := rec.Slice.Owner
		owner.PodUIDs = append([]string(nil), *req.PodUIDs...)
		if err := checkClaimOwner(&owner); err != nil {
			return store.Record{}, fmt.Errorf("%w: slice %s: %w", allocator.ErrInvalidRequest, id, err)
		}
		rec.Slice.Owner = owner
	}
	return rec, nil
}

func computePercents(sl api.Slice) []float64 {
	out := make([]float64, len(sl.Devices))
	for i, d := range sl.Devices {
		out[i] = d.ComputePercent
	}
	return out
}

func maxEach(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = max(a[i], b[i])
	}
	return out
}
