package shm

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync/atomic"
)

// ReclaimedSlot says what Reclaim did with one dead process's slot.
type ReclaimedSlot struct {
	SlotIdentity
	// Freed is what the slot held per device and was taken off the device
	// counters (length DeviceCount()).
	Freed []uint64
	// Clamped: a device counter was lower than the slot's share and stopped at 0
	// (a charge was already credited, or the file was repaired before).
	Clamped bool
	// Released: the owner word was still the value read and is now free. False
	// when someone else changed it meanwhile (a concurrent reclaimer).
	Released bool
}

// ReclaimReport is the outcome of one Reclaim pass.
type ReclaimReport struct {
	Owned int             // slots owned (CLAIMING or LIVE) when scanned
	Slots []ReclaimedSlot // slots of dead processes, in slot order
}

// Freed returns the bytes returned on device d by the pass.
func (rep *ReclaimReport) Freed(d int) uint64 {
	var n uint64
	for i := range rep.Slots {
		if d < len(rep.Slots[i].Freed) {
			n += rep.Slots[i].Freed[d]
		}
	}
	return n
}

// Reclaim returns the charges of processes that died without releasing their
// slot (SIGKILL, crash) and frees their slots. For every owned slot whose
// process alive() says is gone, it takes each per-device share out of the slot
// (atomic swap to 0), subtracts it from the device counter (CAS, clamped at 0,
// never wrapping), clears the slot's identity and counters, and finally frees
// the slot by CAS from the exact owner value read.
//
// A dead owner's slot is first moved to RECLAIMING by CAS from the exact owner
// value judged, so two reclaimers (even in different processes) never return
// the same slot twice and no process can claim it while its charge is being
// returned; a slot a crashed reclaimer left in RECLAIMING is finished by the
// next pass. Calls on one UsageRegion are serialized.
//
// Scanning allocates nothing when no process died; alive is called once per
// owned slot. A process killed between charging the device counter and its
// slot leaks that charge (the safe direction); the daemon corrects such drift
// from NVML separately.
//
// The usage file is writable by the tenant: a fault while touching the mapping
// (file truncated underneath) is returned as an ErrTruncated error instead of
// crashing the caller.
func (r *UsageRegion) Reclaim(alive func(SlotIdentity) bool) (rep ReclaimReport, err error) {
	r.reclaimMu.Lock()
	defer r.reclaimMu.Unlock()
	if r.u == nil {
		return rep, fmt.Errorf("usage file %s: reclaim: %w", r.path, ErrClosed)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer r.recoverFault(&err)

	for i := range r.slots {
		s := &r.slots[i]
		owner := atomic.LoadUint64(&s.Owner)
		id := DecodeSlotIdentity(i, owner, s)
		switch {
		case owner&SlotStateMask == SlotReclaiming:
			// A reclaimer died half-way through this slot: its owner was already
			// judged dead, so finish returning the charge.
		case OwnedState(owner):
			rep.Owned++
			if alive(id) {
				continue
			}
			// Take the slot before touching it: from here no process can claim
			// it and no other reclaimer can return it a second time. A slot
			// released or re-claimed since owner was read fails the CAS.
			if !atomic.CompareAndSwapUint64(&s.Owner, owner, owner&^SlotStateMask|SlotReclaiming) {
				continue
			}
		default:
			continue
		}
		rs := ReclaimedSlot{SlotIdentity: id}
		var freed [MaxDevices]uint64
		rs.Clamped = r.returnSlot(s, &freed)
		rs.Freed = append([]uint64(nil), freed[:r.devices]...)
		atomic.StoreUint64(&s.Owner, SlotFree)
		rs.Released = true
		rep.Slots = append(rep.Slots, rs)
	}
	return rep, nil
}

// ReturnUnowned zeroes the device counters of a slice no process holds a slot
// in, and returns what each device got back (nil when nothing was). A process
// killed between charging the device counter and recording the charge in its
// slot leaks that charge (Reclaim cannot see it); once no slot is owned nobody
// can be charging (a process claims its slot before it charges anything), so
// whatever the counters still hold is such a leak. Each counter is swapped to
// 0 by CAS from the exact value read: a process that claimed a slot and
// charged meanwhile makes the CAS fail, and the leak waits for the next call.
// Cheap when the counters are 0 (no slot is read).
func (r *UsageRegion) ReturnUnowned() (freed []uint64, err error) {
	r.reclaimMu.Lock()
	defer r.reclaimMu.Unlock()
	if r.u == nil {
		return nil, fmt.Errorf("usage file %s: return unowned: %w", r.path, ErrClosed)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer r.recoverFault(&err)
	var held [MaxDevices]uint64
	any := false
	for d := 0; d < r.devices; d++ {
		held[d] = atomic.LoadUint64(&r.u.Dev[d].UsedBytes)
		any = any || held[d] != 0
	}
	if !any {
		return nil, nil
	}
	for i := range r.slots {
		if owner := atomic.LoadUint64(&r.slots[i].Owner); owner != SlotFree {
			return nil, nil // owned, or being reclaimed: not ours to judge
		}
	}
	for d := 0; d < r.devices; d++ {
		if held[d] != 0 && atomic.CompareAndSwapUint64(&r.u.Dev[d].UsedBytes, held[d], 0) {
			if freed == nil {
				freed = make([]uint64, r.devices)
			}
			freed[d] = held[d]
		}
	}
	return freed, nil
}

// returnSlot moves every per-device share of s back off the device counters and
// clears the slot's identity and counters (not the owner word). freed, if not
// nil, receives what each device got back; the result says whether a device
// counter had to be clamped.
func (r *UsageRegion) returnSlot(s *ShmSlot, freed *[MaxDevices]uint64) (clamped bool) {
	for d := 0; d < MaxDevices; d++ {
		v := atomic.SwapUint64(&s.UsedBytes[d], 0)
		if v == 0 || d >= r.devices {
			// Bytes past device_count were never charged to a counter (only a
			// corrupt writer puts them there): just clear them.
			continue
		}
		if got := subClamped(&r.u.Dev[d].UsedBytes, v); got < v {
			clamped = true
		}
		if freed != nil {
			freed[d] = v
		}
	}
	atomic.StoreUint64(&s.Contexts, 0)
	atomic.StoreUint64(&s.HostPID, 0)
	atomic.StoreUint64(&s.StartTime, 0)
	atomic.StoreUint64(&s.PIDNsIno, 0)
	atomic.StoreUint64(&s.PID, 0)
	return clamped
}

// Guard runs fn, turning a memory fault on a mapping (a usage file truncated
// under it by its tenant) into an ErrTruncated error instead of a crash.
func (r *UsageRegion) Guard(fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer r.recoverFault(&err)
	fn()
	return nil
}

// recoverFault turns a memory fault on the mapping into an error; any other
// panic (from alive, say) goes on.
func (r *UsageRegion) recoverFault(err *error) {
	p := recover()
	if p == nil {
		return
	}
	if re, ok := p.(runtime.Error); ok {
		if _, isFault := re.(interface{ Addr() uintptr }); isFault {
			*err = fmt.Errorf("usage file %s: %w: fault on the mapping (file shrunk underneath?): %w",
				r.path, ErrTruncated, re)
			return
		}
	}
	panic(p)
}
