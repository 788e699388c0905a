package api

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/vgpu-project/vgpu/shm"
)

// This file is the one place where a slice request meets the shared-memory
// contract: the QoS names and their budget codes, the slice-id rule, the limits
// a request may ask for (derived from the contract's constants), the compute
// share's percent <-> basis-point conversion, and the budget a slice stands
// for (SliceBudget.Spec). vgpud's store, its allocator, vgpu-runtime and
// `vgpuctl slice create` all go through it, so a request is converted once and
// the same way everywhere.

// QoS is a slice's class (DESIGN §5). Guaranteed budgets are never lent and
// their sum on a device never exceeds it; burstable slices may lend and borrow;
// best-effort slices get what is left. The empty value means the default,
// guaranteed; on the wire it is the class name.
type QoS string

// The QoS classes.
const (
	QoSGuaranteed QoS = "guaranteed"
	QoSBurstable  QoS = "burstable"
	QoSBestEffort QoS = "best-effort"
)

// QoSClasses lists every class, the default first.
var QoSClasses = []QoS{QoSGuaranteed, QoSBurstable, QoSBestEffort}

// ErrUnknownQoS is wrapped by ParseQoS's errors.
var ErrUnknownQoS = errors.New("unknown qos")

// ParseQoS reads a class name; "" is the default class, guaranteed.
func ParseQoS(s string) (QoS, error) {
	q := QoS(s)
	if q == "" {
		return QoSGuaranteed, nil
	}
	for _, c := range QoSClasses {
		if q == c {
			return q, nil
		}
	}
	return "", fmt.Errorf("%w %q (want %s, %s or %s)", ErrUnknownQoS, s, QoSGuaranteed, QoSBurstable, QoSBestEffort)
}

// Normalized is the class with the default spelled out.
func (q QoS) Normalized() QoS {
	if q == "" {
		return QoSGuaranteed
	}
	return q
}

// Guaranteed reports whether the class reserves what it asks for.
func (q QoS) Guaranteed() bool { return q.Normalized() == QoSGuaranteed }

// Code is the class's code in the budget file (shm.QoS*). It must only be
// called on a class ParseQoS accepted.
func (q QoS) Code() uint32 {
	switch q.Normalized() {
	case QoSBurstable:
		return shm.QoSBurstable
	case QoSBestEffort:
		return shm.QoSBestEffort
	}
	return shm.QoSGuaranteed
}

// QoSOfCode names a budget file's QoS code ("unknown-N" for a code this build
// does not know, so a newer file still displays).
func QoSOfCode(code uint32) QoS {
	switch code {
	case shm.QoSGuaranteed:
		return QoSGuaranteed
	case shm.QoSBurstable:
		return QoSBurstable
	case shm.QoSBestEffort:
		return QoSBestEffort
	}
	return QoS(fmt.Sprintf("unknown-%d", code))
}

// MaxSliceDevices is the most devices one slice may span: the contract's
// per-device arrays have shm.MaxDevices entries.
const MaxSliceDevices = shm.MaxDevices

// MaxSliceIDLen is the longest slice id: the budget's slice_id field less its
// terminating NUL.
const MaxSliceIDLen = shm.SliceIDLen - 1

// SliceIDRule says in words what ValidSliceID accepts.
var SliceIDRule = fmt.Sprintf("1 to %d of [a-zA-Z0-9_.-], starting with a letter or digit", MaxSliceIDLen)

// ValidSliceID reports whether id can name a slice: a container id fits; no
// path separators and no leading dot (so no "."/".." and no clash with the
// store's hidden names); short enough for the budget's slice_id field.
func ValidSliceID(id string) bool {
	if id == "" || len(id) > MaxSliceIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("_.-", rune(c))) {
			return false
		}
	}
	return true
}

// ShareBP converts a compute share in percent (0 < p <= 100) to basis points
// of the device. 0 means "no share asked" and converts to 0.
func ShareBP(percent float64) (uint32, error) {
	if percent == 0 {
		return 0, nil
	}
	if math.IsNaN(percent) || percent < 0 || percent > 100 {
		return 0, fmt.Errorf("compute percent %v out of range (0, 100]", percent)
	}
	bp := math.Round(percent * shm.MaxShareBP / 100)
	if bp == 0 {
		return 0, fmt.Errorf("compute percent %v is below the 0.01%% granularity", percent)
	}
	return uint32(bp), nil
}

// SharePercent converts basis points back to percent.
func SharePercent(bp uint32) float64 { return float64(bp) * 100 / shm.MaxShareBP }

// SliceBudget is what a slice's budget file records, in the API's units.
type SliceBudget struct {
	ID       string
	Devices  []SliceDevice
	QoS      QoS
	Priority int
	// Slots is the number of process slots; 0: shm.DefaultSlots.
	Slots int
	// ContextOverhead is charged per CUDA context on every device.
	ContextOverhead uint64
	// Booked: vgpud's allocator reserved what a guaranteed slice asks for, so
	// the budget records the guarantee. A slice made without a daemon
	// (`vgpuctl slice create`) reserves nothing and records none.
	Booked bool
}

// Spec is the budget the slice stands for. Per device: memory_limit is the
// slice's memory; memory_guaranteed is the same for a booked guaranteed slice
// (never lent away) and 0 otherwise; compute_share_bp is the share in basis
// points (ComputePercent 0, no share asked: the whole device, not throttled),
// and compute_floor_bp equals it for a booked guaranteed slice that asked a
// share (the share is guaranteed) and is 0 otherwise. The token bucket starts at the
// share's static rate, so the slice is throttled from its first launch and
// keeps a sane rate without a daemon; vgpud's controller then corrects it.
func (b SliceBudget) Spec() (shm.SliceSpec, error) {
	qos, err := ParseQoS(string(b.QoS))
	if err != nil {
		return shm.SliceSpec{}, fmt.Errorf("slice %s: %w", b.ID, err)
	}
	if b.Priority < 0 || int64(b.Priority) > math.MaxUint32 {
		return shm.SliceSpec{}, fmt.Errorf("slice %s: priority %d out of range", b.ID, b.Priority)
	}
	spec := shm.SliceSpec{
		ID:       b.ID,
		Slots:    b.Slots,
		Devices:  make([]shm.DeviceBudget, len(b.Devices)),
		Priority: uint32(b.Priority),
		QoS:      qos.Code(),
		Policy:   shm.PolicyCap,
	}
	for i, d := range b.Devices {
		db, err := deviceBudget(d, b.Booked && qos.Guaranteed(), b.ContextOverhead)
		if err != nil {
			return shm.SliceSpec{}, fmt.Errorf("slice %s: device %d: %w", b.ID, i, err)
		}
		spec.Devices[i] = db
	}
	if err := spec.Validate(); err != nil {
		return shm.SliceSpec{}, err
	}
	return spec, nil
}

func deviceBudget(d SliceDevice, guaranteed bool, overhead uint64) (shm.DeviceBudget, error) {
	if d.Index < 0 || int64(d.Index) > math.MaxUint32 {
		return shm.DeviceBudget{}, fmt.Errorf("index %d out of range", d.Index)
	}
	bp, err := ShareBP(d.ComputePercent)
	if err != nil {
		return shm.DeviceBudget{}, err
	}
	b := shm.DeviceBudget{
		Index:           uint32(d.Index),
		UUID:            d.UUID,
		MemoryLimit:     d.MemoryBytes,
		ContextOverhead: overhead,
		ComputeShareBP:  bp,
	}
	if bp == 0 {
		b.ComputeShareBP = shm.MaxShareBP // no share asked: the whole device
	} else if guaranteed {
		b.ComputeFloorBP = bp
	}
	if guaranteed {
		b.MemoryGuaranteed = d.MemoryBytes
	}
	b.TokenRate, b.TokenBurst = shm.StaticTokenBucket(b.ComputeShareBP)
	return b, nil
}
