package api

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vgpu-project/vgpu/shm"
)

// This file is the one place where a slice request meets the shared-memory
// contract: the QoS names and the compute policies with their budget codes,
// the slice-id rule, the limits
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

// QoSClasses lists every class, the default first; qosCodes are their codes
// in the budget file, in the same order.
var (
	QoSClasses = []QoS{QoSGuaranteed, QoSBurstable, QoSBestEffort}
	qosCodes   = []uint32{shm.QoSGuaranteed, shm.QoSBurstable, shm.QoSBestEffort}
)

// ErrUnknownQoS is wrapped by ParseQoS's errors.
var ErrUnknownQoS = errors.New("unknown qos")

// ParseQoS reads a class name; "" is the default class, guaranteed.
func ParseQoS(s string) (QoS, error) { return parseName(s, QoSClasses, ErrUnknownQoS) }

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
func (q QoS) Code() uint32 { return codeOf(q, QoSClasses, qosCodes) }

// QoSOfCode names a budget file's QoS code ("unknown-N" for a code this build
// does not know, so a newer file still displays).
func QoSOfCode(code uint32) QoS { return nameOf(code, QoSClasses, qosCodes) }

// ComputePolicy is what a slice's compute share means to vgpud's controller
// (the budget's throttle policy, shm.Policy*). cap: the share is a ceiling, the
// slice never runs above it, even alone on the device. share: the share is a
// guarantee, and the slice may use capacity other slices leave idle. On the
// wire it is the policy's name. In a request the empty value means vgpud's
// default (its compute_policy setting); in a slice, a record or a budget it
// means cap (what every slice was before the policy could be chosen).
type ComputePolicy string

// The compute policies.
const (
	ComputePolicyCap   ComputePolicy = "cap"
	ComputePolicyShare ComputePolicy = "share"
)

// ComputePolicies lists every policy, the default first; policyCodes are their
// codes in the budget file, in the same order.
var (
	ComputePolicies = []ComputePolicy{ComputePolicyCap, ComputePolicyShare}
	policyCodes     = []uint32{shm.PolicyCap, shm.PolicyShare}
)

// ErrUnknownComputePolicy is wrapped by ParseComputePolicy's errors.
var ErrUnknownComputePolicy = errors.New("unknown compute policy")

// ParseComputePolicy reads a policy name; "" is cap.
func ParseComputePolicy(s string) (ComputePolicy, error) {
	return parseName(s, ComputePolicies, ErrUnknownComputePolicy)
}

// Normalized is the policy with the default, cap, spelled out.
func (p ComputePolicy) Normalized() ComputePolicy {
	if p == "" {
		return ComputePolicyCap
	}
	return p
}

// Code is the policy's code in the budget file (shm.Policy*). It must only be
// called on a policy ParseComputePolicy accepted.
func (p ComputePolicy) Code() uint32 { return codeOf(p, ComputePolicies, policyCodes) }

// ComputePolicyOfCode names a budget file's policy code ("unknown-N" for a
// code this build does not know, so a newer file still displays).
func ComputePolicyOfCode(code uint32) ComputePolicy {
	return nameOf(code, ComputePolicies, policyCodes)
}

// The names of the budget's enumerations (QoS, ComputePolicy): known lists the
// names, the default first, and codes their codes in the budget file.

// parseName reads one of known; "" is the default.
func parseName[T ~string](s string, known []T, unknown error) (T, error) {
	if s == "" {
		return known[0], nil
	}
	for _, k := range known {
		if T(s) == k {
			return k, nil
		}
	}
	want := make([]string, len(known))
	for i, k := range known {
		want[i] = string(k)
	}
	list := strings.Join(want[:len(want)-1], ", ") + " or " + want[len(want)-1]
	return "", fmt.Errorf("%w %q (want %s)", unknown, s, list)
}

// codeOf is the code of name v ("" is the default's).
func codeOf[T ~string](v T, known []T, codes []uint32) uint32 {
	for i, k := range known {
		if v == k {
			return codes[i]
		}
	}
	return codes[0]
}

// nameOf names a code ("unknown-N" for a code this build does not know).
func nameOf[T ~string](code uint32, known []T, codes []uint32) T {
	for i, c := range codes {
		if c == code {
			return known[i]
		}
	}
	return T(fmt.Sprintf("unknown-%d", code))
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
	// ComputePolicy is the throttle policy; "": cap.
	ComputePolicy ComputePolicy
	// Slots is the number of process slots; 0: shm.DefaultSlots.
	Slots int
	// ContextOverhead is charged per CUDA context on every device.
	ContextOverhead uint64
	// Booked: vgpud's allocator reserved what a guaranteed slice asks for, so
	// the budget records the guarantee. A slice made without a daemon
	// (`vgpuctl slice create`) reserves nothing and records none.
	Booked bool
	// Managed: vgpud's controller drives the slice's token rates, so libvgpu
	// charges launches their nominal cost from the first one
	// (shm.BudgetFlagManaged). A slice made without a daemon is not: libvgpu
	// then charges the device time it measures itself.
	Managed bool
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
	policy, err := ParseComputePolicy(string(b.ComputePolicy))
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
		Policy:   policy.Code(),
	}
	if b.Managed {
		spec.Flags |= shm.BudgetFlagManaged
	}
	for _, d := range b.Devices {
		if d.Elastic() {
			spec.Flags |= shm.BudgetFlagElastic
		}
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
		MemoryLimit:     d.LimitBytes(),
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
	if d.Elastic() {
		b.MemoryMax = d.MemoryMaxBytes
	}
	b.TokenRate, b.TokenBurst = shm.StaticTokenBucket(b.ComputeShareBP)
	return b, nil
}

// ErrInvalidRequest is wrapped by every error about a malformed request (a
// client error: HTTP 400). vgpud's allocator wraps the same value.
var ErrInvalidRequest = errors.New("invalid request")

// RequestError is a malformed AllocRequest: the field at fault (its JSON
// name) and why, in words. It wraps ErrInvalidRequest.
type RequestError struct {
	Field  string
	Reason string
}

func (e *RequestError) Error() string { return ErrInvalidRequest.Error() + ": " + e.Reason }

func (e *RequestError) Unwrap() error { return ErrInvalidRequest }

func badField(field, format string, args ...any) error {
	return &RequestError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks everything about a request that depends neither on the
// node's devices nor on what is allocated: the memory (bytes or a percent,
// exactly one), the compute share (ShareBP), the QoS class (ParseQoS), the
// compute policy (ParseComputePolicy; "" is vgpud's default), the
// priority (0..MaxUint32, what the budget records), the placement name, and
// the device count and uuid list (1..MaxSliceDevices, agreeing, no uuid
// twice). vgpud's allocator and vgpu-runtime both run it, so a request is
// refused with the same reason wherever it is made. The error is a
// *RequestError. The id and the owner are not checked here.
func (r AllocRequest) Validate() error { return r.ValidateOn(nil) }

// ValidateOn is Validate that also checks every pinned uuid with hasDevice
// (nil: not checked), at the point of the list where vgpud always has.
func (r AllocRequest) ValidateOn(hasDevice func(uuid string) bool) error {
	if err := r.validateMemory(); err != nil {
		return err
	}
	if err := r.validateSharing(); err != nil {
		return err
	}
	if err := r.Owner.ValidateLabels(); err != nil {
		return err
	}
	return r.validateDevices(hasDevice)
}

// ValidOwnerLabel reports whether key=value may be one of Owner.Labels.
func ValidOwnerLabel(key, value string) bool {
	switch key {
	case OwnerLabelNamespace, OwnerLabelPod, OwnerLabelContainer:
	default:
		return false
	}
	return value != "" && len(value) <= MaxOwnerLabelLen && utf8.ValidString(value)
}

// ValidateLabels checks Owner.Labels (ValidOwnerLabel for each).
func (o Owner) ValidateLabels() error {
	for k, v := range o.Labels {
		if !ValidOwnerLabel(k, v) {
			return badField("owner.labels", "owner label %q=%q: want %s, %s or %s, valid UTF-8 of 1..%d bytes",
				k, v, OwnerLabelNamespace, OwnerLabelPod, OwnerLabelContainer, MaxOwnerLabelLen)
		}
	}
	return nil
}

func (r *AllocRequest) validateMemory() error {
	switch {
	case r.MemoryBytes != 0 && r.MemoryPercent != 0:
		return badField("memory_bytes", "memory is asked both in bytes and in percent; give one")
	case r.MemoryBytes == 0 && r.MemoryPercent == 0:
		return badField("memory_bytes", "no memory asked: give memory in bytes or in percent of a device")
	case r.MemoryBytes == 0:
		if p := r.MemoryPercent; math.IsNaN(p) || p <= 0 || p > 100 {
			return badField("memory_percent", "memory percent %v out of range (0, 100]", p)
		}
	}
	if r.MemoryBytes != 0 && r.MemoryMaxBytes != 0 && r.MemoryMaxBytes < r.MemoryBytes {
		return badField("memory_max_bytes", "memory ceiling %d is below the memory asked %d", r.MemoryMaxBytes, r.MemoryBytes)
	}
	return nil
}

func (r *AllocRequest) validateSharing() error {
	if err := validateComputePercent("compute_percent", r.ComputePercent); err != nil {
		return err
	}
	if _, err := ParseQoS(string(r.QoS)); err != nil {
		return badField("qos", "%v", err)
	}
	if err := validateComputePolicy(r.ComputePolicy); err != nil {
		return err
	}
	if d := time.Duration(r.IdleRelease); d < 0 || d > MaxIdleRelease {
		return badField("idle_release", "idle release %v out of range [0, %v] (0 keeps the slice)", d, MaxIdleRelease)
	}
	if r.Priority < 0 {
		return badField("priority", "priority %d is negative", r.Priority)
	}
	if int64(r.Priority) > math.MaxUint32 {
		return badField("priority", "priority %d out of range (at most %d)", r.Priority, uint64(math.MaxUint32))
	}
	switch r.Placement {
	case "", PlacementBinpack, PlacementSpread:
	default:
		return badField("placement", "unknown placement %q (want %s or %s)", r.Placement, PlacementBinpack, PlacementSpread)
	}
	return nil
}

func (r *AllocRequest) validateDevices(hasDevice func(uuid string) bool) error {
	count := r.DeviceCount
	if count < 0 {
		return badField("device_count", "device count %d is negative", count)
	}
	if len(r.UUIDs) > 0 {
		if count == 0 {
			count = len(r.UUIDs)
		}
		if count != len(r.UUIDs) {
			return badField("uuids", "device count %d but %d uuids given", count, len(r.UUIDs))
		}
		seen := make(map[string]bool, len(r.UUIDs))
		for _, u := range r.UUIDs {
			if seen[u] {
				return badField("uuids", "uuid %s given twice", u)
			}
			seen[u] = true
			if hasDevice != nil && !hasDevice(u) {
				return badField("uuids", "no device with uuid %q on this node", u)
			}
		}
	}
	if count > MaxSliceDevices {
		return badField("device_count", "%d devices asked, a slice spans at most %d", count, MaxSliceDevices)
	}
	return nil
}

// validateComputePercent is the one rule for a compute share in a request
// (ShareBP's range and granularity), for an alloc and an update alike.
func validateComputePercent(field string, p float64) error {
	if _, err := ShareBP(p); err != nil {
		return badField(field, "%v", err)
	}
	return nil
}

// validateComputePolicy is the one rule for a compute policy in a request
// ("" is accepted: vgpud's default in an alloc, unchanged in an update).
func validateComputePolicy(p ComputePolicy) error {
	if _, err := ParseComputePolicy(string(p)); err != nil {
		return badField("compute_policy", "%v", err)
	}
	return nil
}

// Validate checks an update on its own (the slice's devices, owner and the
// books are vgpud's to check): something to change, one way of naming the
// share, every share and the policy by the same rules as an AllocRequest's,
// at most MaxOwnerPods pods. The error is a *RequestError.
func (u UpdateRequest) Validate() error {
	if u.ComputePercent == nil && u.DeviceComputePercent == nil && u.ComputePolicy == "" && u.PodUIDs == nil {
		return badField("compute_percent",
			"nothing to change: give compute_percent, device_compute_percent, compute_policy or pod_uids")
	}
	if u.PodUIDs != nil && len(*u.PodUIDs) > MaxOwnerPods {
		return badField("pod_uids", "%d pods, at most %d", len(*u.PodUIDs), MaxOwnerPods)
	}
	if u.ComputePercent != nil && u.DeviceComputePercent != nil {
		return badField("device_compute_percent", "the share is given both for every device and per device; give one")
	}
	if u.ComputePercent != nil {
		if err := validateComputePercent("compute_percent", *u.ComputePercent); err != nil {
			return err
		}
	}
	if u.DeviceComputePercent != nil && len(u.DeviceComputePercent) == 0 {
		return badField("device_compute_percent", "no device named")
	}
	uuids := make([]string, 0, len(u.DeviceComputePercent))
	for uuid := range u.DeviceComputePercent {
		uuids = append(uuids, uuid)
	}
	sort.Strings(uuids) // the same request always gets the same answer
	for _, uuid := range uuids {
		if err := validateComputePercent("device_compute_percent", u.DeviceComputePercent[uuid]); err != nil {
			var re *RequestError
			if errors.As(err, &re) {
				re.Reason = "device " + uuid + ": " + re.Reason
			}
			return err
		}
	}
	return validateComputePolicy(u.ComputePolicy)
}
