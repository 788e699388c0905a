package dra

import (
	"fmt"
	"sort"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// What the ResourceSlice says about each GPU, and why:
//
//   - allowMultipleAllocations: many claims share one GPU (KEP-5075,
//     feature gate DRAConsumableCapacity, alpha in 1.34). Where the gate is
//     off the apiserver drops the field (and requestPolicy): each GPU then
//     goes to one claim at a time, whole, and planClaim gives that claim
//     all the memory the GPU offers DRA, unthrottled.
//   - capacity memory (bytes): the GPU's memory less what is held outside
//     DRA (see Available). No request policy: a request without a memory
//     capacity consumes all of it, i.e. a whole GPU's memory.
//   - capacity compute (percent, 100 less what slices made outside DRA
//     reserve): request policy default 0 and range 0..capacity, so a request
//     without a compute capacity gets no share (vgpud: not throttled,
//     nothing reserved) and does not stop others sharing the GPU.

// Available is what a GPU offers DRA now: its memory less the guaranteed
// memory vgpud has booked for slices not made for a claim (vgpuctl,
// vgpu-runtime, quarantined ones) and less the driver memory of processes in
// no slice; 100 percent compute less the guaranteed shares of those slices.
// Claims' own slices are the scheduler's business: it counts their consumed
// capacity itself.
func Available(d api.Device, slices []api.Slice) (memory uint64, compute float64) {
	claimMem, claimCompute := uint64(0), 0.0
	for _, sl := range slices {
		if sl.Owner.Kind != api.OwnerClaim || !sl.QoS.Guaranteed() {
			continue
		}
		for _, sd := range sl.Devices {
			if sd.UUID == d.UUID {
				claimMem += sd.MemoryBytes
				claimCompute += sd.ComputePercent
			}
		}
	}
	outside := sub(d.GuaranteedBytes, claimMem) + d.UnslicedBytes
	memory = sub(d.MemoryBytes, outside)
	compute = 100 - max(0, d.ComputePercent-claimCompute)
	return memory, max(0, compute)
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// Resources builds the node's pool: one device per GPU, named gpu-<index>.
// The pool's name is the node's (so a device is <driver>/<node>/gpu-<i>).
func Resources(pool string, devs []api.Device, slices []api.Slice) resourceslice.DriverResources {
	sorted := append([]api.Device(nil), devs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Index < sorted[j].Index })
	out := make([]resourceapi.Device, 0, len(sorted))
	for _, d := range sorted {
		out = append(out, Device(d, slices))
	}
	return resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{
		pool: {Slices: []resourceslice.Slice{{Devices: out}}},
	}}
}

// Device is one GPU as the ResourceSlice describes it.
func Device(d api.Device, slices []api.Slice) resourceapi.Device {
	memory, compute := Available(d, slices)
	str := func(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }
	num := func(n int64) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{IntValue: &n} }
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		"uuid":        str(d.UUID),
		"productName": str(d.Name),
		"index":       num(int64(d.Index)),
		"minor":       num(int64(d.Minor)),
		// The GPU's whole memory, for selectors ("a GPU of at least 40Gi"):
		// the capacity below is what is left for DRA.
		"memoryTotal": num(int64(min(d.MemoryBytes, 1<<62))),
	}
	if d.PCIBusID != "" {
		attrs["pciBusID"] = str(d.PCIBusID)
	}
	if d.NUMANode >= 0 {
		attrs["numaNode"] = num(int64(d.NUMANode))
	}
	return resourceapi.Device{
		Name:                     DeviceName(d.Index),
		Attributes:               attrs,
		AllowMultipleAllocations: ptr.To(true),
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			CapacityMemory: {Value: *resource.NewQuantity(int64(min(memory, 1<<62)), resource.BinarySI)},
			CapacityCompute: {
				Value: computeQuantity(compute),
				RequestPolicy: &resourceapi.CapacityRequestPolicy{
					Default: resource.NewQuantity(0, resource.DecimalSI),
					ValidRange: &resourceapi.CapacityRequestPolicyRange{
						Min: resource.NewQuantity(0, resource.DecimalSI),
						// At most the capacity (the apiserver's rule).
						Max: ptr.To(computeQuantity(compute)),
					},
				},
			},
		},
	}
}

// computeQuantity is a percentage in milli-percent steps (vgpud keeps
// shares in basis points; a thousandth of a percent is finer).
func computeQuantity(p float64) resource.Quantity {
	return *resource.NewMilliQuantity(int64(p*1000), resource.DecimalSI)
}

// describe says in one line what a device offers (for the logs).
func describe(d resourceapi.Device) string {
	m := d.Capacity[CapacityMemory].Value
	c := d.Capacity[CapacityCompute].Value
	return fmt.Sprintf("%s: memory %s, compute %s%%", d.Name, m.String(), c.String())
}
