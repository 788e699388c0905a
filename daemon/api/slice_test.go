package api

import (
	"encoding/json"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/shm"
)

func TestQoSNamesAndCodes(t *testing.T) {
	for _, q := range QoSClasses {
		got, err := ParseQoS(string(q))
		require.NoError(t, err)
		require.Equal(t, q, got)
		require.Equal(t, q, QoSOfCode(q.Code()), "name -> code -> name round trip")
	}
	def, err := ParseQoS("")
	require.NoError(t, err)
	require.Equal(t, QoSGuaranteed, def)
	require.True(t, QoS("").Guaranteed())
	require.False(t, QoSBurstable.Guaranteed())
	require.Equal(t, uint32(shm.QoSGuaranteed), QoS("").Code())
	require.Equal(t, uint32(shm.QoSBestEffort), QoSBestEffort.Code())
	_, err = ParseQoS("platinum")
	require.ErrorIs(t, err, ErrUnknownQoS)
	require.ErrorContains(t, err, `unknown qos "platinum"`)
	require.Equal(t, QoS("unknown-7"), QoSOfCode(7))
}

func TestComputePolicyNamesAndCodes(t *testing.T) {
	for _, p := range ComputePolicies {
		got, err := ParseComputePolicy(string(p))
		require.NoError(t, err)
		require.Equal(t, p, got)
		require.Equal(t, p, ComputePolicyOfCode(p.Code()), "name -> code -> name round trip")
	}
	def, err := ParseComputePolicy("")
	require.NoError(t, err)
	require.Equal(t, ComputePolicyCap, def)
	require.Equal(t, ComputePolicyCap, ComputePolicy("").Normalized())
	require.Equal(t, uint32(shm.PolicyCap), ComputePolicy("").Code())
	require.Equal(t, uint32(shm.PolicyCap), ComputePolicyCap.Code())
	require.Equal(t, uint32(shm.PolicyShare), ComputePolicyShare.Code())
	_, err = ParseComputePolicy("burst")
	require.ErrorIs(t, err, ErrUnknownComputePolicy)
	require.EqualError(t, err, `unknown compute policy "burst" (want cap or share)`)
	require.Equal(t, ComputePolicy("unknown-9"), ComputePolicyOfCode(9))

	// On the wire: compute_policy, left out of a request that names none.
	data, err := json.Marshal(AllocRequest{MemoryBytes: 1, ComputePolicy: ComputePolicyShare})
	require.NoError(t, err)
	require.JSONEq(t, `{"memory_bytes":1,"owner":{},"compute_policy":"share"}`, string(data))
	data, err = json.Marshal(AllocRequest{MemoryBytes: 1})
	require.NoError(t, err)
	require.NotContains(t, string(data), "compute_policy")
}

// TestSliceBudgetSpecPolicy: the budget records the policy asked; none is cap.
func TestSliceBudgetSpecPolicy(t *testing.T) {
	devs := []SliceDevice{{Index: 0, UUID: "GPU-a", MemoryBytes: 1 << 30, ComputePercent: 40}}
	for policy, code := range map[ComputePolicy]uint32{"": shm.PolicyCap, ComputePolicyCap: shm.PolicyCap,
		ComputePolicyShare: shm.PolicyShare} {
		spec, err := SliceBudget{ID: "p", Devices: devs, ComputePolicy: policy, Booked: true}.Spec()
		require.NoError(t, err, "%q", policy)
		require.Equal(t, code, spec.Policy, "%q", policy)
		require.Equal(t, uint32(4000), spec.Devices[0].ComputeShareBP, "the policy changes nothing else")
		require.Equal(t, uint32(4000), spec.Devices[0].ComputeFloorBP)
	}
	_, err := SliceBudget{ID: "p", Devices: devs, ComputePolicy: "burst"}.Spec()
	require.ErrorIs(t, err, ErrUnknownComputePolicy)
	require.ErrorContains(t, err, "slice p")
}

// TestValidSliceID: the rule the three regexes spelled before, with the
// length taken from the budget's slice_id field.
func TestValidSliceID(t *testing.T) {
	old := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	cases := []string{"", "a", "0", "A.b-c_d", ".hidden", "-x", "_x", "a/b", "a b", "..", "é",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "c-" + strings.Repeat("f", 48), "x\n"}
	for _, id := range cases {
		require.Equal(t, old.MatchString(id), ValidSliceID(id), "%q", id)
	}
	require.Equal(t, shm.SliceIDLen-1, MaxSliceIDLen)
	require.Contains(t, SliceIDRule, "63")
}

func TestShareBP(t *testing.T) {
	for pct, bp := range map[float64]uint32{0: 0, 100: 10000, 30: 3000, 33.33: 3333, 0.01: 1, 0.005: 1} {
		got, err := ShareBP(pct)
		require.NoError(t, err, "%v", pct)
		require.Equal(t, bp, got, "%v", pct)
	}
	require.InDelta(t, 33.33, SharePercent(3333), 1e-9)
	for _, bad := range []float64{-1, 100.5, 0.004} {
		_, err := ShareBP(bad)
		require.Error(t, err, "%v", bad)
	}
}

// TestSliceBudgetSpec: a booked guaranteed slice records its guarantees; an
// unbooked one (no daemon) and a burstable one do not; no share asked is the
// whole device, unthrottled; a share starts at its static token rate.
func TestSliceBudgetSpec(t *testing.T) {
	devs := []SliceDevice{{Index: 0, UUID: "GPU-a", MemoryBytes: 1 << 30, ComputePercent: 30}, {Index: 1, MemoryBytes: 2 << 30}}
	spec, err := SliceBudget{ID: "s", Devices: devs, Priority: 2, ContextOverhead: 1 << 20, Booked: true}.Spec()
	require.NoError(t, err)
	rate, burst := shm.StaticTokenBucket(3000)
	require.Equal(t, shm.SliceSpec{ID: "s", Priority: 2, QoS: shm.QoSGuaranteed, Policy: shm.PolicyCap,
		Devices: []shm.DeviceBudget{
			{Index: 0, UUID: "GPU-a", MemoryLimit: 1 << 30, MemoryGuaranteed: 1 << 30, ContextOverhead: 1 << 20,
				ComputeShareBP: 3000, ComputeFloorBP: 3000, TokenRate: rate, TokenBurst: burst},
			{Index: 1, MemoryLimit: 2 << 30, MemoryGuaranteed: 2 << 30, ContextOverhead: 1 << 20, ComputeShareBP: shm.MaxShareBP},
		}}, spec)

	spec, err = SliceBudget{ID: "m", Devices: devs, Booked: true, Managed: true}.Spec()
	require.NoError(t, err)
	require.Equal(t, uint32(shm.BudgetFlagManaged), spec.Flags, "vgpud's slices are managed from the start")

	for _, b := range []SliceBudget{{ID: "u", Devices: devs}, {ID: "b", Devices: devs, QoS: QoSBurstable, Booked: true}} {
		spec, err = b.Spec()
		require.NoError(t, err)
		require.Zero(t, spec.Flags, "%s: not managed", b.ID)
		for _, d := range spec.Devices {
			require.Zero(t, d.MemoryGuaranteed, b.ID)
			require.Zero(t, d.ComputeFloorBP, b.ID)
		}
	}

	for name, b := range map[string]SliceBudget{
		"qos":      {ID: "x", Devices: devs, QoS: "gold"},
		"policy":   {ID: "x", Devices: devs, ComputePolicy: "gold"},
		"priority": {ID: "x", Devices: devs, Priority: -1},
		"compute":  {ID: "x", Devices: []SliceDevice{{MemoryBytes: 1, ComputePercent: 101}}},
		"index":    {ID: "x", Devices: []SliceDevice{{Index: -1, MemoryBytes: 1}}},
		"memory":   {ID: "x", Devices: []SliceDevice{{}}},
	} {
		_, err := b.Spec()
		require.Error(t, err, name)
	}
}

// TestAllocRequestValidate: the checks vgpud and vgpu-runtime share, each
// refusal naming its field and its reason.
func TestAllocRequestValidate(t *testing.T) {
	const gib = 1 << 30
	ok := []AllocRequest{
		{MemoryBytes: 1},
		{MemoryPercent: 100, ComputePercent: 0.01, QoS: QoSBestEffort, Priority: math.MaxUint32,
			Placement: PlacementSpread, DeviceCount: MaxSliceDevices},
		{MemoryBytes: gib, UUIDs: []string{"GPU-a", "GPU-b"}, DeviceCount: 2},
		{MemoryBytes: gib, ComputePercent: 40, ComputePolicy: ComputePolicyShare},
		{MemoryBytes: gib, ComputePolicy: ComputePolicyCap},
	}
	for _, r := range ok {
		require.NoError(t, r.Validate(), "%+v", r)
	}
	sixteen := make([]string, MaxSliceDevices+1)
	for i := range sixteen {
		sixteen[i] = "GPU-" + strings.Repeat("x", i+1)
	}
	bad := []struct {
		req    AllocRequest
		field  string
		reason string
	}{
		{AllocRequest{MemoryBytes: gib, MemoryPercent: 1}, "memory_bytes", "memory is asked both in bytes and in percent; give one"},
		{AllocRequest{}, "memory_bytes", "no memory asked: give memory in bytes or in percent of a device"},
		{AllocRequest{MemoryPercent: -1}, "memory_percent", "memory percent -1 out of range (0, 100]"},
		{AllocRequest{MemoryPercent: math.NaN()}, "memory_percent", "memory percent NaN out of range (0, 100]"},
		{AllocRequest{MemoryBytes: gib, ComputePercent: 100.5}, "compute_percent", "compute percent 100.5 out of range (0, 100]"},
		{AllocRequest{MemoryBytes: gib, ComputePercent: 0.001}, "compute_percent", "compute percent 0.001 is below the 0.01% granularity"},
		{AllocRequest{MemoryBytes: gib, QoS: "gold"}, "qos", `unknown qos "gold" (want guaranteed, burstable or best-effort)`},
		{AllocRequest{MemoryBytes: gib, ComputePolicy: "burst"}, "compute_policy", `unknown compute policy "burst" (want cap or share)`},
		{AllocRequest{MemoryBytes: gib, ComputePolicy: "Share"}, "compute_policy", `unknown compute policy "Share" (want cap or share)`},
		{AllocRequest{MemoryBytes: gib, Priority: -3}, "priority", "priority -3 is negative"},
		{AllocRequest{MemoryBytes: gib, Priority: math.MaxUint32 + 1}, "priority", "priority 4294967296 out of range (at most 4294967295)"},
		{AllocRequest{MemoryBytes: gib, Placement: "random"}, "placement", `unknown placement "random" (want binpack or spread)`},
		{AllocRequest{MemoryBytes: gib, DeviceCount: -1}, "device_count", "device count -1 is negative"},
		{AllocRequest{MemoryBytes: gib, DeviceCount: 17}, "device_count", "17 devices asked, a slice spans at most 16"},
		{AllocRequest{MemoryBytes: gib, UUIDs: sixteen}, "device_count", "17 devices asked, a slice spans at most 16"},
		{AllocRequest{MemoryBytes: gib, DeviceCount: 1, UUIDs: []string{"GPU-a", "GPU-b"}}, "uuids", "device count 1 but 2 uuids given"},
		{AllocRequest{MemoryBytes: gib, UUIDs: []string{"GPU-a", "GPU-a"}}, "uuids", "uuid GPU-a given twice"},
		// The first problem is the one reported: memory, sharing, devices.
		{AllocRequest{Priority: -1, DeviceCount: -1}, "memory_bytes", "no memory asked: give memory in bytes or in percent of a device"},
		{AllocRequest{MemoryBytes: 1, Priority: -1, DeviceCount: -1}, "priority", "priority -1 is negative"},
	}
	for _, c := range bad {
		err := c.req.Validate()
		require.ErrorIs(t, err, ErrInvalidRequest, "%+v", c.req)
		var re *RequestError
		require.ErrorAs(t, err, &re)
		require.Equal(t, c.field, re.Field, "%+v", c.req)
		require.Equal(t, c.reason, re.Reason)
		require.Equal(t, "invalid request: "+c.reason, err.Error())
	}

	// ValidateOn also checks pinned uuids against the node, in list order.
	has := func(u string) bool { return u == "GPU-a" }
	require.NoError(t, AllocRequest{MemoryBytes: 1, UUIDs: []string{"GPU-a"}}.ValidateOn(has))
	err := AllocRequest{MemoryBytes: 1, UUIDs: []string{"GPU-a", "GPU-z"}}.ValidateOn(has)
	require.EqualError(t, err, `invalid request: no device with uuid "GPU-z" on this node`)
}
