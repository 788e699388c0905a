package dra

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const (
	gib  = uint64(1) << 30
	node = "node-a"
)

func testDevices() []api.Device {
	return []api.Device{
		{Index: 0, UUID: "GPU-0", Name: "NVIDIA H100", MemoryBytes: 16 * gib, NUMANode: -1},
		{Index: 1, UUID: "GPU-1", Name: "NVIDIA H100", MemoryBytes: 16 * gib, NUMANode: 0, PCIBusID: "0000:01:00.0"},
	}
}

type classes []*resourceapi.DeviceClass

func (c classes) List() ([]*resourceapi.DeviceClass, error) { return c, nil }
func (c classes) Get(name string) (*resourceapi.DeviceClass, error) {
	for _, x := range c {
		if x.Name == name {
			return x, nil
		}
	}
	return nil, fmt.Errorf("no class %s", name)
}

// vgpuClass is deploy/kubernetes/deviceclass.yaml's class.
var vgpuClass = &resourceapi.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: "vgpu.io"},
	Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{
		{CEL: &resourceapi.CELDeviceSelector{Expression: `device.driver == "vgpu.io"`}}}}}

// newClaim is a claim asking for one device of class vgpu.io with these
// capacity requests (none: no capacity block).
func newClaim(name string, requests map[resourceapi.QualifiedName]string, configs ...string) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml",
		UID: types.UID("uid-" + name)}}
	// The apiserver's defaults: one device, exact count.
	req := resourceapi.DeviceRequest{Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "vgpu.io",
		AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 1}}
	if requests != nil {
		req.Exactly.Capacity = &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{}}
		for k, v := range requests {
			req.Exactly.Capacity.Requests[k] = resource.MustParse(v)
		}
	}
	c.Spec.Devices.Requests = []resourceapi.DeviceRequest{req}
	for _, cfg := range configs {
		c.Spec.Devices.Config = append(c.Spec.Devices.Config, resourceapi.DeviceClaimConfiguration{
			DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
				Driver: "vgpu.io", Parameters: runtime.RawExtension{Raw: []byte(cfg)}}}})
	}
	return c
}

// schedule runs the scheduler's own allocator (consumable capacity on)
// over the ResourceSlice Resources builds, as kube-scheduler would, and
// records each allocation in its claim. It returns false when the claims
// do not fit together.
func schedule(t *testing.T, devs []api.Device, slices []api.Slice, claims ...*resourceapi.ResourceClaim) bool {
	t.Helper()
	res := Resources(node, devs, slices)
	pool := res.Pools[node]
	rs := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: node + "-vgpu.io"},
		Spec: resourceapi.ResourceSliceSpec{Driver: "vgpu.io", NodeName: ptrTo(node),
			Pool: resourceapi.ResourcePool{Name: node, ResourceSliceCount: 1}, Devices: pool.Slices[0].Devices}}
	features := structured.Features{ConsumableCapacity: true}
	state := structured.AllocatedState{AllocatedDevices: sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
		AggregatedCapacity:       structured.NewConsumedCapacityCollection()}
	a, err := structured.NewAllocator(context.Background(), features, state, classes{vgpuClass},
		[]*resourceapi.ResourceSlice{rs}, cel.NewCache(10, cel.Features{}))
	require.NoError(t, err)
	results, err := a.Allocate(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, claims)
	require.NoError(t, err)
	if results == nil {
		return false
	}
	for i, c := range claims {
		c.Status.Allocation = &results[i]
	}
	return true
}

func ptrTo[T any](v T) *T { return &v }

func whole(d api.Device) uint64 { m, _ := Available(d, nil); return m }

// TestScheduleMemoryOnly: the e2e's claim (memory 6Gi, no compute) is
// allocated with consumed memory 6Gi and compute 0, and becomes a 6Gi
// guaranteed slice with no compute share pinned to the GPU, answered with
// the slice's CDI device.
func TestScheduleMemoryOnly(t *testing.T) {
	devs := testDevices()
	c := newClaim("a", map[resourceapi.QualifiedName]string{"memory": "6Gi"})
	require.True(t, schedule(t, devs, nil, c))
	r := c.Status.Allocation.Devices.Results[0]
	require.Equal(t, "6Gi", ptrTo(r.ConsumedCapacity[CapacityMemory]).String())
	require.True(t, ptrTo(r.ConsumedCapacity[CapacityCompute]).IsZero(), "no compute share: %v", r.ConsumedCapacity)
	require.NotNil(t, r.ShareID)

	p, err := planClaim(c, "vgpu.io", node, devs, whole)
	require.NoError(t, err)
	require.Equal(t, "claim-uid-a", p.Req.ID)
	require.Equal(t, 6*gib, p.Req.MemoryBytes)
	require.Zero(t, p.Req.ComputePercent)
	require.Equal(t, api.QoSGuaranteed, p.Req.QoS)
	require.Len(t, p.Req.UUIDs, 1)
	require.Equal(t, api.Owner{Kind: api.OwnerClaim, ClaimUID: "uid-a", ClaimNamespace: "ml", ClaimName: "a",
		Labels: map[string]string{"namespace": "ml"}}, p.Req.Owner)
	require.NoError(t, p.Req.Validate())
	require.Len(t, p.Devices, 1)
	require.Equal(t, []string{"vgpu.io/slice=claim-uid-a"}, p.Devices[0].CDIDeviceIDs)
	require.Equal(t, r.Device, p.Devices[0].DeviceName)
	require.Equal(t, node, p.Devices[0].PoolName)
}

// TestScheduleShares: claims share a GPU until its memory or compute runs
// out; memory held outside DRA is not offered.
func TestScheduleShares(t *testing.T) {
	devs := testDevices()[:1]
	six := map[resourceapi.QualifiedName]string{"memory": "6Gi"}
	require.True(t, schedule(t, devs, nil, newClaim("a", six), newClaim("b", six)), "two 6Gi claims share 16Gi")
	require.False(t, schedule(t, devs, nil, newClaim("a", six), newClaim("b", six), newClaim("c", six)),
		"three 6Gi claims do not fit 16Gi")

	// A 6Gi guaranteed slice made by vgpuctl (and vgpud's device view that
	// books it) leaves 10Gi: one 6Gi claim, not two.
	outside := []api.Slice{{ID: "s-1", QoS: api.QoSGuaranteed, Devices: []api.SliceDevice{{UUID: "GPU-0", MemoryBytes: 6 * gib}}}}
	devs[0].GuaranteedBytes = 6 * gib
	require.True(t, schedule(t, devs, outside, newClaim("a", six)))
	require.False(t, schedule(t, devs, outside, newClaim("a", six), newClaim("b", six)))

	// Compute: 60 + 50 > 100.
	devs = testDevices()[:1]
	req := func(pct string) map[resourceapi.QualifiedName]string {
		return map[resourceapi.QualifiedName]string{"memory": "1Gi", "compute": pct}
	}
	require.True(t, schedule(t, devs, nil, newClaim("a", req("60")), newClaim("b", req("40"))))
	require.False(t, schedule(t, devs, nil, newClaim("a", req("60")), newClaim("b", req("50"))))
	c := newClaim("a", req("30"))
	require.True(t, schedule(t, devs, nil, c))
	p, err := planClaim(c, "vgpu.io", node, devs, whole)
	require.NoError(t, err)
	require.InDelta(t, 30, p.Req.ComputePercent, 1e-9)
}

// TestScheduleWhole: a request with no capacity takes all the GPU's memory
// (one such claim per GPU) and no compute share.
func TestScheduleWhole(t *testing.T) {
	devs := testDevices()[:1]
	c := newClaim("a", nil)
	require.True(t, schedule(t, devs, nil, c))
	require.False(t, schedule(t, devs, nil, newClaim("a", nil), newClaim("b", nil)))
	p, err := planClaim(c, "vgpu.io", node, devs, whole)
	require.NoError(t, err)
	require.Equal(t, 16*gib, p.Req.MemoryBytes)
	require.Zero(t, p.Req.ComputePercent)
	require.False(t, p.Whole, "consumed capacity is recorded: not the no-gate case")
}
