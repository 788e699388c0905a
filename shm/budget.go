package shm

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// BudgetRegion is a mapped budget file. Readers (libvgpu, the daemon's
// enforcer) see changes made through the setters of a writable mapping at once;
// the generation counter, bumped after every change, tells them one happened.
//
// Fields that can change after creation are read and written with sync/atomic,
// matching libvgpu's __atomic loads, so a reader never sees a torn value.
type BudgetRegion struct {
	path       string
	data       []byte
	b          *ShmBudget
	devices    int // device_count as validated at open; never re-read from the file
	writable   bool
	regionFile // the open file, for CheckFile and TrimFile
}

// OpenBudget maps a budget file, read-only unless writable (only vgpud writes it).
func OpenBudget(path string, writable bool) (*BudgetRegion, error) {
	data, h, f, err := mapRegion(path, kindBudget, writable)
	if err != nil {
		return nil, err
	}
	return &BudgetRegion{
		path:       path,
		data:       data,
		b:          (*ShmBudget)(unsafe.Pointer(&data[0])),
		devices:    int(h.DeviceCount),
		writable:   writable,
		regionFile: f,
	}, nil
}

// Close unmaps the region. The region must not be used afterwards.
func (r *BudgetRegion) Close() error {
	if r == nil || r.data == nil {
		return nil
	}
	err := unmap(r.data)
	r.data, r.b = nil, nil
	_ = r.closeFile() // the descriptor was only fstat-ed and ftruncate-d: no data to lose
	if err != nil {
		return fmt.Errorf("budget file %s: munmap: %w", r.path, err)
	}
	return nil
}

// Path returns the file the region maps.
func (r *BudgetRegion) Path() string { return r.path }

// Raw returns the mapped struct, for tools and tests that need a field with no
// accessor. Fields that change after creation must be accessed atomically.
func (r *BudgetRegion) Raw() *ShmBudget { return r.b }

// DeviceCount is the number of devices of the slice.
func (r *BudgetRegion) DeviceCount() int { return r.devices }

// ABIMinor is the minor version the file was written with.
func (r *BudgetRegion) ABIMinor() uint16 { return r.b.Hdr.ABIMinor }

// Generation is bumped after every change of the budget.
func (r *BudgetRegion) Generation() uint64 { return atomic.LoadUint64(&r.b.Generation) }

// SliceID is the slice's name (fixed at creation).
func (r *BudgetRegion) SliceID() string { return cString(r.b.SliceID[:]) }

// CreatedUnixNs is when the slice was created.
func (r *BudgetRegion) CreatedUnixNs() uint64 { return r.b.CreatedUnixNs }

// Priority of the slice (higher wins).
func (r *BudgetRegion) Priority() uint32 { return atomic.LoadUint32(&r.b.Priority) }

// QoS class of the slice (QoS*).
func (r *BudgetRegion) QoS() uint32 { return atomic.LoadUint32(&r.b.QoS) }

// Policy is the throttle policy (Policy*).
func (r *BudgetRegion) Policy() uint32 { return atomic.LoadUint32(&r.b.Policy) }

// Flags are the budget flags (BudgetFlag*).
func (r *BudgetRegion) Flags() uint32 { return atomic.LoadUint32(&r.b.Flags) }

func (r *BudgetRegion) dev(d int) *ShmBudgetDevice {
	if d < 0 || d >= r.devices {
		panic(fmt.Sprintf("shm: budget device %d out of range [0,%d)", d, r.devices))
	}
	return &r.b.Dev[d]
}

// MemoryLimit is the number of bytes the slice may hold on device d.
func (r *BudgetRegion) MemoryLimit(d int) uint64 {
	return atomic.LoadUint64(&r.dev(d).MemoryLimit)
}

// Device returns a snapshot of device d's budget.
func (r *BudgetRegion) Device(d int) DeviceBudget {
	bd := r.dev(d)
	return DeviceBudget{
		Index:            bd.Index,
		UUID:             cString(bd.UUID[:]),
		MemoryLimit:      atomic.LoadUint64(&bd.MemoryLimit),
		MemoryGuaranteed: atomic.LoadUint64(&bd.MemoryGuaranteed),
		MemoryMax:        atomic.LoadUint64(&bd.MemoryMax),
		ContextOverhead:  atomic.LoadUint64(&bd.ContextOverhead),
		ComputeShareBP:   atomic.LoadUint32(&bd.ComputeShareBP),
		ComputeFloorBP:   atomic.LoadUint32(&bd.ComputeFloorBP),
		TokenRate:        atomic.LoadUint64(&bd.TokenRate),
		TokenBurst:       atomic.LoadUint64(&bd.TokenBurst),
	}
}

// Spec returns a snapshot of the whole budget as a SliceSpec (Slots is 0: the
// slot count lives in the usage file).
func (r *BudgetRegion) Spec() SliceSpec {
	s := SliceSpec{
		ID:       r.SliceID(),
		Priority: r.Priority(),
		QoS:      r.QoS(),
		Policy:   r.Policy(),
		Flags:    r.Flags(),
		Devices:  make([]DeviceBudget, r.devices),
	}
	for d := range s.Devices {
		s.Devices[d] = r.Device(d)
	}
	return s
}

// update runs a change on a writable mapping inside a seqlock write: the
// generation is odd while fields change and even again after, so a reader that
// needs several fields to agree (rate and burst) retries while it is odd or
// moved. Writers are serialized by vgpud (one writer per budget file).
func (r *BudgetRegion) update(what string, change func() error) error {
	if r.b == nil {
		return fmt.Errorf("budget file %s: %s: %w", r.path, what, ErrClosed)
	}
	if !r.writable {
		return fmt.Errorf("budget file %s: %s: %w", r.path, what, ErrReadOnly)
	}
	atomic.AddUint64(&r.b.Generation, 1) // odd: write in progress
	if err := change(); err != nil {
		// Setters validate before they store, so nothing changed: back to the
		// same even value.
		atomic.AddUint64(&r.b.Generation, ^uint64(0))
		return fmt.Errorf("budget file %s: %s: %w", r.path, what, err)
	}
	atomic.AddUint64(&r.b.Generation, 1) // even: stable
	return nil
}

// SetMemoryLimit changes device d's memory limit. Lowering it below what is in
// use is allowed: new allocations are then refused until usage drops.
func (r *BudgetRegion) SetMemoryLimit(d int, bytes uint64) error {
	return r.update("set memory limit", func() error {
		if bytes == 0 {
			return specErr("memory limit must be > 0")
		}
		atomic.StoreUint64(&r.dev(d).MemoryLimit, bytes)
		return nil
	})
}

// SetMemoryGuaranteed changes device d's elastic floor.
func (r *BudgetRegion) SetMemoryGuaranteed(d int, bytes uint64) error {
	return r.update("set guaranteed memory", func() error {
		atomic.StoreUint64(&r.dev(d).MemoryGuaranteed, bytes)
		return nil
	})
}

// SetContextOverhead changes the bytes charged per CUDA context on device d.
// Contexts created before the change are credited with what they were charged
// (libvgpu remembers it per context).
func (r *BudgetRegion) SetContextOverhead(d int, bytes uint64) error {
	return r.update("set context overhead", func() error {
		atomic.StoreUint64(&r.dev(d).ContextOverhead, bytes)
		return nil
	})
}

// SetComputeShare changes device d's compute share and floor (basis points).
func (r *BudgetRegion) SetComputeShare(d int, shareBP, floorBP uint32) error {
	return r.update("set compute share", func() error {
		if shareBP > MaxShareBP || floorBP > MaxShareBP {
			return specErr("share %d / floor %d bp exceed %d", shareBP, floorBP, MaxShareBP)
		}
		bd := r.dev(d)
		atomic.StoreUint32(&bd.ComputeShareBP, shareBP)
		atomic.StoreUint32(&bd.ComputeFloorBP, floorBP)
		return nil
	})
}

// SetTokenBucket changes device d's token rate (device-ns per second, 0 = no
// throttling) and burst (device-ns).
func (r *BudgetRegion) SetTokenBucket(d int, rate, burst uint64) error {
	return r.update("set token bucket", func() error {
		bd := r.dev(d)
		atomic.StoreUint64(&bd.TokenRate, rate)
		atomic.StoreUint64(&bd.TokenBurst, burst)
		return nil
	})
}

// SetPriority changes the slice's priority.
func (r *BudgetRegion) SetPriority(p uint32) error {
	return r.update("set priority", func() error {
		atomic.StoreUint32(&r.b.Priority, p)
		return nil
	})
}

// SetQoS changes the slice's QoS class.
func (r *BudgetRegion) SetQoS(q uint32) error {
	return r.update("set qos", func() error {
		if q > QoSBestEffort {
			return specErr("unknown qos %d", q)
		}
		atomic.StoreUint32(&r.b.QoS, q)
		return nil
	})
}

// SetPolicy changes the slice's throttle policy.
func (r *BudgetRegion) SetPolicy(p uint32) error {
	return r.update("set policy", func() error {
		if p > PolicyShare {
			return specErr("unknown policy %d", p)
		}
		atomic.StoreUint32(&r.b.Policy, p)
		return nil
	})
}

// SetFlags changes the slice's flags.
func (r *BudgetRegion) SetFlags(f uint32) error {
	return r.update("set flags", func() error {
		if f&^budgetKnownFlags != 0 {
			return specErr("unknown flags %#x", f&^budgetKnownFlags)
		}
		atomic.StoreUint32(&r.b.Flags, f)
		return nil
	})
}
