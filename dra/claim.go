package dra

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
)

// The consumable capacities of every published GPU (KEP-5075): memory in
// bytes and compute in percent of the GPU (100 each).
const (
	CapacityMemory  resourceapi.QualifiedName = "memory"
	CapacityCompute resourceapi.QualifiedName = "compute"
)

// claimSlicePrefix starts the id of every slice made for a claim: the
// claim's uid follows, so a repeated prepare (kubelet retries, a restarted
// plugin) names the same slice.
const claimSlicePrefix = "claim-"

// SliceID is the vgpud slice id of the claim with this uid.
func SliceID(uid types.UID) string { return claimSlicePrefix + string(uid) }

// DeviceName is the ResourceSlice device name of the GPU with this NVML index.
func DeviceName(index int) string { return "gpu-" + strconv.Itoa(index) }

// CDIDevice is the CDI device id vgpud publishes for a slice.
func CDIDevice(sliceID string) string { return gpucdi.SliceKind + "=" + sliceID }

// plan is what preparing one claim takes: the slice to ask vgpud for, and the
// devices to answer the kubelet with. A claim with no device of this driver
// has no slice (Req.ID is empty).
type plan struct {
	Req     api.AllocRequest
	Devices []kubeletplugin.Device
	// Whole: the allocation consumed no capacity (a cluster without
	// DRAConsumableCapacity allocates a device to one claim): the slice gets
	// what the GPU has for DRA, and compute is not throttled.
	Whole bool
}

// planClaim turns an allocated claim into a slice request. Everything in the
// claim is user input: the allocation's devices must be this node's GPUs,
// each consuming the same memory and compute (vgpud gives a slice the same
// share of each of its GPUs), within the GPU; the opaque config is decoded
// strictly. capacityOf says how much memory a GPU offers DRA now (used for a
// whole-device allocation).
func planClaim(claim *resourceapi.ResourceClaim, driver, pool string, devs []api.Device,
	capacityOf func(api.Device) uint64) (plan, error) {
	alloc := claim.Status.Allocation
	if alloc == nil {
		return plan{}, errors.New("claim is not allocated")
	}
	var p plan
	requests := map[string]bool{}
	var share *sliceShare
	for _, r := range alloc.Devices.Results {
		if r.Driver != driver {
			continue
		}
		d, err := resultDevice(r, pool, devs)
		if err != nil {
			return plan{}, err
		}
		s, err := resultShare(r, d, capacityOf)
		if err != nil {
			return plan{}, fmt.Errorf("device %s (request %s): %w", r.Device, r.Request, err)
		}
		if share != nil && s != *share {
			return plan{}, fmt.Errorf("device %s (request %s) consumes %s, device %s %s: vgpud gives a slice the same "+
				"memory and compute on each of its GPUs, so a claim's vgpu.io devices must consume the same", r.Device, r.Request,
				s, p.Devices[0].DeviceName, *share)
		}
		share = &s
		if err := addUUID(&p.Req, d.UUID, r.Device); err != nil {
			return plan{}, err
		}
		// One slice, one CDI device: named once per request, so a container
		// using the request gets it once however many GPUs the request has.
		var cdi []string
		if !requests[r.Request] {
			cdi = []string{CDIDevice(SliceID(claim.UID))}
		}
		requests[r.Request] = true
		p.Devices = append(p.Devices, kubeletplugin.Device{Requests: []string{r.Request}, PoolName: r.Pool,
			DeviceName: r.Device, CDIDeviceIDs: cdi})
	}
	if share == nil {
		return plan{}, nil
	}
	cfg, err := claimConfig(alloc, driver, requests)
	if err != nil {
		return plan{}, err
	}
	p.Whole = share.whole
	p.Req.ID = SliceID(claim.UID)
	p.Req.MemoryBytes, p.Req.ComputePercent = share.memory, share.compute
	p.Req.Owner = claimOwner(claim)
	if err := applyConfig(&p.Req, cfg, devs); err != nil {
		return plan{}, err
	}
	return p, nil
}

// sliceShare is what one allocated device consumes.
type sliceShare struct {
	memory  uint64
	compute float64
	whole   bool
}

func (s sliceShare) String() string {
	if s.whole {
		return "the whole device"
	}
	return fmt.Sprintf("memory %s, compute %g%%", units.FormatSize(s.memory), s.compute)
}

// resultDevice finds the GPU an allocation result names: this node's pool,
// a device gpu-<index> vgpud has.
func resultDevice(r resourceapi.DeviceRequestAllocationResult, pool string, devs []api.Device) (api.Device, error) {
	if r.Pool != pool {
		return api.Device{}, fmt.Errorf("device %s is in pool %q, this node's is %q", r.Device, r.Pool, pool)
	}
	if r.AdminAccess != nil && *r.AdminAccess {
		return api.Device{}, fmt.Errorf("device %s: admin access is not supported by vgpu.io", r.Device)
	}
	for _, d := range devs {
		if DeviceName(d.Index) == r.Device {
			return d, nil
		}
	}
	return api.Device{}, fmt.Errorf("device %s: vgpud has no such GPU on this node", r.Device)
}

// resultShare reads the consumed capacity of one result. No consumed
// capacity at all: the device was allocated whole.
func resultShare(r resourceapi.DeviceRequestAllocationResult, d api.Device, capacityOf func(api.Device) uint64) (sliceShare, error) {
	if len(r.ConsumedCapacity) == 0 {
		return sliceShare{memory: capacityOf(d), whole: true}, nil
	}
	for name := range r.ConsumedCapacity {
		if name != CapacityMemory && name != CapacityCompute {
			return sliceShare{}, fmt.Errorf("consumed capacity %q: vgpu.io publishes only %s and %s", name,
				CapacityMemory, CapacityCompute)
		}
	}
	mem, ok := r.ConsumedCapacity[CapacityMemory]
	if !ok {
		return sliceShare{}, fmt.Errorf("no consumed %s capacity", CapacityMemory)
	}
	bytes, err := wholeBytes(mem)
	if err != nil {
		return sliceShare{}, err
	}
	if bytes == 0 || bytes > d.MemoryBytes {
		return sliceShare{}, fmt.Errorf("memory %s: want more than 0 and at most the GPU's %s", mem.String(),
			units.FormatSize(d.MemoryBytes))
	}
	var compute float64
	if q, ok := r.ConsumedCapacity[CapacityCompute]; ok {
		compute = q.AsApproximateFloat64()
		if compute < 0 || compute > 100 || math.IsNaN(compute) {
			return sliceShare{}, fmt.Errorf("compute %s: want 0 (no share) to 100 percent", q.String())
		}
	}
	return sliceShare{memory: bytes, compute: compute}, nil
}

// wholeBytes is a memory quantity as a whole number of bytes.
func wholeBytes(q resource.Quantity) (uint64, error) {
	v, ok := q.AsInt64()
	if !ok || v < 0 {
		return 0, fmt.Errorf("memory %s: want a whole, non-negative number of bytes", q.String())
	}
	return uint64(v), nil
}

// addUUID pins the slice to one more GPU, refusing one twice (a claim may
// get two shares of one GPU; a vgpud slice holds a GPU once).
func addUUID(req *api.AllocRequest, uuid, device string) error {
	for _, u := range req.UUIDs {
		if u == uuid {
			return fmt.Errorf("device %s is allocated to the claim twice: a vgpu slice takes one share per GPU "+
				"(ask for one request with more memory instead)", device)
		}
	}
	if len(req.UUIDs) == api.MaxSliceDevices {
		return fmt.Errorf("more than %d GPUs in one claim", api.MaxSliceDevices)
	}
	req.UUIDs = append(req.UUIDs, uuid)
	return nil
}

// claimOwner records the claim as the slice's owner, with the pods it is
// reserved for (their processes are the slice's members in vgpud: the
// backstop judges them; the scheduler wrote them, not the user) and, when
// exactly one pod holds it, that pod's name as a label.
func claimOwner(claim *resourceapi.ResourceClaim) api.Owner {
	o := api.Owner{Kind: api.OwnerClaim, ClaimUID: string(claim.UID), ClaimNamespace: claim.Namespace,
		ClaimName: claim.Name, Labels: map[string]string{}}
	if api.ValidOwnerLabel(api.OwnerLabelNamespace, claim.Namespace) {
		o.Labels[api.OwnerLabelNamespace] = claim.Namespace
	}
	var pods []string
	for _, ref := range claim.Status.ReservedFor {
		if ref.Resource == "pods" && ref.APIGroup == "" {
			pods = append(pods, ref.Name)
			if ref.UID != "" && len(o.PodUIDs) < api.MaxOwnerPods {
				o.PodUIDs = append(o.PodUIDs, string(ref.UID))
			}
		}
	}
	if len(pods) == 1 && api.ValidOwnerLabel(api.OwnerLabelPod, pods[0]) {
		o.Labels[api.OwnerLabelPod] = pods[0]
	}
	if len(o.Labels) == 0 {
		o.Labels = nil
	}
	return o
}

// applyConfig sets what the opaque config says on the request and checks
// the memory ceiling against the allocation and the GPUs.
func applyConfig(req *api.AllocRequest, cfg SliceConfig, devs []api.Device) error {
	qos, err := api.ParseQoS(cfg.QoS)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	policy, err := api.ParseComputePolicy(cfg.ComputePolicy)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	req.QoS, req.ComputePolicy = qos.Normalized(), policy
	if cfg.Priority != nil {
		req.Priority = int(*cfg.Priority)
	}
	if cfg.MemoryMax == "" {
		return nil
	}
	ceiling, err := units.ParseSize(cfg.MemoryMax)
	if err != nil {
		return fmt.Errorf("config: memoryMax: %w", err)
	}
	if ceiling < req.MemoryBytes {
		return fmt.Errorf("config: memoryMax %s is below the allocated memory %s", cfg.MemoryMax,
			units.FormatSize(req.MemoryBytes))
	}
	for _, d := range devs {
		if contains(req.UUIDs, d.UUID) && ceiling > d.MemoryBytes {
			return fmt.Errorf("config: memoryMax %s is above GPU %d's memory %s", cfg.MemoryMax, d.Index,
				units.FormatSize(d.MemoryBytes))
		}
	}
	req.MemoryMaxBytes = ceiling
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// matches checks that an existing slice is the one the plan asks for (a
// repeated prepare): same owner, GPUs in order, memory and compute per GPU
// (for a whole-device allocation the memory is what the GPU offered then, so
// it is not compared), class, priority, ceiling and, when the config names
// one, compute policy.
func (p plan) matches(sl api.Slice) error {
	r := p.Req
	var diffs []string
	if sl.Owner.Kind != api.OwnerClaim || sl.Owner.ClaimUID != r.Owner.ClaimUID {
		diffs = append(diffs, fmt.Sprintf("owner %s %s, not this claim", sl.Owner.Kind, sl.Owner.ClaimUID))
	}
	if len(sl.Devices) != len(r.UUIDs) {
		diffs = append(diffs, fmt.Sprintf("%d GPUs, not %d", len(sl.Devices), len(r.UUIDs)))
	} else {
		for i, d := range sl.Devices {
			diffs = append(diffs, p.deviceDiffs(i, d)...)
		}
	}
	if sl.QoS.Normalized() != r.QoS.Normalized() {
		diffs = append(diffs, fmt.Sprintf("qos %s, not %s", sl.QoS, r.QoS))
	}
	if sl.Priority != r.Priority {
		diffs = append(diffs, fmt.Sprintf("priority %d, not %d", sl.Priority, r.Priority))
	}
	if r.ComputePolicy != "" && sl.ComputePolicy.Normalized() != r.ComputePolicy.Normalized() {
		diffs = append(diffs, fmt.Sprintf("compute policy %s, not %s", sl.ComputePolicy, r.ComputePolicy))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("slice %s exists but differs from the claim's allocation: %s", sl.ID, strings.Join(diffs, "; "))
	}
	return nil
}

func (p plan) deviceDiffs(i int, d api.SliceDevice) []string {
	r := p.Req
	var diffs []string
	if d.UUID != r.UUIDs[i] {
		diffs = append(diffs, fmt.Sprintf("GPU %d is %s, not %s", i, d.UUID, r.UUIDs[i]))
	}
	if !p.Whole && d.MemoryBytes != r.MemoryBytes {
		diffs = append(diffs, fmt.Sprintf("memory %s, not %s", units.FormatSize(d.MemoryBytes), units.FormatSize(r.MemoryBytes)))
	}
	if math.Abs(d.ComputePercent-r.ComputePercent) > 0.01 {
		diffs = append(diffs, fmt.Sprintf("compute %g%%, not %g%%", d.ComputePercent, r.ComputePercent))
	}
	ceiling := r.MemoryMaxBytes
	if d.MemoryMaxBytes != ceiling && (ceiling > d.MemoryBytes || d.MemoryMaxBytes > d.MemoryBytes) {
		diffs = append(diffs, fmt.Sprintf("memory max %s, not %s", units.FormatSize(d.MemoryMaxBytes), units.FormatSize(ceiling)))
	}
	return diffs
}
