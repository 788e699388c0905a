package daemon

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/allocator"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/shm"
)

// Quarantined slices: records the store could not load at start (store's
// quarantine.go). Such a slice is not enforced, but its tenants may still run,
// so what it held stays booked until an operator resolves it (vgpuctl
// quarantine release|restore); otherwise its guaranteed memory would be booked
// again for others while its tenants still use it.
//
// What it held is read from its budget file, never from the bad record:
//
//   - budget readable, checked, on this node's devices and fitting the books:
//     booked under the slice's id exactly as the budget says (api.HoldingBudget).
//     Such a slice can be restored: a record rebuilt from the budget, live again,
//     the same booking kept.
//   - otherwise its holding is unknown (api.HoldingUnknown): once every live and
//     every budget-known quarantined slice is booked, all the guaranteed memory
//     and compute still free on every device is held (bookings named
//     unknownHoldPrefix+N, guaranteed). That is an upper bound of what the
//     unknown slice can hold (the guaranteed bookings of all slices alive
//     together never exceed a device), so nothing it may hold is booked again,
//     and what the known slices free later is genuinely free. One hold covers
//     every unknown slice and is freed when the last of them is released. Such
//     a slice cannot be restored, only released: its budget cannot be trusted.
//     Burstable and best-effort slices, which reserve nothing, still fit.
//
// The slice's id stays taken while it is quarantined (an allocation of it is
// refused with 409), so a new slice never takes the name of a held one.

// unknownHoldPrefix names the allocator bookings of the unknown holding; ':'
// is not allowed in slice ids, so they never clash with a slice.
const unknownHoldPrefix = "quarantine:unknown:"

var (
	// errUnrestorable: the slice has no trustworthy budget to rebuild it from
	// (422).
	errUnrestorable = errors.New("cannot be restored")
	// errQuarantineConflict: the name is ambiguous, or another operation on
	// the entry is under way (409).
	errQuarantineConflict = errors.New("conflict")
)

// quarantineEntry is one quarantined slice vgpud holds (Server.quarantined,
// under Server.mu).
type quarantineEntry struct {
	q       store.Quarantined
	holding string // api.HoldingBudget or api.HoldingUnknown
	why     string // why the holding is unknown
	qos     api.QoS
	devices []api.SliceDevice // booked under q.ID (HoldingBudget)
	busy    bool              // a release or restore is under way
}

// loadQuarantine books what every quarantined slice holds (see above). It runs
// in New, after the live slices are booked, before anything is served.
func (s *Server) loadQuarantine() error {
	qs, err := s.store.Quarantined()
	if err != nil {
		// What they hold cannot be known: refuse to start rather than book it
		// again (the state dir is as unreadable as a failing Load's).
		return fmt.Errorf("load quarantined slices: %w", err)
	}
	unknown := false
	for _, q := range qs {
		e := &quarantineEntry{q: q}
		if err := s.bookFromBudget(e); err != nil {
			e.holding, e.why, unknown = api.HoldingUnknown, err.Error(), true
		}
		s.quarantined[q.Name] = e
		s.log.Warn("quarantined slice: not enforced, what it holds stays booked until 'vgpuctl quarantine release|restore'",
			zap.String("name", q.Name), zap.String("slice", q.ID), zap.String("dir", q.Dir),
			zap.String("reason", q.Reason), zap.String("holding", e.holding), zap.String("holding_reason", e.why),
			zap.Any("devices", e.devices))
	}
	if unknown {
		s.holdUnknown()
	}
	return nil
}

// bookFromBudget books what e's budget says it holds.
func (s *Server) bookFromBudget(e *quarantineEntry) error {
	rec := e.q.Rebuilt
	if rec == nil {
		return fmt.Errorf("no usable budget: %w", e.q.BudgetErr)
	}
	if err := s.checkNodeDevices(rec.Slice.Devices); err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	if err := s.alloc.Restore(e.q.ID, rec.Slice.Devices, rec.Slice.QoS); err != nil {
		return fmt.Errorf("booking what its budget says: %w", err)
	}
	e.holding, e.qos, e.devices = api.HoldingBudget, rec.Slice.QoS, rec.Slice.Devices
	return nil
}

// checkNodeDevices checks that every device names a device of this node by
// uuid and index both (the allocator matches by uuid only).
func (s *Server) checkNodeDevices(devs []api.SliceDevice) error {
	for _, sd := range devs {
		found := false
		for _, d := range s.devs {
			if d.UUID != sd.UUID {
				continue
			}
			if d.Index != sd.Index {
				return fmt.Errorf("device %s is index %d on this node, not %d", sd.UUID, d.Index, sd.Index)
			}
			found = true
		}
		if !found {
			return fmt.Errorf("no device %s on this node", sd.UUID)
		}
	}
	return nil
}

// holdUnknown books, for the quarantined slices whose holding is unknown, all
// the guaranteed memory and compute free on every device (see above).
func (s *Server) holdUnknown() {
	var devs []api.SliceDevice
	for _, d := range s.alloc.Devices() {
		if d.GuaranteedBytes >= d.MemoryBytes {
			continue // nothing free to hold; no guaranteed slice fits there anyway
		}
		usedBP, err := api.ShareBP(d.ComputePercent)
		if err != nil {
			usedBP = shm.MaxShareBP // cannot happen (the allocator's own sum); hold no compute
		}
		devs = append(devs, api.SliceDevice{Index: d.Index, UUID: d.UUID, MemoryBytes: d.MemoryBytes - d.GuaranteedBytes,
			ComputePercent: api.SharePercent(shm.MaxShareBP - usedBP)})
	}
	for i := 0; i < len(devs); i += api.MaxSliceDevices {
		id := unknownHoldPrefix + strconv.Itoa(i/api.MaxSliceDevices)
		if err := s.alloc.Restore(id, devs[i:min(i+api.MaxSliceDevices, len(devs))], api.QoSGuaranteed); err != nil {
			s.log.Error("holding the free guaranteed capacity for quarantined slices", zap.String("hold", id), zap.Error(err))
			continue
		}
		s.unknownHoldIDs = append(s.unknownHoldIDs, id)
	}
	s.unknownHold = devs
	s.log.Warn("quarantined slices hold an unknown share: all guaranteed memory and compute free now is held until they are released",
		zap.Any("devices", devs))
}

// releaseUnknownHold frees the unknown holding (its last slice is resolved).
func (s *Server) releaseUnknownHold() {
	s.mu.Lock()
	ids := s.unknownHoldIDs
	s.unknownHoldIDs, s.unknownHold = nil, nil
	s.mu.Unlock()
	for _, id := range ids {
		s.alloc.Release(id)
	}
	s.log.Info("the hold for quarantined slices of unknown holding is freed")
}

// quarantinedID reports whether a quarantined slice has this id. Callers hold s.mu.
func (s *Server) quarantinedID(id string) bool {
	for _, e := range s.quarantined {
		if e.q.ID == id {
			return true
		}
	}
	return false
}

// quarantineList returns every quarantined slice, by name.
func (s *Server) quarantineList() []api.QuarantinedSlice {
	s.mu.Lock()
	out := make([]api.QuarantinedSlice, 0, len(s.quarantined))
	for _, e := range s.quarantined {
		q := api.QuarantinedSlice{Name: e.q.Name, ID: e.q.ID, Dir: e.q.Dir, Reason: e.q.Reason, QuarantinedAt: e.q.At,
			Holding: e.holding, HoldingReason: e.why, QoS: e.qos, Devices: e.devices,
			Restorable: e.holding == api.HoldingBudget}
		if e.holding == api.HoldingUnknown {
			q.QoS, q.Devices = api.QoSGuaranteed, s.unknownHold
		}
		q.Devices = append([]api.SliceDevice{}, q.Devices...)
		out = append(out, q)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// claimQuarantined finds the entry name names (its Name, or its slice id when
// only one entry has it) and marks it busy for the caller.
func (s *Server) claimQuarantined(name string) (*quarantineEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosing
	}
	e, ok := s.quarantined[name]
	if !ok {
		var names []string
		for _, c := range s.quarantined {
			if c.q.ID == name {
				e = c
				names = append(names, c.q.Name)
			}
		}
		switch len(names) {
		case 0:
			return nil, fmt.Errorf("quarantined slice %s: %w", name, errNotFound)
		case 1:
		default:
			sort.Strings(names)
			return nil, fmt.Errorf("quarantined slice %s: %w: %d entries have this id, name one: %s",
				name, errQuarantineConflict, len(names), strings.Join(names, ", "))
		}
	}
	if e.busy {
		return nil, fmt.Errorf("quarantined slice %s: %w: being released or restored", name, errQuarantineConflict)
	}
	e.busy = true
	return e, nil
}

func (s *Server) unclaim(e *quarantineEntry) {
	s.mu.Lock()
	e.busy = false
	s.mu.Unlock()
}

// dropQuarantined forgets e (resolved); it reports whether e was the last
// slice of unknown holding. Callers hold s.mu.
func (s *Server) dropQuarantined(e *quarantineEntry) (lastUnknown bool) {
	delete(s.quarantined, e.q.Name)
	if e.holding != api.HoldingUnknown {
		return false
	}
	for _, o := range s.quarantined {
		if o.holding == api.HoldingUnknown {
			return false
		}
	}
	return true
}

// releaseQuarantined resolves a quarantined slice by freeing it: its files go
// (tenants keep their mappings), then its booking.
func (s *Server) releaseQuarantined(name string) error {
	e, err := s.claimQuarantined(name)
	if err != nil {
		return err
	}
	if err := s.store.RemoveQuarantined(e.q); errors.Is(err, store.ErrNotFound) {
		s.log.Warn("quarantined slice's files already gone", zap.String("name", e.q.Name))
	} else if err != nil {
		s.unclaim(e)
		return fmt.Errorf("release quarantined slice %s: %w", e.q.Name, err)
	}
	if e.holding == api.HoldingBudget {
		s.alloc.Release(e.q.ID)
	}
	s.mu.Lock()
	last := s.dropQuarantined(e)
	s.mu.Unlock()
	if last {
		s.releaseUnknownHold()
	}
	s.log.Info("quarantined slice released", zap.String("name", e.q.Name), zap.String("slice", e.q.ID),
		zap.String("holding", e.holding))
	return nil
}

// restoreQuarantined resolves a quarantined slice of known holding by making
// it live again: a record rebuilt from its budget, its regions re-adopted, its
// booking kept. It has no owner any more (the budget does not say): it lives
// until released.
func (s *Server) restoreQuarantined(name string) (api.Slice, error) {
	e, err := s.claimQuarantined(name)
	if err != nil {
		return api.Slice{}, err
	}
	if e.holding != api.HoldingBudget {
		s.unclaim(e)
		return api.Slice{}, fmt.Errorf("quarantined slice %s %w: what it holds is unknown (%s); release it instead",
			e.q.Name, errUnrestorable, e.why)
	}
	s.mu.Lock()
	_, live := s.slices[e.q.ID]
	s.mu.Unlock()
	if live { // only from an older vgpud, which freed a quarantined id
		s.unclaim(e)
		return api.Slice{}, fmt.Errorf("quarantined slice %s: %w: slice %s is live", e.q.Name, allocator.ErrExists, e.q.ID)
	}
	l, err := s.store.Unquarantine(e.q)
	if err != nil {
		s.unclaim(e)
		return api.Slice{}, err
	}
	entry := &sliceEntry{rec: l.Record, region: l.Slice, placed: true, uuids: sliceUUIDs(l.Record.Slice)}
	s.mu.Lock()
	s.dropQuarantined(e)
	if s.closed {
		// Shutdown began: the slice is live on disk and will be restored.
		s.mu.Unlock()
		entry.close()
		return api.Slice{}, errClosing
	}
	s.slices[e.q.ID] = entry
	s.version++
	s.mu.Unlock()
	s.log.Info("quarantined slice restored", zap.String("name", e.q.Name), zap.String("slice", e.q.ID),
		zap.String("dir", entry.rec.Slice.Dir), zap.Any("devices", entry.rec.Slice.Devices))
	return entry.rec.Slice, nil
}

func (s *Server) handleQuarantineRelease(w http.ResponseWriter, r *http.Request) {
	if err := s.releaseQuarantined(r.PathValue("name")); err != nil {
		s.writeQuarantineErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleQuarantineRestore(w http.ResponseWriter, r *http.Request) {
	sl, err := s.restoreQuarantined(r.PathValue("name"))
	if err != nil {
		s.writeQuarantineErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sl)
}

func (s *Server) writeQuarantineErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errUnrestorable), errors.Is(err, store.ErrNoBudget):
		writeError(w, http.StatusUnprocessableEntity, api.Error{Error: err.Error()})
	case errors.Is(err, errQuarantineConflict):
		writeError(w, http.StatusConflict, api.Error{Error: err.Error()})
	default:
		s.writeErr(w, err)
	}
}
