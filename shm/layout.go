// Package shm is the Go side of the shared-memory contract between vgpud,
// libvgpu and the tools: it creates, opens, validates, reads, updates and repairs
// the two region files of a slice (budget and usage).
//
// The layout is defined by libvgpu/include/vgpu_shm.h, the single source of truth.
// The structs in this file mirror it byte for byte; abi_test.go compares every
// field's offset and size, every struct's size and every constant with what the C
// compiler computes from the header, so the two cannot drift. When the header
// changes, change this file the same way and the test says whether they agree.
//
// Every struct below uses only fixed-size integers and arrays laid out in natural
// alignment with no implicit padding, which Go and C (x86-64 and arm64 SysV) lay out
// identically. Each field's `c` tag names the C member it mirrors; abi_test
// matches fields by it. The files are little-endian: they are only ever shared between
// processes on one host.
package shm

import "unsafe"

// Constants mirrored from vgpu_shm.h (names without the VGPU_ prefix).
const (
	// BudgetMagic is "VGPUBDGT" read as a little-endian uint64.
	BudgetMagic uint64 = 0x5447444255504756
	// UsageMagic is "VGPUUSAG" read as a little-endian uint64.
	UsageMagic uint64 = 0x4741535555504756

	// ABIMajor changes when the layout changes incompatibly; readers refuse
	// any other major.
	ABIMajor = 1
	// ABIMinor changes when reserved fields gain meaning; readers accept any
	// minor of their major.
	ABIMinor = 3

	// MaxDevices is the length of the per-device arrays (devices one slice may span).
	MaxDevices = 16
	// DefaultSlots is the number of process slots CreateSlice makes when the spec
	// says 0.
	DefaultSlots = 1024
	// MaxSlots is the largest slot count a reader accepts.
	MaxSlots = 65536
	// UUIDLen is the size of the uuid field including its terminating NUL.
	UUIDLen = 64
	// SliceIDLen is the size of the slice_id field including its terminating NUL.
	SliceIDLen = 64

	// BudgetFile and UsageFile are the region file names inside a slice directory.
	BudgetFile = "budget"
	UsageFile  = "usage"

	// ContainerSliceDir is where the runtime mounts a container's slice; libvgpu
	// looks there first and, when it exists, ignores VGPU_SLICE_DIR.
	ContainerSliceDir = "/run/vgpu/slice"
)

// TokenWaveNs is VGPU_TOKEN_WAVE_NS: the tokens (estimated device-ns) libvgpu
// charges per wave of blocks (ceil(blocks/SMs)) of a launch. The estimate only has
// to be proportional to real device time: the controller scales token rates by
// feedback (controller.go).
const TokenWaveNs = 10000

// MarkerStride is VGPU_MARKER_STRIDE: libvgpu records a completion marker
// whenever a launch's ticket crosses a multiple of this many tokens.
const MarkerStride = 1 << 21

// The default token burst (VGPU_TOKEN_BURST_DIV, VGPU_TOKEN_BURST_MIN_WAVES):
// see DefaultTokenBurst.
const (
	TokenBurstDiv      = 50
	TokenBurstMinWaves = 4
)

// QoS classes (budget.qos).
const (
	QoSGuaranteed = 0
	QoSBurstable  = 1
	QoSBestEffort = 2
)

// Throttle policies (budget.policy).
const (
	// PolicyCap: never above the share, even alone on the device.
	PolicyCap = 0
	// PolicyShare: the share is a guarantee; idle capacity may be used.
	PolicyShare = 1
)

// Budget flags (budget.flags).
const (
	// BudgetFlagElastic: the slice may ask vgpud for more memory on OOM.
	BudgetFlagElastic = 0x1
	// BudgetFlagManaged: vgpud's controller sets the slice's token rates from
	// driver measurements, so libvgpu charges launches at the nominal wave
	// cost; without it libvgpu charges the device time it measured itself.
	BudgetFlagManaged = 0x2

	budgetKnownFlags = BudgetFlagElastic | BudgetFlagManaged
)

// Slot owner encoding: owner = (pid << SlotPIDShift) | state; 0 means free.
const (
	SlotFree     = 0
	SlotClaiming = 1 // owned, identity being written
	SlotLive     = 2 // owned, identity valid
	// SlotReclaiming: the owner was judged dead and a reclaimer is returning its
	// charge; see VGPU_SLOT_RECLAIMING.
	SlotReclaiming = 3
	SlotStateMask  = 0xff
	SlotPIDShift   = 8
)

// ShmHeader mirrors struct vgpu_header: the self-describing 64-byte header that
// starts both files.
type ShmHeader struct {
	Magic       uint64    `c:"magic"`
	ABIMajor    uint16    `c:"abi_major"`
	ABIMinor    uint16    `c:"abi_minor"`
	HeaderSize  uint32    `c:"header_size"`
	TotalSize   uint64    `c:"total_size"`
	DeviceCount uint32    `c:"device_count"`
	SlotCount   uint32    `c:"slot_count"`
	MaxDevices  uint32    `c:"max_devices"`
	Reserved0   uint32    `c:"reserved0"`
	Reserved    [3]uint64 `c:"reserved"`
}

// ShmBudgetDevice mirrors struct vgpu_budget_device (192 bytes).
type ShmBudgetDevice struct {
	UUID             [UUIDLen]byte `c:"uuid"`
	Index            uint32        `c:"index"`
	Flags            uint32        `c:"flags"`
	MemoryLimit      uint64        `c:"memory_limit"`
	MemoryGuaranteed uint64        `c:"memory_guaranteed"`
	ContextOverhead  uint64        `c:"context_overhead"`
	ComputeShareBP   uint32        `c:"compute_share_bp"`
	ComputeFloorBP   uint32        `c:"compute_floor_bp"`
	TokenRate        uint64        `c:"token_rate"`
	TokenBurst       uint64        `c:"token_burst"`
	ElasticGrantSeq  uint64        `c:"elastic_grant_seq"`
	MemoryMax        uint64        `c:"memory_max"` // ABI 1.3
	Reserved         [7]uint64     `c:"reserved"`
}

// ShmBudget mirrors struct vgpu_budget: the whole budget file.
type ShmBudget struct {
	Hdr           ShmHeader                   `c:"hdr"`
	Generation    uint64                      `c:"generation"`
	SliceID       [SliceIDLen]byte            `c:"slice_id"`
	Priority      uint32                      `c:"priority"`
	QoS           uint32                      `c:"qos"`
	Policy        uint32                      `c:"policy"`
	Flags         uint32                      `c:"flags"`
	CreatedUnixNs uint64                      `c:"created_unix_ns"`
	Reserved      [12]uint64                  `c:"reserved"`
	Dev           [MaxDevices]ShmBudgetDevice `c:"dev"`
}

// ShmUsageDevice mirrors struct vgpu_usage_device (128 bytes).
type ShmUsageDevice struct {
	UsedBytes           uint64    `c:"used_bytes"`
	PeakBytes           uint64    `c:"peak_bytes"`
	RefusedAllocs       uint64    `c:"refused_allocs"`
	ElasticRequestBytes uint64    `c:"elastic_request_bytes"`
	ElasticRequestSeq   uint64    `c:"elastic_request_seq"`
	Tokens              int64     `c:"tokens"`
	LastRefillNs        uint64    `c:"last_refill_ns"`
	Launches            uint64    `c:"launches"`
	ThrottledNs         uint64    `c:"throttled_ns"`
	TokenSpent          uint64    `c:"token_spent"`        // ABI 1.1
	TokenRefilled       uint64    `c:"token_refilled"`     // ABI 1.1
	TokenDone           uint64    `c:"token_done"`         // ABI 1.2
	SampledTokens       uint64    `c:"sampled_tokens"`     // ABI 1.2
	SampledNs           uint64    `c:"sampled_ns"`         // ABI 1.2
	InflightWaitedNs    uint64    `c:"inflight_waited_ns"` // ABI 1.2
	Reserved            [1]uint64 `c:"reserved"`
}

// ShmSlot mirrors struct vgpu_slot: one process (256 bytes).
type ShmSlot struct {
	Owner     uint64             `c:"owner"`
	PID       uint64             `c:"pid"`
	PIDNsIno  uint64             `c:"pidns_ino"`
	StartTime uint64             `c:"start_time"`
	HostPID   uint64             `c:"host_pid"`
	Contexts  uint64             `c:"contexts"`
	Reserved0 [2]uint64          `c:"reserved0"`
	UsedBytes [MaxDevices]uint64 `c:"used_bytes"`
	Reserved  [8]uint64          `c:"reserved"`
}

// ShmUsage mirrors the fixed part of struct vgpu_usage; SlotCount ShmSlot
// entries follow it in the file (the C flexible array member `slots`).
type ShmUsage struct {
	Hdr         ShmHeader                  `c:"hdr"`
	AttachCount uint64                     `c:"attach_count"`
	Reserved    [23]uint64                 `c:"reserved"`
	Dev         [MaxDevices]ShmUsageDevice `c:"dev"`
}

// Sizes of the files' parts, derived from the mirrors (checked against the C
// sizeof values by abi_test.go).
const (
	headerSize      = uint64(unsafe.Sizeof(ShmHeader{}))
	slotSize        = uint64(unsafe.Sizeof(ShmSlot{}))
	usageFixedSize  = uint64(unsafe.Sizeof(ShmUsage{}))
	budgetFileSize  = uint64(unsafe.Sizeof(ShmBudget{}))
	usageSlotsStart = usageFixedSize
)

// BudgetSize is VGPU_BUDGET_SIZE: the exact size of a budget file.
const BudgetSize = budgetFileSize

// UsageSize is VGPU_USAGE_SIZE(slots): the exact size of a usage file with the
// given number of slots.
func UsageSize(slots int) uint64 {
	return usageFixedSize + uint64(slots)*slotSize
}

// SlotOwner encodes a slot owner word the way libvgpu writes it.
func SlotOwner(pid int, state uint64) uint64 {
	return uint64(pid)<<SlotPIDShift | state&SlotStateMask
}

// cString returns the bytes of a NUL-terminated fixed field up to the first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
