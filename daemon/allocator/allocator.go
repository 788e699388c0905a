// Package allocator carves the node's GPUs into slices: it validates a request,
// places it by policy and keeps the books of what every slice holds. It is pure
// (no I/O) and safe for concurrent use (one mutex; every operation is a few
// comparisons per device).
//
// # Rules
//
// A slice asks, per device, for memory (bytes, or a percent of each chosen
// device's total, rounded down to a whole MiB) and optionally a compute share
// (percent), on DeviceCount devices (or on the devices named by UUIDs). A slice
// that asks no compute share gets ComputePercent 0 in its placement: it may use
// the whole device (compute_share_bp 10000) and reserves none of it, so slices
// carved by memory alone can share a GPU.
//
//   - guaranteed slices reserve what they ask: on every device, the guaranteed
//     memory of all slices stays <= the device's memory and their (asked)
//     compute shares stay <= 100%. These are the budgets never lent away
//     (DESIGN §5).
//   - burstable and best-effort slices reserve nothing: their memory is a cap,
//     which must be <= the device's memory, and their compute share is a cap
//     too; neither counts against the guaranteed sums, so they can overcommit a
//     device. (Lending and borrowing between them is the elastic-memory work of
//     DESIGN §5; the enforcer's backstop still holds every slice to its cap.)
//
// Placement looks at each device's free guaranteed memory (memory minus the
// guaranteed memory of its slices): binpack takes the device with the LEAST that
// still fits the request (fill one GPU before starting another, keeping whole
// GPUs free for big requests), spread the one with the MOST (spread the load);
// ties go to the lowest index. A slice of N devices takes the best N devices
// that fit, listed in index order; pinned devices (UUIDs) are used in the order
// given. A request that cannot be placed is refused with a RefusedError naming
// each device and what it lacked.
package allocator

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/shm"
)

const (
	mib = 1 << 20
	// fullBP is a whole device's compute, in basis points: shares are summed as
	// integers so that 3 x 33.33% never drifts over 100% in floating point.
	fullBP = shm.MaxShareBP
	// MaxSliceDevices is the most devices one slice may span (the region files'
	// per-device arrays).
	MaxSliceDevices = api.MaxSliceDevices
)

// ErrInvalidRequest is wrapped by every error about a malformed request (a
// client error: HTTP 400). It is api.ErrInvalidRequest, which the request
// checks shared with vgpu-runtime (api.AllocRequest.Validate) wrap.
var ErrInvalidRequest = api.ErrInvalidRequest

// ErrExists is wrapped when the slice id is already in use (HTTP 409).
var ErrExists = errors.New("slice already exists")

// RefusedError says why a well-formed request does not fit the node: one reason
// per device that lacked something, then what the request as a whole needed.
type RefusedError struct {
	Reasons []string
}

func (e *RefusedError) Error() string {
	return "slice does not fit: " + strings.Join(e.Reasons, "; ")
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
}

// device is one GPU and the sums of the slices it carries.
type device struct {
	devices.Device
	guaranteedBytes uint64 // memory of guaranteed slices: <= MemoryBytes
	allocatedBytes  uint64 // memory budgets of all slices (may exceed MemoryBytes)
	guaranteedBP    int    // compute shares of guaranteed slices: <= fullBP
	slices          int
}

func (d *device) freeGuaranteed() uint64 { return d.MemoryBytes - d.guaranteedBytes }

// share is what one slice holds on one device.
type share struct {
	dev   int // index into Allocator.devs
	bytes uint64
	bp    int
}

type slice struct {
	guaranteed bool
	shares     []share
}

// Allocator keeps the books of a node's slices.
type Allocator struct {
	placement string // the node's default policy

	mu     sync.Mutex
	devs   []device
	byUUID map[string]int
	slices map[string]*slice
}

// New returns an allocator for devs (all must have distinct, non-empty uuids
// and some memory). defaultPlacement is the node's policy, "" meaning binpack.
func New(devs []devices.Device, defaultPlacement string) (*Allocator, error) {
	switch defaultPlacement {
	case "":
		defaultPlacement = api.PlacementBinpack
	case api.PlacementBinpack, api.PlacementSpread:
	default:
		return nil, fmt.Errorf("new allocator: unknown placement policy %q (want %s or %s)",
			defaultPlacement, api.PlacementBinpack, api.PlacementSpread)
	}
	a := &Allocator{
		placement: defaultPlacement,
		devs:      make([]device, len(devs)),
		byUUID:    make(map[string]int, len(devs)),
		slices:    make(map[string]*slice),
	}
	for i, d := range devs {
		if d.UUID == "" {
			return nil, fmt.Errorf("new allocator: device %d has no uuid", d.Index)
		}
		if d.MemoryBytes == 0 {
			return nil, fmt.Errorf("new allocator: device %s has no memory", d.UUID)
		}
		if _, dup := a.byUUID[d.UUID]; dup {
			return nil, fmt.Errorf("new allocator: uuid %s listed twice", d.UUID)
		}
		a.byUUID[d.UUID] = i
		a.devs[i] = device{Device: d}
	}
	return a, nil
}

// Placement is the node's default policy.
func (a *Allocator) Placement() string { return a.placement }

// request is a validated AllocRequest.
type request struct {
	count      int
	pinned     []string // uuids, in the order asked; nil: placed by policy
	bytes      uint64   // 0: percent
	percent    float64
	max        uint64 // elastic ceiling per device; 0: none
	bp         int    // 0: no compute share asked (whole device, nothing reserved)
	guaranteed bool
	placement  string
}

// validate checks everything about req that does not depend on what is
// allocated, then takes what the placement needs from it. The checks are
// api.AllocRequest.ValidateOn's (vgpu-runtime runs the same ones, so both
// refuse a request with the same reason), in the order the errors have always
// come in: the memory, then how the slice shares a device, then which devices;
// this allocator adds that a pinned uuid is one of its devices (byUUID never
// changes after New, so no lock is needed).
func (a *Allocator) validate(req *api.AllocRequest) (request, error) {
	if err := req.ValidateOn(a.hasDevice); err != nil {
		return request{}, err
	}
	r := request{placement: req.Placement}
	r.takeMemory(req)
	a.takeSharing(req, &r)
	r.takeDevices(req)
	return r, nil
}

func (a *Allocator) hasDevice(uuid string) bool {
	_, ok := a.byUUID[uuid]
	return ok
}

// takeMemory takes the memory asked per device: bytes or a percent of each
// chosen device (a percent is turned into bytes only at placement, where the
// device is known).
func (r *request) takeMemory(req *api.AllocRequest) {
	if req.MemoryBytes != 0 {
		r.bytes = req.MemoryBytes
	} else {
		r.percent = req.MemoryPercent
	}
	r.max = req.MemoryMaxBytes
}

// takeSharing takes how the slice shares a device with others: its compute
// share, its QoS class (whether it reserves) and the placement policy (the
// node's when the request names none).
func (a *Allocator) takeSharing(req *api.AllocRequest, r *request) {
	// No compute share asked: the slice may use the whole device and reserves
	// none of it (bp 0), so slices carved by memory alone can share a GPU.
	bp, _ := api.ShareBP(req.ComputePercent) // validated
	r.bp = int(bp)
	r.guaranteed = req.QoS.Guaranteed()
	if r.placement == "" {
		r.placement = a.placement
	}
}

// takeDevices takes how many devices the slice spans and, when it names
// them, which. No count and no uuids means one device.
func (r *request) takeDevices(req *api.AllocRequest) {
	r.count = req.DeviceCount
	if len(req.UUIDs) > 0 {
		r.count = len(req.UUIDs)
		r.pinned = req.UUIDs
	}
	if r.count == 0 {
		r.count = 1
	}
}

// need is the memory the request asks on d.
func (r *request) need(d *device) uint64 {
	if r.percent == 0 {
		return r.bytes
	}
	b := uint64(float64(d.MemoryBytes) * r.percent / 100)
	return b &^ (mib - 1)
}

// fit says what d lacks for r (nil: it fits). Callers hold a.mu.
func (r *request) fit(d *device) []string {
	need := r.need(d)
	name := fmt.Sprintf("%s (index %d)", d.UUID, d.Index)
	if need == 0 {
		return []string{fmt.Sprintf("%s: %v%% of %s is less than 1MiB",
			name, r.percent, sizeFloor(d.MemoryBytes))}
	}
	var lacks []string
	if r.guaranteed {
		if free := d.freeGuaranteed(); need > free {
			lacks = append(lacks, fmt.Sprintf("%s: %s guaranteed memory free, %s asked",
				name, sizeFloor(free), sizeCeil(need)))
		}
		if free := fullBP - d.guaranteedBP; r.bp > 0 && r.bp > free {
			lacks = append(lacks, fmt.Sprintf("%s: %s compute free, %s asked",
				name, percent(free), percent(r.bp)))
		}
	} else if need > d.MemoryBytes {
		lacks = append(lacks, fmt.Sprintf("%s: %s memory, %s asked",
			name, sizeFloor(d.MemoryBytes), sizeCeil(need)))
	}
	if r.max != 0 && r.max < need {
		lacks = append(lacks, fmt.Sprintf("%s: memory ceiling %s is below the %s asked", name, sizeCeil(r.max), sizeCeil(need)))
	} else if r.max > d.MemoryBytes {
		lacks = append(lacks, fmt.Sprintf("%s: memory ceiling %s is more than the device's %s",
			name, sizeCeil(r.max), sizeFloor(d.MemoryBytes)))
	}
	return lacks
}

// Allocate places a slice named id and books it. The result lists the slice's
// share of each device it spans. Errors: ErrInvalidRequest (wrapped) for a
// malformed request, ErrExists for an id in use, *RefusedError when it does not
// fit.
func (a *Allocator) Allocate(id string, req api.AllocRequest) ([]api.SliceDevice, error) {
	if id == "" {
		return nil, invalid("empty slice id")
	}
	r, err := a.validate(&req)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.slices[id]; ok {
		return nil, fmt.Errorf("slice %s: %w", id, ErrExists)
	}
	if r.count > len(a.devs) {
		return nil, &RefusedError{Reasons: []string{
			fmt.Sprintf("needs %s, node has %d", plural(r.count, "device"), len(a.devs))}}
	}

	var chosen []int
	if r.pinned != nil {
		var reasons []string
		for _, u := range r.pinned {
			i := a.byUUID[u]
			if lacks := r.fit(&a.devs[i]); lacks != nil {
				reasons = append(reasons, lacks...)
			}
			chosen = append(chosen, i)
		}
		if reasons != nil {
			return nil, &RefusedError{Reasons: reasons}
		}
	} else {
		var reasons []string
		for i := range a.devs {
			if lacks := r.fit(&a.devs[i]); lacks != nil {
				reasons = append(reasons, lacks...)
				continue
			}
			chosen = append(chosen, i)
		}
		if len(chosen) < r.count {
			if r.count > 1 {
				verb := "have"
				if len(chosen) == 1 {
					verb = "has"
				}
				reasons = append(reasons, fmt.Sprintf("needs %d devices with room, %d %s it",
					r.count, len(chosen), verb))
			}
			return nil, &RefusedError{Reasons: reasons}
		}
		a.order(chosen, r.placement)
		chosen = chosen[:r.count]
		slices.Sort(chosen)
	}

	s := &slice{guaranteed: r.guaranteed, shares: make([]share, len(chosen))}
	out := make([]api.SliceDevice, len(chosen))
	for k, i := range chosen {
		d := &a.devs[i]
		s.shares[k] = share{dev: i, bytes: r.need(d), bp: r.bp}
		out[k] = api.SliceDevice{
			Index:          d.Index,
			UUID:           d.UUID,
			MemoryBytes:    s.shares[k].bytes,
			ComputePercent: api.SharePercent(uint32(r.bp)),
		}
		if r.max > s.shares[k].bytes {
			out[k].MemoryMaxBytes = r.max
		}
	}
	a.book(id, s)
	return out, nil
}

// order sorts candidate devices best first for the policy. Callers hold a.mu.
func (a *Allocator) order(idx []int, placement string) {
	sort.SliceStable(idx, func(x, y int) bool {
		fx, fy := a.devs[idx[x]].freeGuaranteed(), a.devs[idx[y]].freeGuaranteed()
		if fx != fy {
			if placement == api.PlacementSpread {
				return fx > fy
			}
			return fx < fy
		}
		return a.devs[idx[x]].Index < a.devs[idx[y]].Index
	})
}

// book adds s to the sums. Callers hold a.mu and have checked that it fits.
func (a *Allocator) book(id string, s *slice) {
	for _, sh := range s.shares {
		d := &a.devs[sh.dev]
		d.allocatedBytes += sh.bytes
		d.slices++
		if s.guaranteed {
			d.guaranteedBytes += sh.bytes
			d.guaranteedBP += sh.bp
		}
	}
	a.slices[id] = s
}

// Restore books a slice that was allocated before a restart, exactly as
// recorded (devices matched by uuid, by index when the record has none). It
// refuses what this node cannot carry any more (an unknown device, or
// guaranteed sums that would overflow a device, which only happens if the
// hardware changed), leaving the books as they were; the caller decides what
// to do with such a slice.
func (a *Allocator) Restore(id string, devs []api.SliceDevice, qos api.QoS) error {
	if id == "" {
		return invalid("empty slice id")
	}
	if len(devs) == 0 || len(devs) > MaxSliceDevices {
		return invalid("slice %s: %d devices, want 1..%d", id, len(devs), MaxSliceDevices)
	}
	if _, err := api.ParseQoS(string(qos)); err != nil {
		return invalid("slice %s: %v", id, err)
	}
	guaranteed := qos.Guaranteed()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.slices[id]; ok {
		return fmt.Errorf("restore slice %s: %w", id, ErrExists)
	}
	s := &slice{guaranteed: guaranteed, shares: make([]share, len(devs))}
	// A device listed twice would be checked against sums that do not yet
	// include its first share.
	seen := make(map[int]bool, len(devs))
	for k, sd := range devs {
		i, err := a.find(sd)
		if err != nil {
			return fmt.Errorf("restore slice %s: %w", id, err)
		}
		if seen[i] {
			return invalid("slice %s lists device %s twice", id, a.devs[i].UUID)
		}
		d := &a.devs[i]
		if sd.MemoryBytes == 0 {
			return invalid("slice %s: no memory on device %s", id, d.UUID)
		}
		shareBP, err := api.ShareBP(sd.ComputePercent)
		if err != nil {
			return invalid("slice %s: device %s: %v", id, d.UUID, err)
		}
		bp := int(shareBP)
		if sd.MemoryBytes > d.MemoryBytes {
			return &RefusedError{Reasons: []string{fmt.Sprintf("%s (index %d): %s memory, slice %s holds %s",
				d.UUID, d.Index, sizeFloor(d.MemoryBytes), id, sizeCeil(sd.MemoryBytes))}}
		}
		if guaranteed {
			if sd.MemoryBytes > d.freeGuaranteed() {
				return &RefusedError{Reasons: []string{fmt.Sprintf("%s (index %d): %s guaranteed memory free, slice %s holds %s",
					d.UUID, d.Index, sizeFloor(d.freeGuaranteed()), id, sizeCeil(sd.MemoryBytes))}}
			}
			if bp > fullBP-d.guaranteedBP {
				return &RefusedError{Reasons: []string{fmt.Sprintf("%s (index %d): %s compute free, slice %s holds %s",
					d.UUID, d.Index, percent(fullBP-d.guaranteedBP), id, percent(bp))}}
			}
		}
		seen[i] = true
		s.shares[k] = share{dev: i, bytes: sd.MemoryBytes, bp: bp}
	}
	a.book(id, s)
	return nil
}

// ErrNotBooked is wrapped by SetCompute for a slice the allocator does not hold.
var ErrNotBooked = errors.New("slice not booked")

// SetCompute changes the compute share a booked slice holds on each of its
// devices (percents, in the order of its devices; 0: no share). A guaranteed
// slice's new shares are checked like an allocation's: with the other slices'
// shares they stay <= 100% on every device, else a *RefusedError naming each
// device short of compute, and nothing changes. Lowering a share always fits,
// which is what lets vgpud grow a booking before it records a change and
// shrink it after (daemon/update.go).
func (a *Allocator) SetCompute(id string, percents []float64) error {
	bps := make([]int, len(percents))
	for k, p := range percents {
		bp, err := api.ShareBP(p)
		if err != nil {
			return invalid("slice %s: device %d: %v", id, k, err)
		}
		bps[k] = int(bp)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.slices[id]
	if !ok {
		return fmt.Errorf("slice %s: %w", id, ErrNotBooked)
	}
	if len(bps) != len(s.shares) {
		return invalid("slice %s spans %d devices, %d shares given", id, len(s.shares), len(bps))
	}
	if s.guaranteed {
		var reasons []string
		for k, sh := range s.shares {
			d := &a.devs[sh.dev]
			if free := fullBP - d.guaranteedBP + sh.bp; bps[k] > free {
				reasons = append(reasons, fmt.Sprintf("%s (index %d): %s compute free beside the other slices, %s asked",
					d.UUID, d.Index, percent(free), percent(bps[k])))
			}
		}
		if reasons != nil {
			return &RefusedError{Reasons: reasons}
		}
	}
	for k := range s.shares {
		sh := &s.shares[k]
		if s.guaranteed {
			a.devs[sh.dev].guaranteedBP += bps[k] - sh.bp
		}
		sh.bp = bps[k]
	}
	return nil
}

// find returns the position of the device a recorded share names. Callers hold a.mu.
func (a *Allocator) find(sd api.SliceDevice) (int, error) {
	if sd.UUID != "" {
		i, ok := a.byUUID[sd.UUID]
		if !ok {
			return 0, fmt.Errorf("%w: no device with uuid %s on this node", ErrInvalidRequest, sd.UUID)
		}
		return i, nil
	}
	for i := range a.devs {
		if a.devs[i].Index == sd.Index {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%w: no device with index %d on this node", ErrInvalidRequest, sd.Index)
}

// Release returns a slice's shares; false when there is no such slice.
func (a *Allocator) Release(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.slices[id]
	if !ok {
		return false
	}
	for _, sh := range s.shares {
		d := &a.devs[sh.dev]
		d.allocatedBytes -= sh.bytes
		d.slices--
		if s.guaranteed {
			d.guaranteedBytes -= sh.bytes
			d.guaranteedBP -= sh.bp
		}
	}
	delete(a.slices, id)
	return true
}

// Has reports whether a slice with this id is booked.
func (a *Allocator) Has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.slices[id]
	return ok
}

// Devices returns every device with the sums of the slices on it, in index order.
func (a *Allocator) Devices() []api.Device {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]api.Device, len(a.devs))
	for i := range a.devs {
		d := &a.devs[i]
		out[i] = d.API()
		out[i].GuaranteedBytes = d.guaranteedBytes
		out[i].AllocatedBytes = d.allocatedBytes
		out[i].ComputePercent = api.SharePercent(uint32(d.guaranteedBP))
		out[i].Slices = d.slices
	}
	return out
}

// sizeFloor and sizeCeil render a byte count with one decimal in the largest
// binary unit it reaches, rounded down (what is free is never overstated) or up
// (what is asked is never understated), so a refusal never reads "2.0GiB free,
// 2.0GiB asked".
func sizeFloor(n uint64) string { return size(n, false) }
func sizeCeil(n uint64) string  { return size(n, true) }

func size(n uint64, up bool) string {
	units := []struct {
		suffix string
		size   uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.size {
			// n*10/size exactly, without overflow for any n.
			hi, lo := bits.Mul64(n, 10)
			tenths, rem := bits.Div64(hi, lo, u.size)
			if up && rem != 0 {
				tenths++
			}
			return strconv.FormatUint(tenths/10, 10) + "." + strconv.FormatUint(tenths%10, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

// plural renders "1 device", "3 devices".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// percent renders basis points as a percentage ("30%", "33.33%").
func percent(bp int) string {
	return strconv.FormatFloat(float64(bp)/100, 'f', -1, 64) + "%"
}
