package shm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// UsageRegion is a mapped usage file (always read-write: the daemon repairs it).
//
// The usage file is writable by the tenant's processes, so nothing read from it
// is trusted for memory safety: device and slot counts come from the header as
// validated at open, and every index is bounded by them. A tenant can still
// truncate the file under the mapping, which makes any access fault (SIGBUS):
// Reclaim guards itself against that; a daemon reading tenant files with the
// other accessors should do so inside Guard.
type UsageRegion struct {
	path    string
	data    []byte
	u       *ShmUsage
	slots   []ShmSlot // view of the slot array inside data
	devices int

	// reclaimMu serializes Reclaim calls of this process on this region; see
	// Reclaim for what that protects.
	reclaimMu sync.Mutex

	regionFile // the open file, for CheckFile and TrimFile
}

// OpenUsage maps a usage file read-write, MAP_SHARED.
func OpenUsage(path string) (*UsageRegion, error) {
	data, h, f, err := mapRegion(path, kindUsage, true)
	if err != nil {
		return nil, err
	}
	base := unsafe.Pointer(&data[0])
	return &UsageRegion{
		path:       path,
		data:       data,
		u:          (*ShmUsage)(base),
		slots:      unsafe.Slice((*ShmSlot)(unsafe.Add(base, usageSlotsStart)), int(h.SlotCount)),
		devices:    int(h.DeviceCount),
		regionFile: f,
	}, nil
}

// Close unmaps the region. The region must not be used afterwards.
func (r *UsageRegion) Close() error {
	if r == nil || r.data == nil {
		return nil
	}
	r.reclaimMu.Lock()
	defer r.reclaimMu.Unlock()
	err := unmap(r.data)
	r.data, r.u, r.slots = nil, nil, nil
	_ = r.closeFile() // the descriptor was only fstat-ed and ftruncate-d: no data to lose
	if err != nil {
		return fmt.Errorf("usage file %s: munmap: %w", r.path, err)
	}
	return nil
}

// Path returns the file the region maps.
func (r *UsageRegion) Path() string { return r.path }

// Raw returns the mapped fixed part, for tools and tests that need a field with
// no accessor. Every field of it changes concurrently: access it atomically.
func (r *UsageRegion) Raw() *ShmUsage { return r.u }

// RawSlot returns slot i of the mapping (same caveat as Raw).
func (r *UsageRegion) RawSlot(i int) *ShmSlot { return &r.slots[i] }

// DeviceCount is the number of devices of the slice.
func (r *UsageRegion) DeviceCount() int { return r.devices }

// SlotCount is the number of process slots.
func (r *UsageRegion) SlotCount() int { return len(r.slots) }

// ABIMinor is the minor version the file was written with.
func (r *UsageRegion) ABIMinor() uint16 { return r.u.Hdr.ABIMinor }

// AttachCount is the number of processes that ever claimed a slot.
func (r *UsageRegion) AttachCount() uint64 { return atomic.LoadUint64(&r.u.AttachCount) }

func (r *UsageRegion) dev(d int) *ShmUsageDevice {
	if d < 0 || d >= r.devices {
		panic(fmt.Sprintf("shm: usage device %d out of range [0,%d)", d, r.devices))
	}
	return &r.u.Dev[d]
}

// DeviceUsed is device d's admission counter: every byte charged on it.
func (r *UsageRegion) DeviceUsed(d int) uint64 {
	return atomic.LoadUint64(&r.dev(d).UsedBytes)
}

// UsageDevice is a snapshot of one device's counters.
type UsageDevice struct {
	UsedBytes           uint64
	PeakBytes           uint64
	RefusedAllocs       uint64
	ElasticRequestBytes uint64
	ElasticRequestSeq   uint64
	Tokens              int64
	LastRefillNs        uint64
	Launches            uint64
	ThrottledNs         uint64
}

// Device returns a snapshot of device d's counters (each read atomically; the
// set is not one instant).
func (r *UsageRegion) Device(d int) UsageDevice {
	ud := r.dev(d)
	return UsageDevice{
		UsedBytes:           atomic.LoadUint64(&ud.UsedBytes),
		PeakBytes:           atomic.LoadUint64(&ud.PeakBytes),
		RefusedAllocs:       atomic.LoadUint64(&ud.RefusedAllocs),
		ElasticRequestBytes: atomic.LoadUint64(&ud.ElasticRequestBytes),
		ElasticRequestSeq:   atomic.LoadUint64(&ud.ElasticRequestSeq),
		Tokens:              atomic.LoadInt64(&ud.Tokens),
		LastRefillNs:        atomic.LoadUint64(&ud.LastRefillNs),
		Launches:            atomic.LoadUint64(&ud.Launches),
		ThrottledNs:         atomic.LoadUint64(&ud.ThrottledNs),
	}
}

// SlotIdentity says which process owns a slot.
type SlotIdentity struct {
	Index int // slot index in the usage file
	// PID is the pid in the process's own pid namespace (from the owner word).
	PID int
	// PIDNamespace is the inode of the process's /proc/self/ns/pid; 0 if unknown.
	PIDNamespace uint64
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks since boot); 0 if
	// unknown.
	StartTime uint64
	// Claiming: the owner is still writing its identity. PIDNamespace and
	// StartTime are then reported as 0 because they may still hold a previous
	// owner's values.
	Claiming bool
}

// SlotInfo is a snapshot of an owned slot.
type SlotInfo struct {
	SlotIdentity
	HostPID   int    // filled by vgpud; 0 = not mapped yet
	Contexts  uint64 // CUDA contexts the process holds
	UsedBytes []uint64
}

// DecodeSlotIdentity decodes the identity of slot s (index i) for the owner
// word already read from it: a reader that judges slots one by one (vgpud's
// loop) loads the owner word once and decides from that value.
func DecodeSlotIdentity(i int, owner uint64, s *ShmSlot) SlotIdentity {
	id := SlotIdentity{Index: i, PID: int(owner >> SlotPIDShift)}
	if owner&SlotStateMask == SlotLive {
		id.PIDNamespace = atomic.LoadUint64(&s.PIDNsIno)
		id.StartTime = atomic.LoadUint64(&s.StartTime)
	} else {
		id.Claiming = true
	}
	return id
}

// OwnedState reports whether an owner word says the slot is owned (CLAIMING or
// LIVE).
func OwnedState(owner uint64) bool {
	st := owner & SlotStateMask
	return st == SlotClaiming || st == SlotLive
}

// Slot returns a snapshot of slot i and whether it is owned.
func (r *UsageRegion) Slot(i int) (SlotInfo, bool) {
	s := &r.slots[i]
	owner := atomic.LoadUint64(&s.Owner)
	if !OwnedState(owner) {
		return SlotInfo{}, false
	}
	info := SlotInfo{
		SlotIdentity: DecodeSlotIdentity(i, owner, s),
		HostPID:      int(atomic.LoadUint64(&s.HostPID)),
		Contexts:     atomic.LoadUint64(&s.Contexts),
		UsedBytes:    make([]uint64, r.devices),
	}
	for d := range info.UsedBytes {
		info.UsedBytes[d] = atomic.LoadUint64(&s.UsedBytes[d])
	}
	return info, true
}

// Slots returns snapshots of every owned slot (CLAIMING or LIVE), in slot order.
func (r *UsageRegion) Slots() []SlotInfo {
	var out []SlotInfo
	for i := range r.slots {
		if info, ok := r.Slot(i); ok {
			out = append(out, info)
		}
	}
	return out
}

// SetHostPID records the host pid vgpud mapped slot i's process to.
func (r *UsageRegion) SetHostPID(i int, hostPID int) {
	atomic.StoreUint64(&r.slots[i].HostPID, uint64(hostPID))
}

// ---------------------------------------------------------------------------
// A Go model of libvgpu's side of the protocol. libvgpu itself is C; these let
// the daemon's tests and tools act like a tenant process (claim a slot, charge,
// credit, release) following exactly the rules of vgpu_shm.h.

// ErrNoFreeSlot is returned by ClaimSlot when every slot is owned.
var ErrNoFreeSlot = errors.New("no free process slot")

// ClaimSlot claims a free slot for id (Index is ignored) the way libvgpu does:
// CAS owner 0 -> (pid<<8)|CLAIMING, write the identity, then publish LIVE.
func (r *UsageRegion) ClaimSlot(id SlotIdentity) (int, error) {
	claiming := SlotOwner(id.PID, SlotClaiming)
	for i := range r.slots {
		s := &r.slots[i]
		if atomic.LoadUint64(&s.Owner) != SlotFree {
			continue
		}
		if !atomic.CompareAndSwapUint64(&s.Owner, SlotFree, claiming) {
			continue
		}
		atomic.StoreUint64(&s.PID, uint64(id.PID))
		atomic.StoreUint64(&s.PIDNsIno, id.PIDNamespace)
		atomic.StoreUint64(&s.StartTime, id.StartTime)
		atomic.StoreUint64(&s.HostPID, 0)
		atomic.StoreUint64(&s.Contexts, 0)
		atomic.StoreUint64(&s.Owner, SlotOwner(id.PID, SlotLive))
		atomic.AddUint64(&r.u.AttachCount, 1)
		return i, nil
	}
	return -1, fmt.Errorf("usage file %s: %w (%d slots)", r.path, ErrNoFreeSlot, len(r.slots))
}

// Charge admits n bytes on device d for slot against limit: a CAS loop on the
// device counter (reserve first, so two chargers can never both pass), then the
// slot's share. It returns false, counting a refusal, when n does not fit.
func (r *UsageRegion) Charge(slot, d int, n, limit uint64) bool {
	ud := r.dev(d)
	for {
		cur := atomic.LoadUint64(&ud.UsedBytes)
		if n > limit || cur > limit-n {
			atomic.AddUint64(&ud.RefusedAllocs, 1)
			return false
		}
		if atomic.CompareAndSwapUint64(&ud.UsedBytes, cur, cur+n) {
			raisePeak(&ud.PeakBytes, cur+n)
			break
		}
	}
	atomic.AddUint64(&r.slots[slot].UsedBytes[d], n)
	return true
}

// Credit gives back n bytes charged on device d by slot: slot first, then the
// device counter (the reverse of Charge), both clamped at 0.
func (r *UsageRegion) Credit(slot, d int, n uint64) {
	subClamped(&r.slots[slot].UsedBytes[d], n)
	subClamped(&r.dev(d).UsedBytes, n)
}

// ReleaseSlot gives up a slot the caller owns, returning whatever it still holds
// to the device counters first (as a process exiting cleanly does).
func (r *UsageRegion) ReleaseSlot(slot int) error {
	s := &r.slots[slot]
	owner := atomic.LoadUint64(&s.Owner)
	if !OwnedState(owner) {
		return fmt.Errorf("usage file %s: slot %d is not owned", r.path, slot)
	}
	r.returnSlot(s, nil)
	if !atomic.CompareAndSwapUint64(&s.Owner, owner, SlotFree) {
		return fmt.Errorf("usage file %s: slot %d changed owner while releasing", r.path, slot)
	}
	return nil
}

// raisePeak raises *peak to v if v is higher.
func raisePeak(peak *uint64, v uint64) {
	for {
		p := atomic.LoadUint64(peak)
		if v <= p || atomic.CompareAndSwapUint64(peak, p, v) {
			return
		}
	}
}

// subClamped subtracts n from *p, stopping at 0 instead of wrapping, and returns
// what was actually subtracted.
func subClamped(p *uint64, n uint64) uint64 {
	for {
		cur := atomic.LoadUint64(p)
		take := min(n, cur)
		if take == 0 || atomic.CompareAndSwapUint64(p, cur, cur-take) {
			return take
		}
	}
}
