package shm

import (
	"errors"
	"fmt"
	"strings"
)

// MaxShareBP is a whole GPU in basis points.
const MaxShareBP = 10000

// DeviceBudget is what a slice may use on one device (one budget.dev[] entry).
type DeviceBudget struct {
	// Index is the host device index (NVML index / CUDA ordinal). libvgpu matches
	// by Index only when UUID is empty.
	Index uint32
	// UUID, when set, is matched against cuDeviceGetUuid of each CUDA ordinal;
	// at most UUIDLen-1 bytes.
	UUID string
	// MemoryLimit is the number of bytes the slice may hold on the device now.
	MemoryLimit uint64
	// MemoryGuaranteed is the elastic floor: bytes never lent away. <= MemoryLimit.
	MemoryGuaranteed uint64
	// MemoryMax is the most elastic grants may raise MemoryLimit to (ABI 1.3);
	// 0 or <= MemoryLimit: the limit is the ceiling.
	MemoryMax uint64
	// ContextOverhead is charged per CUDA context a process creates on the device:
	// the driver's own footprint, which the real device loses too.
	ContextOverhead uint64
	// ComputeShareBP and ComputeFloorBP are in basis points (10000 = whole GPU).
	ComputeShareBP uint32
	ComputeFloorBP uint32
	// TokenRate (device-ns per wall second, 0 = no throttling due) and TokenBurst
	// (bucket depth, device-ns) drive libvgpu's launch throttle.
	TokenRate  uint64
	TokenBurst uint64
}

// SliceSpec describes a slice to create.
type SliceSpec struct {
	// ID names the slice (free text, at most SliceIDLen-1 bytes).
	ID      string
	Devices []DeviceBudget
	// Slots is the number of process slots in the usage file; 0 means DefaultSlots.
	Slots    int
	Priority uint32
	QoS      uint32 // QoS*
	Policy   uint32 // Policy*
	Flags    uint32 // BudgetFlag*
}

// ErrInvalidSpec is returned (wrapped) by CreateSlice for a spec it refuses.
var ErrInvalidSpec = errors.New("invalid slice spec")

func specErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// slotCount returns the number of slots the spec asks for, with the default applied.
func (s *SliceSpec) slotCount() int {
	if s.Slots == 0 {
		return DefaultSlots
	}
	return s.Slots
}

// Validate reports the first thing about the spec that CreateSlice would refuse.
func (s *SliceSpec) Validate() error {
	if len(s.ID) >= SliceIDLen {
		return specErr("slice id is %d bytes, at most %d", len(s.ID), SliceIDLen-1)
	}
	if strings.IndexByte(s.ID, 0) >= 0 {
		return specErr("slice id contains a NUL byte")
	}
	if len(s.Devices) == 0 {
		return specErr("at least one device is required")
	}
	if len(s.Devices) > MaxDevices {
		return specErr("%d devices, at most %d", len(s.Devices), MaxDevices)
	}
	if s.Slots < 0 || s.Slots > MaxSlots {
		return specErr("slots %d out of range 1..%d (0 = default %d)", s.Slots, MaxSlots, DefaultSlots)
	}
	if s.QoS > QoSBestEffort {
		return specErr("unknown qos %d", s.QoS)
	}
	if s.Policy > PolicyShare {
		return specErr("unknown policy %d", s.Policy)
	}
	if s.Flags&^budgetKnownFlags != 0 {
		return specErr("unknown flags %#x", s.Flags&^budgetKnownFlags)
	}
	for i := range s.Devices {
		if err := s.Devices[i].validate(); err != nil {
			return fmt.Errorf("device %d: %w", i, err)
		}
		// A device matched by UUID and one matched by index could still be the
		// same GPU; only the daemon (which knows the node) can tell. Here we
		// refuse what is certainly a duplicate.
		for j := 0; j < i; j++ {
			a, b := &s.Devices[j], &s.Devices[i]
			if a.UUID != "" && a.UUID == b.UUID {
				return specErr("devices %d and %d both name uuid %s", j, i, a.UUID)
			}
			if a.UUID == "" && b.UUID == "" && a.Index == b.Index {
				return specErr("devices %d and %d both name index %d", j, i, a.Index)
			}
		}
	}
	return nil
}

func (d *DeviceBudget) validate() error {
	if len(d.UUID) >= UUIDLen {
		return specErr("uuid is %d bytes, at most %d", len(d.UUID), UUIDLen-1)
	}
	if strings.IndexByte(d.UUID, 0) >= 0 {
		return specErr("uuid contains a NUL byte")
	}
	if d.MemoryLimit == 0 {
		return specErr("memory limit must be > 0")
	}
	if d.MemoryGuaranteed > d.MemoryLimit {
		return specErr("guaranteed memory %d exceeds the limit %d", d.MemoryGuaranteed, d.MemoryLimit)
	}
	if d.ComputeShareBP > MaxShareBP {
		return specErr("compute share %d bp exceeds %d", d.ComputeShareBP, MaxShareBP)
	}
	if d.ComputeFloorBP > MaxShareBP {
		return specErr("compute floor %d bp exceeds %d", d.ComputeFloorBP, MaxShareBP)
	}
	return nil
}
