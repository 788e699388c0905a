// Package api holds the wire types of vgpud's HTTP+JSON API, served on a unix
// socket (default /run/vgpu/vgpud.sock, mode 0600), and a small client for it.
// The server is in package daemon; vgpuctl, vgpu-runtime and vgpu-bench are
// clients. Field names are the JSON contract: add fields, never rename them.
//
// Routes (all JSON):
//
//	GET    /v1/health          Health
//	GET    /v1/devices         []Device
//	GET    /v1/slices          []Slice
//	POST   /v1/slices          AllocRequest -> 201 Slice | 4xx/5xx Error
//	GET    /v1/slices/{id}     Slice | 404 Error
//	PATCH  /v1/slices/{id}     UpdateRequest -> Slice | 400/404/409/422 Error (a live slice's compute share, policy)
//	DELETE /v1/slices/{id}     204 | 404 Error
//	GET    /v1/top             []SliceUsage
//	GET    /v1/events          []ElasticEvent (the latest elastic-memory decisions)
//	GET    /v1/quarantine                   []QuarantinedSlice
//	DELETE /v1/quarantine/{name}            204 | 404 Error (release: frees its booking, removes its files)
//	POST   /v1/quarantine/{name}/restore    Slice | 404/409/422 Error (live again, rebuilt from its budget)
//
// A quarantine {name} is a QuarantinedSlice's Name, or its slice id when one
// entry only has it.
package api

import (
	"time"

	"github.com/vgpu-project/vgpu/internal/units"
)

// DefaultSocket is where vgpud listens unless told otherwise.
const DefaultSocket = "/run/vgpu/vgpud.sock"

// Placement policies: binpack fills the fullest device that fits first (keeps
// whole GPUs free), spread picks the emptiest (spreads load).
const (
	PlacementBinpack = "binpack"
	PlacementSpread  = "spread"
)

// Owner kinds: what keeps a slice alive. When the owner is gone, vgpud releases
// the slice.
const (
	OwnerNone      = ""          // released only by an explicit DELETE
	OwnerPID       = "pid"       // a host process (vgpuctl run)
	OwnerContainer = "container" // a container (vgpu-runtime); released when it is gone
	// OwnerClaim: a Kubernetes ResourceClaim (vgpu-dra). Like OwnerNone, vgpud
	// never releases it on its own — no liveness check applies, since the
	// claim's pods come and go while it stays prepared — only the DRA
	// plugin's unprepare (DELETE) does. The kind lets the plugin find and
	// re-adopt its slices after a restart.
	OwnerClaim = "claim"
)

// Owner says what a slice belongs to.
type Owner struct {
	Kind string `json:"kind,omitempty"`
	// PID and StartTime identify a host process (start time in clock ticks
	// since boot, /proc/PID/stat field 22), so a reused pid is not mistaken for
	// the owner. StartTime 0: vgpud reads it when the slice is created.
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"`
	// ContainerID is the container's id (vgpu-runtime).
	ContainerID string `json:"container_id,omitempty"`
	// RuncRoot is runc's state dir the container was created under (runc
	// --root; vgpu-runtime records it): while <RuncRoot>/<ContainerID> exists
	// the container exists. Empty: runc's default, /run/runc.
	RuncRoot string `json:"runc_root,omitempty"`
	// ClaimUID, ClaimNamespace and ClaimName identify a ResourceClaim
	// (OwnerClaim; the uid is required, namespace and name are for people).
	ClaimUID       string `json:"claim_uid,omitempty"`
	ClaimNamespace string `json:"claim_namespace,omitempty"`
	ClaimName      string `json:"claim_name,omitempty"`
	// PodUIDs (OwnerClaim) are the pods the claim was reserved for when it
	// was prepared: the processes the kernel places in their cgroups are the
	// slice's members (what the backstop judges), as a container's are for
	// OwnerContainer. At most MaxOwnerPods, each of [0-9a-zA-Z-].
	PodUIDs []string `json:"pod_uids,omitempty"`
	// Labels is who the slice serves in Kubernetes terms, recorded with the
	// slice and put on its metrics: OwnerLabelNamespace, OwnerLabelPod and
	// OwnerLabelContainer (no other key), each valid UTF-8 of at most
	// MaxOwnerLabelLen bytes. vgpu-runtime copies them from the CRI
	// annotations (containerd's and CRI-O's). Optional, any owner kind.
	Labels map[string]string `json:"labels,omitempty"`
}

// The keys of Owner.Labels (they are the metrics' label names too, as
// dcgm-exporter names them).
const (
	OwnerLabelNamespace = "namespace"
	OwnerLabelPod       = "pod"
	OwnerLabelContainer = "container"
)

// MaxOwnerPods bounds Owner.PodUIDs (a claim is reserved for at most 256
// consumers).
const MaxOwnerPods = 256

// MaxOwnerLabelLen bounds an Owner.Labels value (Kubernetes' longest name, a
// pod's, is 253 bytes).
const MaxOwnerLabelLen = 253

// AllocRequest asks for a slice. Exactly one of MemoryBytes and MemoryPercent
// is set; the memory is per device.
type AllocRequest struct {
	// ID names the slice (vgpu-runtime uses the container id). Empty: vgpud
	// generates one. An ID already in use is refused (409).
	ID            string  `json:"id,omitempty"`
	MemoryBytes   uint64  `json:"memory_bytes,omitempty"`
	MemoryPercent float64 `json:"memory_percent,omitempty"`
	// ComputePercent is the compute share per device, 0 < p <= 100. 0 asks for
	// no share: the slice is not throttled and reserves no compute, so
	// memory-only slices can share a GPU. An explicit share is a cap, and for a
	// guaranteed slice also a reservation (their sum on a device is <= 100).
	ComputePercent float64 `json:"compute_percent,omitempty"`
	// DeviceCount is how many devices the slice spans; 0 means 1 (or len(UUIDs)).
	DeviceCount int `json:"device_count,omitempty"`
	// UUIDs pins the slice to these devices.
	UUIDs     []string `json:"uuids,omitempty"`
	Priority  int      `json:"priority,omitempty"`
	QoS       QoS      `json:"qos,omitempty"`       // default guaranteed
	Placement string   `json:"placement,omitempty"` // default: the node's policy
	Owner     Owner    `json:"owner,omitempty"`
	// ComputePolicy is what the compute share means: cap (a ceiling, never
	// exceeded even alone) or share (a guarantee; idle capacity may be used).
	// Empty: vgpud's default (its compute_policy setting, cap unless set).
	ComputePolicy ComputePolicy `json:"compute_policy,omitempty"`
	// IdleRelease releases the slice once it has been empty this long after
	// its last process holding one of its devices went away (notebooks and
	// forgotten jobs); 0 keeps it until released. At most MaxIdleRelease.
	IdleRelease units.Duration `json:"idle_release,omitempty"`
	// MemoryMaxBytes is the slice's elastic ceiling per device: an allocation
	// over its memory (the base) may be granted, from memory no slice has
	// reserved or that idle guaranteed slices lend, up to this much. 0 (or
	// the base): no growth, the memory is the cap. At most the device's memory.
	MemoryMaxBytes uint64 `json:"memory_max_bytes,omitempty"`
}

// MaxIdleRelease bounds AllocRequest.IdleRelease.
const MaxIdleRelease = 30 * 24 * time.Hour

// UpdateRequest changes a live slice's compute share and policy (PATCH
// /v1/slices/{id}). Fields left out stay as they are; at least one must be
// given. ComputePercent and DeviceComputePercent are each checked like an
// AllocRequest's compute_percent (0 < p <= 100; 0: no share, the slice is
// no longer throttled and reserves nothing); a guaranteed slice's new shares
// must fit its devices' compute beside the other slices' (422 otherwise).
type UpdateRequest struct {
	// ComputePercent is the new share on every device of the slice.
	ComputePercent *float64 `json:"compute_percent,omitempty"`
	// DeviceComputePercent is the new share per device, by device uuid (the
	// slice's devices not named keep theirs). Not with ComputePercent.
	DeviceComputePercent map[string]float64 `json:"device_compute_percent,omitempty"`
	// ComputePolicy is the new policy, cap or share; empty: unchanged.
	ComputePolicy ComputePolicy `json:"compute_policy,omitempty"`
	// PodUIDs (a claim's slice only) are the pods the claim is reserved for
	// now, replacing Owner.PodUIDs: a pod that joins a shared claim after it
	// was prepared (the kubelet prepares a claim once per node) becomes a
	// member of the slice. nil: unchanged.
	PodUIDs *[]string `json:"pod_uids,omitempty"`
}

// Device is one physical GPU as vgpud sees it.
type Device struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memory_bytes"`
	Minor       int    `json:"minor"`
	PCIBusID    string `json:"pci_bus_id"`
	// NUMANode is -1 where unknown.
	NUMANode int `json:"numa_node"`
	// What slices hold on it: guaranteed memory (never overbooked) and all
	// memory budgets together (may exceed the device with burstable slices).
	GuaranteedBytes uint64  `json:"guaranteed_bytes"`
	AllocatedBytes  uint64  `json:"allocated_bytes"`
	ComputePercent  float64 `json:"compute_percent"` // guaranteed compute shares, summed
	Slices          int     `json:"slices"`
	// UnslicedBytes is the device memory the driver reports used by
	// processes in no slice (bypassing vgpu entirely), as of the last
	// enforcer tick: memory no slice can have. 0 from an older vgpud.
	UnslicedBytes uint64 `json:"unsliced_bytes,omitempty"`
}

// SliceDevice is a slice's share of one device.
type SliceDevice struct {
	Index int    `json:"index"`
	UUID  string `json:"uuid"`
	// MemoryBytes is the slice's base memory on the device.
	MemoryBytes    uint64  `json:"memory_bytes"`
	ComputePercent float64 `json:"compute_percent"`
	// MemoryMaxBytes is the elastic ceiling (0: none; see
	// AllocRequest.MemoryMaxBytes).
	MemoryMaxBytes uint64 `json:"memory_max_bytes,omitempty"`
	// GrantedBytes is what vgpud granted above the base: the slice's limit is
	// MemoryBytes + GrantedBytes. Loans says which part was borrowed from
	// which slice (the rest came from memory no slice reserved).
	GrantedBytes uint64 `json:"granted_bytes,omitempty"`
	Loans        []Loan `json:"loans,omitempty"`
}

// Loan is memory a slice was granted out of another slice's idle
// reservation; the lender gets it back when it becomes active again.
type Loan struct {
	From  string `json:"from"`
	Bytes uint64 `json:"bytes"`
}

// LimitBytes is the slice's memory limit on the device now: base + granted.
func (d SliceDevice) LimitBytes() uint64 { return d.MemoryBytes + d.GrantedBytes }

// BorrowedBytes is the part of the grant borrowed from other slices.
func (d SliceDevice) BorrowedBytes() uint64 {
	var n uint64
	for _, l := range d.Loans {
		n += l.Bytes
	}
	return n
}

// TrimLoans keeps loans, in order, up to granted bytes in all: what is left
// of a grant's loans once the grant is lowered to granted (the last lenders
// are repaid first).
func TrimLoans(loans []Loan, granted uint64) []Loan {
	var out []Loan
	for _, l := range loans {
		if granted == 0 {
			break
		}
		l.Bytes = min(l.Bytes, granted)
		granted -= l.Bytes
		out = append(out, l)
	}
	return out
}

// Elastic reports whether the slice may grow on the device.
func (d SliceDevice) Elastic() bool { return d.MemoryMaxBytes > d.MemoryBytes }

// Slice is an allocated slice. Dir holds its budget and usage region files.
type Slice struct {
	ID        string        `json:"id"`
	Dir       string        `json:"dir"`
	Devices   []SliceDevice `json:"devices"`
	QoS       QoS           `json:"qos"`
	Priority  int           `json:"priority"`
	Owner     Owner         `json:"owner"`
	CreatedAt time.Time     `json:"created_at"`
	// ComputePolicy is the slice's throttle policy, cap or share (what its
	// budget records). Absent from an older vgpud, and from records written
	// before the policy could be chosen: those slices are cap.
	ComputePolicy ComputePolicy `json:"compute_policy,omitempty"`
	// IdleRelease: the slice is released once empty this long (0: kept).
	IdleRelease units.Duration `json:"idle_release,omitempty"`
	// Tampered says how one of the slice's region files was changed behind
	// vgpud's back (grown, shrunk, holes punched, unlinked or replaced): vgpud
	// reads that slice's regions only through a fault guard. Empty: intact.
	// Never recorded on disk; set by the daemon's region watch.
	Tampered string `json:"tampered,omitempty"`
}

// ProcessUsage is one process in a slice, as the enforcer last saw it.
type ProcessUsage struct {
	PID     int `json:"pid"`      // in the process's own pid namespace
	HostPID int `json:"host_pid"` // 0: not mapped yet
	// UsedBytes per slice device, as libvgpu charged it.
	UsedBytes []uint64 `json:"used_bytes"`
	// DriverBytes per slice device, as the driver (NVML) reports it; nil when unknown.
	DriverBytes []uint64 `json:"driver_bytes,omitempty"`
}

// SliceUsage is a slice's live usage (vgpuctl top).
type SliceUsage struct {
	Slice     Slice          `json:"slice"`
	UsedBytes []uint64       `json:"used_bytes"` // per slice device
	PeakBytes []uint64       `json:"peak_bytes"`
	Refused   []uint64       `json:"refused_allocs"`
	Processes []ProcessUsage `json:"processes"`
	// Compute is the compute share per slice device (same order as
	// Slice.Devices), as vgpud's controller last set and measured it. Absent
	// from an older vgpud.
	Compute []ComputeUsage `json:"compute,omitempty"`
	// Activity is whether the slice's processes hold and use its devices,
	// as of the last tick. Absent from an older vgpud and before a slice's
	// first tick.
	Activity *SliceActivity `json:"activity,omitempty"`
}

// Slice activity states (SliceActivity.State).
const (
	// ActivityActive: a process holds one of the slice's devices and ran
	// work on it lately (or the driver cannot say).
	ActivityActive = "active"
	// ActivityIdle: its processes hold its devices but the driver measured
	// no work from them.
	ActivityIdle = "idle"
	// ActivityEmpty: no process holds any of its devices.
	ActivityEmpty = "empty"
)

// SliceActivity is a slice's activity state and what it could lend.
type SliceActivity struct {
	State string    `json:"state"` // ActivityActive, ActivityIdle or ActivityEmpty
	Since time.Time `json:"since"` // when the slice entered State
	// Used: a process has held one of the slice's devices since it was
	// created (idle release counts only from the last one's exit).
	Used bool `json:"used"`
	// LendableBytes per slice device: the part of an empty or idle slice's
	// memory limit it does not use (what elastic memory may lend; the
	// guarantee comes back when one of its processes is active again); 0
	// while active.
	LendableBytes []uint64 `json:"lendable_bytes"`
	// ReleaseAt is when an idle-release slice will be released if it stays
	// empty (zero: not scheduled).
	ReleaseAt time.Time `json:"release_at,omitempty"`
}

// ComputeUsage is a slice's compute share on one device: what it
// should get, what the controller grants it and what it got.
type ComputeUsage struct {
	UUID string `json:"uuid"`
	// TargetPercent is the slice's configured share (SliceDevice.ComputePercent);
	// 0: the slice asked for no share (not throttled, nothing reserved).
	TargetPercent float64 `json:"target_percent"`
	// AllowedPercent is the share the controller grants from now on: the
	// target, the floor while a higher-priority slice is active, more for a
	// share-policy slice using idle capacity. 0 when the slice has no share and
	// is not throttled, or before the controller's first step with it.
	AllowedPercent float64 `json:"allowed_percent"`
	// AchievedPercent is the share of the device's time the slice's processes
	// used, as the driver measures it (NVML per-process utilization), averaged
	// over about the last second. Meaningful only when Measured.
	AchievedPercent float64 `json:"achieved_percent"`
	// Measured: the driver reported per-process utilization on the device in
	// the last tick (false where NVML cannot, and for a slice just created).
	Measured bool `json:"measured"`
	// TokenRate is the refill rate of the slice's launch token bucket on the
	// device, in tokens per second; a token is one estimated device-ns (a
	// launch costs its waves of blocks times a nominal wave time, libvgpu's
	// vgpu_shm.h), so the rate is not a share: the controller scales it by what
	// a token really buys. 0: not throttled.
	TokenRate uint64 `json:"token_rate"`
	// Throttled: the slice's launchers waited for tokens during the last step.
	Throttled bool `json:"throttled,omitempty"`
	// Held: held to its floor while a higher-priority slice is active.
	Held bool `json:"held,omitempty"`
}

// Health is vgpud's own state.
type Health struct {
	Status       string    `json:"status"` // "ok"
	Version      string    `json:"version"`
	StartedAt    time.Time `json:"started_at"`
	Devices      int       `json:"devices"`
	Slices       int       `json:"slices"`
	EnforcerMode string    `json:"enforcer_mode"`
	// Tracker is the process tracker running: ebpf, procfs or off (absent
	// from an older vgpud).
	Tracker       string    `json:"tracker,omitempty"`
	LastTick      time.Time `json:"last_tick"`
	LastTickError string    `json:"last_tick_error,omitempty"`
	// Quarantined counts the slices whose record could not be loaded, held
	// until an operator releases or restores them (GET /v1/quarantine).
	Quarantined int `json:"quarantined,omitempty"`
}

// What vgpud books for a quarantined slice (QuarantinedSlice.Holding).
const (
	// HoldingBudget: what the slice's budget file says it holds (its
	// devices, memory, compute share, class), booked under its id.
	HoldingBudget = "budget"
	// HoldingUnknown: the budget file is unreadable (or not one vgpud writes,
	// or what it says does not fit the books), so what the slice holds is
	// unknown. vgpud then holds, on every device, all the guaranteed memory
	// and compute that was free once the readable slices were booked at
	// start: an upper bound of what the slice can hold. One such hold covers
	// every unknown slice; it is freed when the last one is released.
	HoldingUnknown = "unknown"
)

// QuarantinedSlice is a slice whose record vgpud could not load at start. It is
// not enforced, its files are kept (its tenants may still run) and what it held
// stays booked until an operator releases or restores it.
type QuarantinedSlice struct {
	// Name identifies the entry: its directory under <state>/quarantine/.
	Name string `json:"name"`
	// ID is the slice's id; it cannot be allocated again meanwhile.
	ID            string    `json:"id"`
	Dir           string    `json:"dir"`
	Reason        string    `json:"reason"`
	QuarantinedAt time.Time `json:"quarantined_at"`
	// Holding is HoldingBudget or HoldingUnknown; HoldingReason says why
	// the holding is unknown.
	Holding       string `json:"holding"`
	HoldingReason string `json:"holding_reason,omitempty"`
	// QoS and Devices are what is booked for it (for an unknown holding: the
	// hold shared by every unknown slice, QoS guaranteed). Devices is empty
	// when nothing was left to hold.
	QoS     QoS           `json:"qos"`
	Devices []SliceDevice `json:"devices"`
	// Restorable: its budget file is readable, so a record can be rebuilt
	// from it and the slice made live again.
	Restorable bool `json:"restorable"`
}

// Error is every non-2xx body. Reasons lists, for a refused allocation, what each
// device lacked ("GPU-…: 3.0GiB guaranteed memory free, 4.0GiB asked").
type Error struct {
	Error   string   `json:"error"`
	Reasons []string `json:"reasons,omitempty"`
}
