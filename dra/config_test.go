package dra

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const head = `"apiVersion":"vgpu.io/v1alpha1","kind":"SliceConfig"`

// TestDecodeConfig: a SliceConfig is decoded strictly and every value
// checked; each bad input says what is wrong.
func TestDecodeConfig(t *testing.T) {
	c, err := DecodeConfig([]byte(`{` + head + `,"qos":"best-effort","priority":3,"computePolicy":"cap","memoryMax":"2GiB"}`))
	require.NoError(t, err)
	require.Equal(t, "best-effort", c.QoS)
	require.Equal(t, int64(3), *c.Priority)
	require.Equal(t, "2GiB", c.MemoryMax)

	for in, want := range map[string]string{
		`{` + head + `,"extra":1}`:                                         `unknown field "extra"`,
		`{` + head + `,"qos":"gold"}`:                                      `qos`,
		`{` + head + `,"computePolicy":"fair"}`:                            `computePolicy`,
		`{` + head + `,"priority":-1}`:                                     `priority -1`,
		`{` + head + `,"priority":5000000000}`:                             `priority 5000000000`,
		`{` + head + `,"memoryMax":"512m"}`:                                `memoryMax`,
		`{` + head + `,"memoryMax":"lots"}`:                                `memoryMax`,
		`{"apiVersion":"v1","kind":"SliceConfig"}`:                         `want apiVersion vgpu.io/v1alpha1, kind SliceConfig`,
		`{"apiVersion":"vgpu.io/v1alpha1"}`:                                `kind ""`,
		`{` + head + `} {}`:                                                `trailing data`,
		`[1]`:                                                              `want a JSON object`,
		`{` + head + `,"qos":"guaranteed","qos":1}`:                        `config`,
		`{` + head + `,"memoryMax":"` + strings.Repeat("9", 70<<10) + `"}`: `at most 65536`,
	} {
		_, err := DecodeConfig([]byte(in))
		require.ErrorContains(t, err, want, "%.80s", in)
	}
}

func opaque(source resourceapi.AllocationConfigSource, driver string, requests []string, raw string) resourceapi.DeviceAllocationConfiguration {
	return resourceapi.DeviceAllocationConfiguration{Source: source, Requests: requests,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver: driver, Parameters: runtime.RawExtension{Raw: []byte(raw)}}}}
}

// TestClaimConfig: the class's configs apply first, the claim's win; a
// config for another driver or another request is not read (not even
// decoded); one naming the main request applies to its subrequests.
func TestClaimConfig(t *testing.T) {
	alloc := &resourceapi.AllocationResult{}
	alloc.Devices.Config = []resourceapi.DeviceAllocationConfiguration{
		opaque(resourceapi.AllocationConfigSourceClaim, "vgpu.io", nil, `{`+head+`,"qos":"burstable"}`),
		opaque(resourceapi.AllocationConfigSourceClass, "vgpu.io", nil, `{`+head+`,"qos":"best-effort","priority":1}`),
		opaque(resourceapi.AllocationConfigSourceClaim, "other.io", nil, `not json`),
		opaque(resourceapi.AllocationConfigSourceClaim, "vgpu.io", []string{"cpu"}, `not json either`),
		opaque(resourceapi.AllocationConfigSourceClaim, "vgpu.io", []string{"gpu"}, `{`+head+`,"memoryMax":"8Gi"}`),
	}
	c, err := claimConfig(alloc, "vgpu.io", map[string]bool{"gpu/big": true})
	require.NoError(t, err)
	require.Equal(t, "burstable", c.QoS)
	require.Equal(t, int64(1), *c.Priority)
	require.Equal(t, "8Gi", c.MemoryMax)

	alloc.Devices.Config[3].Requests = []string{"gpu"}
	_, err = claimConfig(alloc, "vgpu.io", map[string]bool{"gpu": true})
	require.ErrorContains(t, err, "FromClaim config #3")
}

func result(device string, consumed map[resourceapi.QualifiedName]string) resourceapi.DeviceRequestAllocationResult {
	r := resourceapi.DeviceRequestAllocationResult{Request: "gpu", Driver: "vgpu.io", Pool: node, Device: device}
	if consumed != nil {
		r.ConsumedCapacity = map[resourceapi.QualifiedName]resource.Quantity{}
		for k, v := range consumed {
			r.ConsumedCapacity[k] = resource.MustParse(v)
		}
	}
	return r
}

func claimWith(results ...resourceapi.DeviceRequestAllocationResult) *resourceapi.ResourceClaim {
	c := newClaim("x", nil)
	c.Status.Allocation = &resourceapi.AllocationResult{}
	c.Status.Allocation.Devices.Results = results
	return c
}

// TestPlanClaim: results become one slice over the claim's GPUs, in order;
// what cannot be one slice, or is not this node's, is refused.
func TestPlanClaim(t *testing.T) {
	devs := testDevices()
	four := map[resourceapi.QualifiedName]string{"memory": "4Gi", "compute": "20"}
	p, err := planClaim(claimWith(result("gpu-1", four), result("gpu-0", four),
		resourceapi.DeviceRequestAllocationResult{Request: "nic", Driver: "net.example.com", Pool: node, Device: "eth0"}),
		"vgpu.io", node, devs, whole)
	require.NoError(t, err)
	require.Equal(t, []string{"GPU-1", "GPU-0"}, p.Req.UUIDs)
	require.Equal(t, 4*gib, p.Req.MemoryBytes)
	require.Len(t, p.Devices, 2)
	require.Equal(t, []string{"vgpu.io/slice=claim-uid-x"}, p.Devices[0].CDIDeviceIDs)
	require.Empty(t, p.Devices[1].CDIDeviceIDs, "the slice's CDI device once per request")

	// No consumed capacity (a cluster without DRAConsumableCapacity): the
	// whole GPU, as much as it offers DRA, no compute share.
	p, err = planClaim(claimWith(result("gpu-0", nil)), "vgpu.io", node, devs, func(api.Device) uint64 { return 10 * gib })
	require.NoError(t, err)
	require.True(t, p.Whole)
	require.Equal(t, 10*gib, p.Req.MemoryBytes)
	require.Zero(t, p.Req.ComputePercent)

	// Nothing of ours: no slice.
	p, err = planClaim(claimWith(), "vgpu.io", node, devs, whole)
	require.NoError(t, err)
	require.Empty(t, p.Req.ID)

	two := map[resourceapi.QualifiedName]string{"memory": "2Gi"}
	for want, c := range map[string]*resourceapi.ResourceClaim{
		"must consume the same":        claimWith(result("gpu-0", four), result("gpu-1", two)),
		"allocated to the claim twice": claimWith(result("gpu-0", two), result("gpu-0", two)),
		"no such GPU":                  claimWith(result("gpu-9", two)),
		"vgpu.io publishes only":       claimWith(result("gpu-0", map[resourceapi.QualifiedName]string{"memory": "1Gi", "cores": "1"})),
		"no consumed memory":           claimWith(result("gpu-0", map[resourceapi.QualifiedName]string{"compute": "1"})),
		"whole, non-negative number":   claimWith(result("gpu-0", map[resourceapi.QualifiedName]string{"memory": "1500m"})),
		"want more than 0":             claimWith(result("gpu-0", map[resourceapi.QualifiedName]string{"memory": "0"})),
		"not allocated":                newClaim("y", nil),
	} {
		_, err := planClaim(c, "vgpu.io", node, devs, whole)
		require.ErrorContains(t, err, want)
	}
	other := claimWith(result("gpu-0", two))
	other.Status.Allocation.Devices.Results[0].Pool = "node-b"
	_, err = planClaim(other, "vgpu.io", node, devs, whole)
	require.ErrorContains(t, err, `pool "node-b"`)
	admin := claimWith(result("gpu-0", two))
	admin.Status.Allocation.Devices.Results[0].AdminAccess = ptrTo(true)
	_, err = planClaim(admin, "vgpu.io", node, devs, whole)
	require.ErrorContains(t, err, "admin access")
}

// TestMatches: a repeated prepare accepts the slice it made, and names
// every difference of one that is not.
func TestMatches(t *testing.T) {
	p, err := planClaim(claimWith(result("gpu-0", map[resourceapi.QualifiedName]string{"memory": "4Gi", "compute": "20"})),
		"vgpu.io", node, testDevices(), whole)
	require.NoError(t, err)
	sl := api.Slice{ID: p.Req.ID, Owner: p.Req.Owner, QoS: api.QoSGuaranteed, ComputePolicy: api.ComputePolicyCap,
		Devices: []api.SliceDevice{{UUID: "GPU-0", MemoryBytes: 4 * gib, ComputePercent: 20}}}
	require.NoError(t, p.matches(sl))

	bad := sl
	bad.Owner = api.Owner{Kind: api.OwnerContainer, ContainerID: "c"}
	bad.QoS = api.QoSBurstable
	bad.Priority = 5
	bad.Devices = []api.SliceDevice{{UUID: "GPU-1", MemoryBytes: 2 * gib, ComputePercent: 50, MemoryMaxBytes: 8 * gib}}
	err = p.matches(bad)
	for _, want := range []string{"owner container", "GPU 0 is GPU-1", "memory 2GiB, not 4GiB", "compute 50%, not 20%",
		"qos burstable", "priority 5", "memory max 8GiB"} {
		require.ErrorContains(t, err, want)
	}
}
