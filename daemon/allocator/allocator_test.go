package allocator

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
)

const gib = 1 << 30

// uuid is device i's uuid in these tests.
func uuid(i int) string { return fmt.Sprintf("GPU-00000000-0000-0000-0000-%012d", i) }

// node makes devices with these memory sizes, indices 0..n-1.
func node(mems ...uint64) []devices.Device {
	out := make([]devices.Device, len(mems))
	for i, m := range mems {
		out[i] = devices.Device{Index: i, UUID: uuid(i), Name: "test GPU", MemoryBytes: m, Minor: i, NUMANode: -1}
	}
	return out
}

func newAlloc(t *testing.T, placement string, mems ...uint64) *Allocator {
	t.Helper()
	a, err := New(node(mems...), placement)
	require.NoError(t, err)
	return a
}

// indices are the device indices of a placement.
func indices(sd []api.SliceDevice) []int {
	out := make([]int, len(sd))
	for i, d := range sd {
		out[i] = d.Index
	}
	return out
}

func TestNewValidates(t *testing.T) {
	a, err := New(node(gib), "")
	require.NoError(t, err)
	require.Equal(t, api.PlacementBinpack, a.Placement(), "the default policy is binpack")

	_, err = New(node(gib), "roundrobin")
	require.ErrorContains(t, err, `unknown placement policy "roundrobin"`)

	devs := node(gib, gib)
	devs[1].UUID = devs[0].UUID
	_, err = New(devs, "")
	require.ErrorContains(t, err, "listed twice")

	devs = node(gib)
	devs[0].UUID = ""
	_, err = New(devs, "")
	require.ErrorContains(t, err, "no uuid")

	_, err = New(node(0), "")
	require.ErrorContains(t, err, "no memory")

	empty, err := New(nil, "spread")
	require.NoError(t, err)
	_, err = empty.Allocate("a", api.AllocRequest{MemoryBytes: 1})
	var refused *RefusedError
	require.ErrorAs(t, err, &refused)
	require.Equal(t, []string{"needs 1 device, node has 0"}, refused.Reasons)
}

// Each case books its requests in order and checks where each one went.
func TestPlacement(t *testing.T) {
	type step struct {
		req  api.AllocRequest
		want []int // device indices; nil: refused
	}
	mem := func(b uint64) api.AllocRequest { return api.AllocRequest{MemoryBytes: b} }
	cases := []struct {
		name      string
		placement string
		mems      []uint64
		steps     []step
	}{
		{
			name: "binpack fills the fullest device that fits", placement: api.PlacementBinpack,
			mems: []uint64{10 * gib, 10 * gib, 10 * gib},
			steps: []step{
				{mem(2 * gib), []int{0}},  // all equal: lowest index
				{mem(2 * gib), []int{0}},  // 0 has the least free (6GiB) and fits
				{mem(9 * gib), []int{1}},  // 0 cannot; 1 and 2 tie: lowest index
				{mem(1 * gib), []int{1}},  // free 6, 1, 10: 1 has exactly enough
				{mem(6 * gib), []int{0}},  // free 6, 0, 10: 0 fits exactly
				{mem(11 * gib), nil},      // nothing is that big
				{mem(10 * gib), []int{2}}, // only 2 is empty
				{mem(1), nil},             // node full
			},
		},
		{
			name: "spread takes the emptiest device", placement: api.PlacementSpread,
			mems: []uint64{10 * gib, 10 * gib, 10 * gib},
			steps: []step{
				{mem(2 * gib), []int{0}},
				{mem(2 * gib), []int{1}},
				{mem(2 * gib), []int{2}},
				{mem(1 * gib), []int{0}}, // all 8 free: lowest index
				{mem(1 * gib), []int{1}}, // 7, 8, 8
				{mem(8 * gib), []int{2}}, // only 2 has 8
				{mem(8 * gib), nil},
			},
		},
		{
			name: "binpack on devices of different sizes", placement: api.PlacementBinpack,
			mems: []uint64{8 * gib, 16 * gib, 4 * gib},
			steps: []step{
				{mem(2 * gib), []int{2}}, // 4GiB device is the fullest (least free)
				{mem(3 * gib), []int{0}}, // free 8, 16, 2: 2 cannot, 0 is next
				{mem(5 * gib), []int{0}}, // free 5, 16, 2
				{mem(2 * gib), []int{2}},
				{mem(1 * gib), []int{1}},
			},
		},
		{
			name: "spread on devices of different sizes", placement: api.PlacementSpread,
			mems: []uint64{8 * gib, 16 * gib, 4 * gib},
			steps: []step{
				{mem(2 * gib), []int{1}},
				{mem(7 * gib), []int{1}}, // free 8, 14, 4
				{mem(2 * gib), []int{0}}, // free 8, 7, 4
				{mem(6 * gib), []int{1}}, // free 6, 7, 4
			},
		},
		{
			name: "per-request placement overrides the node's", placement: api.PlacementBinpack,
			mems: []uint64{10 * gib, 10 * gib},
			steps: []step{
				{mem(1 * gib), []int{0}},
				{api.AllocRequest{MemoryBytes: gib, Placement: api.PlacementSpread}, []int{1}},
				{api.AllocRequest{MemoryBytes: gib, Placement: api.PlacementBinpack}, []int{0}},
			},
		},
		{
			name: "multi-device binpack takes the fullest that fit, in index order", placement: api.PlacementBinpack,
			mems: []uint64{10 * gib, 10 * gib, 10 * gib, 10 * gib},
			steps: []step{
				{mem(3 * gib), []int{0}},
				{mem(5 * gib), []int{0}}, // free 2, 10, 10, 10
				{mem(4 * gib), []int{1}}, // free 2, 6, 10, 10
				{api.AllocRequest{MemoryBytes: 3 * gib, DeviceCount: 2}, []int{1, 2}},
				{api.AllocRequest{MemoryBytes: 3 * gib, DeviceCount: 3}, []int{1, 2, 3}}, // free 2, 3, 7, 10
				{api.AllocRequest{MemoryBytes: 3 * gib, DeviceCount: 2}, []int{2, 3}},    // free 2, 0, 4, 7
				{api.AllocRequest{MemoryBytes: 2 * gib, DeviceCount: 2}, []int{0, 3}},    // free 2, 0, 1, 4
			},
		},
		{
			name: "multi-device spread takes the emptiest", placement: api.PlacementSpread,
			mems: []uint64{10 * gib, 10 * gib, 10 * gib, 10 * gib},
			steps: []step{
				{mem(3 * gib), []int{0}},
				{mem(4 * gib), []int{1}},
				{api.AllocRequest{MemoryBytes: 1 * gib, DeviceCount: 2}, []int{2, 3}},
				{api.AllocRequest{MemoryBytes: 1 * gib, DeviceCount: 3}, []int{0, 2, 3}}, // free 7, 6, 9, 9
				{api.AllocRequest{MemoryBytes: 1 * gib, DeviceCount: 4}, []int{0, 1, 2, 3}},
			},
		},
		{
			name: "pinned devices keep the order given and ignore the policy", placement: api.PlacementSpread,
			mems: []uint64{10 * gib, 10 * gib, 10 * gib},
			steps: []step{
				{api.AllocRequest{MemoryBytes: gib, UUIDs: []string{uuid(2), uuid(0)}}, []int{2, 0}},
				{api.AllocRequest{MemoryBytes: 9 * gib, UUIDs: []string{uuid(2)}, DeviceCount: 1}, []int{2}},
				{api.AllocRequest{MemoryBytes: gib, UUIDs: []string{uuid(2)}}, nil}, // full, though others are not
			},
		},
		{
			name: "compute share limits guaranteed slices", placement: api.PlacementBinpack,
			mems: []uint64{10 * gib, 10 * gib},
			steps: []step{
				{api.AllocRequest{MemoryBytes: gib, ComputePercent: 60}, []int{0}},
				{api.AllocRequest{MemoryBytes: gib, ComputePercent: 50}, []int{1}}, // 0 has 40% left
				{api.AllocRequest{MemoryBytes: gib, ComputePercent: 40}, []int{0}}, // 0 fullest, 40% fits exactly
				{api.AllocRequest{MemoryBytes: gib, ComputePercent: 50}, []int{1}},
				{api.AllocRequest{MemoryBytes: gib, ComputePercent: 0.01}, nil},
				{api.AllocRequest{MemoryBytes: gib, ComputePercent: 100}, nil},
				{api.AllocRequest{MemoryBytes: gib}, []int{0}}, // no share asked: none reserved
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAlloc(t, tc.placement, tc.mems...)
			for i, st := range tc.steps {
				got, err := a.Allocate(fmt.Sprintf("s%d", i), st.req)
				if st.want == nil {
					var refused *RefusedError
					require.ErrorAs(t, err, &refused, "step %d should be refused, got %v", i, got)
					continue
				}
				require.NoError(t, err, "step %d", i)
				require.Equal(t, st.want, indices(got), "step %d", i)
				for _, d := range got {
					require.Equal(t, uuid(d.Index), d.UUID)
				}
			}
			checkBooks(t, a)
		})
	}
}

func TestMemoryPercent(t *testing.T) {
	// 8GiB and 16GiB devices: a percent is of each chosen device.
	a := newAlloc(t, api.PlacementBinpack, 8*gib, 16*gib)
	got, err := a.Allocate("quarter", api.AllocRequest{MemoryPercent: 25})
	require.NoError(t, err)
	require.Equal(t, []api.SliceDevice{{Index: 0, UUID: uuid(0), MemoryBytes: 2 * gib}}, got)

	got, err = a.Allocate("spread-quarter", api.AllocRequest{MemoryPercent: 25, Placement: api.PlacementSpread, ComputePercent: 0})
	require.NoError(t, err)
	require.Equal(t, []api.SliceDevice{{Index: 1, UUID: uuid(1), MemoryBytes: 4 * gib}}, got)

	b := newAlloc(t, api.PlacementBinpack, 8*gib, 16*gib)
	got, err = b.Allocate("both", api.AllocRequest{MemoryPercent: 50, DeviceCount: 2, ComputePercent: 25})
	require.NoError(t, err)
	require.Equal(t, []api.SliceDevice{
		{Index: 0, UUID: uuid(0), MemoryBytes: 4 * gib, ComputePercent: 25},
		{Index: 1, UUID: uuid(1), MemoryBytes: 8 * gib, ComputePercent: 25},
	}, got)

	// Rounded down to a whole MiB: 33.3% of 1000MiB+123B is 333.0MiB+...
	odd := uint64(1000*mib + 123)
	c := newAlloc(t, "", odd)
	got, err = c.Allocate("third", api.AllocRequest{MemoryPercent: 33.3})
	require.NoError(t, err)
	require.Equal(t, uint64(333*mib), got[0].MemoryBytes)
	require.Zero(t, got[0].MemoryBytes%mib)

	// 100% of a device is all of it, and then nothing fits.
	d := newAlloc(t, "", 3*gib+5*mib)
	got, err = d.Allocate("all", api.AllocRequest{MemoryPercent: 100})
	require.NoError(t, err)
	require.Equal(t, uint64(3*gib+5*mib), got[0].MemoryBytes)
	_, err = d.Allocate("more", api.AllocRequest{MemoryPercent: 1})
	var refused *RefusedError
	require.ErrorAs(t, err, &refused)

	// A percent that is less than 1MiB of the device is refused with the reason.
	e := newAlloc(t, "", 64*mib)
	_, err = e.Allocate("tiny", api.AllocRequest{MemoryPercent: 1})
	require.ErrorAs(t, err, &refused)
	require.Equal(t, []string{uuid(0) + " (index 0): 1% of 64.0MiB is less than 1MiB"}, refused.Reasons)
}

func TestInvalidRequests(t *testing.T) {
	a := newAlloc(t, "", 10*gib, 10*gib)
	cases := []struct {
		name string
		req  api.AllocRequest
		msg  string
	}{
		{"bytes and percent", api.AllocRequest{MemoryBytes: gib, MemoryPercent: 10}, "both in bytes and in percent"},
		{"no memory", api.AllocRequest{}, "no memory asked"},
		{"percent over 100", api.AllocRequest{MemoryPercent: 100.5}, "memory percent 100.5 out of range"},
		{"negative percent", api.AllocRequest{MemoryPercent: -5}, "memory percent -5 out of range"},
		{"NaN percent", api.AllocRequest{MemoryPercent: math.NaN()}, "memory percent NaN out of range"},
		{"compute over 100", api.AllocRequest{MemoryBytes: gib, ComputePercent: 101}, "compute percent 101 out of range"},
		{"negative compute", api.AllocRequest{MemoryBytes: gib, ComputePercent: -1}, "compute percent -1 out of range"},
		{"NaN compute", api.AllocRequest{MemoryBytes: gib, ComputePercent: math.NaN()}, "compute percent NaN out of range"},
		{"infinite compute", api.AllocRequest{MemoryBytes: gib, ComputePercent: math.Inf(1)}, "compute percent +Inf out of range"},
		{"compute below granularity", api.AllocRequest{MemoryBytes: gib, ComputePercent: 0.001}, "below the 0.01% granularity"},
		{"unknown qos", api.AllocRequest{MemoryBytes: gib, QoS: "platinum"}, `unknown qos "platinum"`},
		{"unknown placement", api.AllocRequest{MemoryBytes: gib, Placement: "random"}, `unknown placement "random"`},
		{"negative count", api.AllocRequest{MemoryBytes: gib, DeviceCount: -1}, "device count -1 is negative"},
		{"too many devices", api.AllocRequest{MemoryBytes: gib, DeviceCount: 17}, "17 devices asked, a slice spans at most 16"},
		{"unknown uuid", api.AllocRequest{MemoryBytes: gib, UUIDs: []string{"GPU-nope"}}, `no device with uuid "GPU-nope"`},
		{"duplicate uuid", api.AllocRequest{MemoryBytes: gib, UUIDs: []string{uuid(1), uuid(1)}}, "given twice"},
		{"count and uuids disagree", api.AllocRequest{MemoryBytes: gib, DeviceCount: 1, UUIDs: []string{uuid(0), uuid(1)}}, "device count 1 but 2 uuids given"},
		{"negative priority", api.AllocRequest{MemoryBytes: gib, Priority: -1}, "priority -1 is negative"},
		{"priority over uint32", api.AllocRequest{MemoryBytes: gib, Priority: math.MaxUint32 + 1}, "priority 4294967296 out of range (at most 4294967295)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Allocate("x", tc.req)
			require.Nil(t, got)
			require.ErrorIs(t, err, ErrInvalidRequest)
			require.ErrorContains(t, err, tc.msg)
			var refused *RefusedError
			require.False(t, errors.As(err, &refused), "an invalid request is not a refusal")
		})
	}
	_, err := a.Allocate("", api.AllocRequest{MemoryBytes: gib})
	require.ErrorIs(t, err, ErrInvalidRequest)

	// Nothing was booked by any of them.
	for _, d := range a.Devices() {
		require.Zero(t, d.Slices)
		require.Zero(t, d.AllocatedBytes)
	}

	_, err = a.Allocate("dup", api.AllocRequest{MemoryBytes: gib})
	require.NoError(t, err)
	_, err = a.Allocate("dup", api.AllocRequest{MemoryBytes: gib})
	require.ErrorIs(t, err, ErrExists)
	require.True(t, a.Has("dup"))
	require.False(t, a.Has("nope"))
}

func TestRefusalReasons(t *testing.T) {
	refusal := func(t *testing.T, a *Allocator, req api.AllocRequest) []string {
		t.Helper()
		_, err := a.Allocate("refused", req)
		var refused *RefusedError
		require.ErrorAs(t, err, &refused)
		require.NotErrorIs(t, err, ErrInvalidRequest)
		require.Contains(t, err.Error(), "slice does not fit: ")
		return refused.Reasons
	}

	t.Run("memory on every device", func(t *testing.T) {
		a := newAlloc(t, "", 4*gib, 8*gib)
		_, err := a.Allocate("a", api.AllocRequest{MemoryBytes: 2 * gib, UUIDs: []string{uuid(0)}})
		require.NoError(t, err)
		_, err = a.Allocate("b", api.AllocRequest{MemoryBytes: 4*gib + 512*mib, UUIDs: []string{uuid(1)}})
		require.NoError(t, err)
		require.Equal(t, []string{
			uuid(0) + " (index 0): 2.0GiB guaranteed memory free, 4.0GiB asked",
			uuid(1) + " (index 1): 3.5GiB guaranteed memory free, 4.0GiB asked",
		}, refusal(t, a, api.AllocRequest{MemoryBytes: 4 * gib}))
	})

	t.Run("compute", func(t *testing.T) {
		a := newAlloc(t, "", 4*gib)
		_, err := a.Allocate("a", api.AllocRequest{MemoryBytes: gib, ComputePercent: 70})
		require.NoError(t, err)
		require.Equal(t, []string{uuid(0) + " (index 0): 30% compute free, 50% asked"},
			refusal(t, a, api.AllocRequest{MemoryBytes: gib, ComputePercent: 50}))
		// Both lacks on one device are reported.
		require.Equal(t, []string{
			uuid(0) + " (index 0): 3.0GiB guaranteed memory free, 4.0GiB asked",
			uuid(0) + " (index 0): 30% compute free, 33.33% asked",
		}, refusal(t, a, api.AllocRequest{MemoryBytes: 4 * gib, ComputePercent: 33.33}))
	})

	t.Run("rounding never makes free look like asked", func(t *testing.T) {
		a := newAlloc(t, "", 2*gib)
		_, err := a.Allocate("a", api.AllocRequest{MemoryBytes: 1})
		require.NoError(t, err)
		require.Equal(t, []string{uuid(0) + " (index 0): 1.9GiB guaranteed memory free, 2.0GiB asked"},
			refusal(t, a, api.AllocRequest{MemoryBytes: 2 * gib}))
		require.Equal(t, []string{uuid(0) + " (index 0): 1.9GiB guaranteed memory free, 2.1GiB asked"},
			refusal(t, a, api.AllocRequest{MemoryBytes: 2*gib + 1}))
	})

	t.Run("request level", func(t *testing.T) {
		a := newAlloc(t, "", 4*gib, 4*gib)
		require.Equal(t, []string{"needs 3 devices, node has 2"},
			refusal(t, a, api.AllocRequest{MemoryBytes: gib, DeviceCount: 3}))
		_, err := a.Allocate("a", api.AllocRequest{MemoryBytes: 3 * gib})
		require.NoError(t, err)
		require.Equal(t, []string{
			uuid(0) + " (index 0): 1.0GiB guaranteed memory free, 2.0GiB asked",
			"needs 2 devices with room, 1 has it",
		}, refusal(t, a, api.AllocRequest{MemoryBytes: 2 * gib, DeviceCount: 2}))
	})

	t.Run("pinned device", func(t *testing.T) {
		a := newAlloc(t, "", 4*gib, 4*gib)
		_, err := a.Allocate("a", api.AllocRequest{MemoryBytes: 4 * gib, UUIDs: []string{uuid(1)}})
		require.NoError(t, err)
		require.Equal(t, []string{uuid(1) + " (index 1): 0B guaranteed memory free, 512.0MiB asked"},
			refusal(t, a, api.AllocRequest{MemoryBytes: 512 * mib, UUIDs: []string{uuid(0), uuid(1)}}))
	})

	t.Run("burstable larger than the device", func(t *testing.T) {
		a := newAlloc(t, "", 4*gib)
		require.Equal(t, []string{uuid(0) + " (index 0): 4.0GiB memory, 5.0GiB asked"},
			refusal(t, a, api.AllocRequest{MemoryBytes: 5 * gib, QoS: api.QoSBurstable}))
	})
}

func TestQoSClasses(t *testing.T) {
	a := newAlloc(t, "", 10*gib)
	_, err := a.Allocate("g", api.AllocRequest{MemoryBytes: 8 * gib, ComputePercent: 80, QoS: api.QoSGuaranteed})
	require.NoError(t, err)
	// Burstable and best-effort slices reserve nothing: they fit beside a
	// guaranteed slice that holds most of the device, and overcommit it.
	_, err = a.Allocate("b", api.AllocRequest{MemoryBytes: 10 * gib, ComputePercent: 100, QoS: api.QoSBurstable})
	require.NoError(t, err)
	_, err = a.Allocate("e", api.AllocRequest{MemoryBytes: 6 * gib, ComputePercent: 50, QoS: api.QoSBestEffort})
	require.NoError(t, err)
	// A guaranteed slice still only gets what no guaranteed slice holds.
	_, err = a.Allocate("g2", api.AllocRequest{MemoryBytes: 2 * gib, ComputePercent: 20})
	require.NoError(t, err)
	_, err = a.Allocate("g3", api.AllocRequest{MemoryBytes: 1, ComputePercent: 1})
	var refused *RefusedError
	require.ErrorAs(t, err, &refused)

	d := a.Devices()[0]
	require.Equal(t, uint64(10*gib), d.GuaranteedBytes)
	require.Equal(t, uint64(26*gib), d.AllocatedBytes)
	require.Equal(t, 100.0, d.ComputePercent)
	require.Equal(t, 4, d.Slices)

	require.True(t, a.Release("b"))
	d = a.Devices()[0]
	require.Equal(t, uint64(10*gib), d.GuaranteedBytes, "a burstable release frees no guaranteed memory")
	require.Equal(t, uint64(16*gib), d.AllocatedBytes)
}

func TestDevicesReport(t *testing.T) {
	devs := node(8*gib, 16*gib)
	devs[1].PCIBusID, devs[1].NUMANode, devs[1].Name = "00000000:17:00.0", 1, "NVIDIA H100"
	a, err := New(devs, "")
	require.NoError(t, err)
	_, err = a.Allocate("a", api.AllocRequest{MemoryBytes: 3 * gib, ComputePercent: 12.5, DeviceCount: 2})
	require.NoError(t, err)
	require.Equal(t, []api.Device{
		{Index: 0, UUID: uuid(0), Name: "test GPU", MemoryBytes: 8 * gib, Minor: 0, NUMANode: -1,
			GuaranteedBytes: 3 * gib, AllocatedBytes: 3 * gib, ComputePercent: 12.5, Slices: 1},
		{Index: 1, UUID: uuid(1), Name: "NVIDIA H100", MemoryBytes: 16 * gib, Minor: 1,
			PCIBusID: "00000000:17:00.0", NUMANode: 1,
			GuaranteedBytes: 3 * gib, AllocatedBytes: 3 * gib, ComputePercent: 12.5, Slices: 1},
	}, a.Devices())
}

func TestReleaseAndRestore(t *testing.T) {
	a := newAlloc(t, "", 10*gib, 10*gib)
	placed := map[string][]api.SliceDevice{}
	qos := map[string]api.QoS{"g": api.QoSGuaranteed, "b": api.QoSBurstable, "m": ""}
	reqs := map[string]api.AllocRequest{
		"g": {MemoryBytes: 3 * gib, ComputePercent: 30},
		"b": {MemoryBytes: 9 * gib, ComputePercent: 90, QoS: api.QoSBurstable},
		"m": {MemoryPercent: 20, ComputePercent: 33.33, DeviceCount: 2},
	}
	for _, id := range []string{"g", "b", "m"} {
		got, err := a.Allocate(id, reqs[id])
		require.NoError(t, err)
		placed[id] = got
	}
	booked := a.Devices()

	require.False(t, a.Release("nope"))
	for id := range placed {
		require.True(t, a.Release(id))
		require.False(t, a.Release(id), "released twice")
	}
	for _, d := range a.Devices() {
		require.Zero(t, d.GuaranteedBytes)
		require.Zero(t, d.AllocatedBytes)
		require.Zero(t, d.ComputePercent)
		require.Zero(t, d.Slices)
	}

	// Restoring what was placed gives the same books.
	for _, id := range []string{"g", "b", "m"} {
		require.NoError(t, a.Restore(id, placed[id], qos[id]))
	}
	require.Equal(t, booked, a.Devices())
	require.ErrorIs(t, a.Restore("g", placed["g"], ""), ErrExists)

	// A restored slice is released like any other.
	require.True(t, a.Release("m"))
	_, err := a.Allocate("m2", api.AllocRequest{MemoryPercent: 20, ComputePercent: 33.33, DeviceCount: 2})
	require.NoError(t, err)

	// Refusals leave the books unchanged.
	before := a.Devices()
	big := []api.SliceDevice{{Index: 0, UUID: uuid(0), MemoryBytes: 8 * gib, ComputePercent: 10}}
	var refused *RefusedError
	require.ErrorAs(t, a.Restore("big", big, api.QoSGuaranteed), &refused)
	require.Contains(t, refused.Reasons[0], "guaranteed memory free, slice big holds 8.0GiB")
	cpu := []api.SliceDevice{{Index: 1, UUID: uuid(1), MemoryBytes: gib, ComputePercent: 70}}
	require.ErrorAs(t, a.Restore("cpu", cpu, api.QoSGuaranteed), &refused)
	require.Equal(t, uuid(1)+" (index 1): 66.67% compute free, slice cpu holds 70%", refused.Reasons[0])
	huge := []api.SliceDevice{{Index: 1, UUID: uuid(1), MemoryBytes: 11 * gib, ComputePercent: 1}}
	require.ErrorAs(t, a.Restore("huge", huge, api.QoSBestEffort), &refused)
	// The second device fails after the first was checked: nothing is booked.
	half := []api.SliceDevice{
		{Index: 1, UUID: uuid(1), MemoryBytes: gib, ComputePercent: 1},
		{Index: 0, UUID: uuid(0), MemoryBytes: 9 * gib, ComputePercent: 1},
	}
	require.ErrorAs(t, a.Restore("half", half, ""), &refused)
	for _, bad := range []struct {
		devs []api.SliceDevice
		qos  api.QoS
		msg  string
	}{
		{[]api.SliceDevice{{UUID: "GPU-gone", MemoryBytes: gib, ComputePercent: 1}}, "", "no device with uuid GPU-gone"},
		{[]api.SliceDevice{{Index: 7, MemoryBytes: gib, ComputePercent: 1}}, "", "no device with index 7"},
		{[]api.SliceDevice{{UUID: uuid(0), MemoryBytes: gib, ComputePercent: 1}, {Index: 0, MemoryBytes: gib, ComputePercent: 1}}, "", "twice"},
		{[]api.SliceDevice{{UUID: uuid(0), MemoryBytes: 0, ComputePercent: 1}}, "", "no memory"},
		{[]api.SliceDevice{{UUID: uuid(0), MemoryBytes: gib, ComputePercent: -1}}, "", "compute percent -1"},
		{[]api.SliceDevice{{UUID: uuid(0), MemoryBytes: gib, ComputePercent: 1}}, "gold", `unknown qos "gold"`},
		{nil, "", "0 devices"},
	} {
		err := a.Restore("bad", bad.devs, bad.qos)
		require.ErrorIs(t, err, ErrInvalidRequest)
		require.ErrorContains(t, err, bad.msg)
	}
	require.ErrorIs(t, a.Restore("", placed["g"], ""), ErrInvalidRequest)
	require.Equal(t, before, a.Devices())

	// Matching by index when the record has no uuid.
	require.NoError(t, a.Restore("byindex", []api.SliceDevice{{Index: 1, MemoryBytes: gib, ComputePercent: 1}}, api.QoSBestEffort))
	require.Equal(t, before[1].Slices+1, a.Devices()[1].Slices)
}

// checkBooks asserts the allocator's invariants: guaranteed memory and compute
// never exceed a device, and the sums are exactly those of the booked slices.
func checkBooks(t *testing.T, a *Allocator) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	want := make([]device, len(a.devs))
	for _, s := range a.slices {
		for _, sh := range s.shares {
			w := &want[sh.dev]
			w.allocatedBytes += sh.bytes
			w.slices++
			if s.guaranteed {
				w.guaranteedBytes += sh.bytes
				w.guaranteedBP += sh.bp
			}
		}
	}
	for i := range a.devs {
		d := &a.devs[i]
		require.LessOrEqual(t, d.guaranteedBytes, d.MemoryBytes, "device %d overbooked", i)
		require.LessOrEqual(t, d.guaranteedBP, fullBP, "device %d compute overbooked", i)
		require.Equal(t, want[i].guaranteedBytes, d.guaranteedBytes)
		require.Equal(t, want[i].allocatedBytes, d.allocatedBytes)
		require.Equal(t, want[i].guaranteedBP, d.guaranteedBP)
		require.Equal(t, want[i].slices, d.slices)
	}
}

// 64 goroutines ask at once; the number that succeed is fixed by the node and
// the request, no device is ever overbooked, and every success is booked.
func TestConcurrentAllocationsNeverOverbook(t *testing.T) {
	cases := []struct {
		name      string
		placement string
		mems      []uint64
		req       api.AllocRequest
		want      int
	}{
		// memory-bound: floor(10/3) = 3 per device
		{"memory bound binpack", api.PlacementBinpack, []uint64{10 * gib, 10 * gib}, api.AllocRequest{MemoryBytes: 3 * gib, ComputePercent: 10}, 6},
		{"memory bound spread", api.PlacementSpread, []uint64{10 * gib, 10 * gib}, api.AllocRequest{MemoryBytes: 3 * gib, ComputePercent: 10}, 6},
		// compute-bound: floor(100/30) = 3 per device
		{"compute bound", api.PlacementBinpack, []uint64{10 * gib, 10 * gib, 10 * gib}, api.AllocRequest{MemoryBytes: gib, ComputePercent: 30}, 9},
		// percent of devices of different sizes: 4 per device
		{"percent", api.PlacementSpread, []uint64{8 * gib, 16 * gib}, api.AllocRequest{MemoryPercent: 25, ComputePercent: 1}, 8},
		// two devices per slice, two slices' worth per device: 4*2/2
		{"multi-device", api.PlacementBinpack, []uint64{10 * gib, 10 * gib, 10 * gib, 10 * gib}, api.AllocRequest{MemoryBytes: 4 * gib, DeviceCount: 2, ComputePercent: 5}, 4},
		// every slice pinned to one device
		{"pinned", api.PlacementBinpack, []uint64{10 * gib, 10 * gib}, api.AllocRequest{MemoryBytes: gib, ComputePercent: 7, UUIDs: []string{uuid(1)}}, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAlloc(t, tc.placement, tc.mems...)
			const n = 64
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				success = map[string][]api.SliceDevice{}
				errs    []error
				stop    = make(chan struct{})
				watched = make(chan struct{})
			)
			// A watcher reads the books while they change: the sums it sees are
			// never over a device.
			go func() {
				defer close(watched)
				for {
					select {
					case <-stop:
						return
					default:
					}
					for _, d := range a.Devices() {
						if d.GuaranteedBytes > d.MemoryBytes || d.ComputePercent > 100 {
							mu.Lock()
							errs = append(errs, fmt.Errorf("device %d overbooked: %+v", d.Index, d))
							mu.Unlock()
						}
					}
				}
			}()
			start := make(chan struct{})
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					<-start
					id := fmt.Sprintf("s%02d", i)
					got, err := a.Allocate(id, tc.req)
					mu.Lock()
					defer mu.Unlock()
					var refused *RefusedError
					switch {
					case err == nil:
						success[id] = got
					case !errors.As(err, &refused):
						errs = append(errs, err)
					}
				}(i)
			}
			close(start)
			wg.Wait()
			close(stop)
			<-watched
			require.Empty(t, errs)
			require.Len(t, success, tc.want)
			checkBooks(t, a)

			// The books equal the sum of the successes' shares.
			perDev := make(map[int]uint64)
			for _, sd := range success {
				for _, d := range sd {
					perDev[d.Index] += d.MemoryBytes
				}
			}
			for _, d := range a.Devices() {
				require.Equal(t, perDev[d.Index], d.GuaranteedBytes)
				require.LessOrEqual(t, d.GuaranteedBytes, d.MemoryBytes)
				require.LessOrEqual(t, d.ComputePercent, 100.0)
			}

			// Releasing everything concurrently leaves an empty node.
			for id := range success {
				wg.Add(1)
				go func(id string) {
					defer wg.Done()
					assert.True(t, a.Release(id))
				}(id)
			}
			wg.Wait()
			for _, d := range a.Devices() {
				require.Zero(t, d.GuaranteedBytes)
				require.Zero(t, d.Slices)
				require.Zero(t, d.ComputePercent)
			}
		})
	}
}

// Allocations and releases interleaved from many goroutines keep the books
// exact.
func TestConcurrentChurn(t *testing.T) {
	a := newAlloc(t, api.PlacementSpread, 10*gib, 10*gib, 10*gib)
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				id := fmt.Sprintf("g%d-%d", g, i)
				req := api.AllocRequest{MemoryBytes: uint64(1+(g+i)%4) * gib, ComputePercent: float64(1 + (g*7+i)%40), DeviceCount: 1 + (g+i)%2}
				if (g+i)%5 == 0 {
					req.QoS = api.QoSBurstable
				}
				if _, err := a.Allocate(id, req); err == nil && i%2 == 0 {
					a.Release(id)
				}
			}
		}(g)
	}
	wg.Wait()
	checkBooks(t, a)
}

func TestSizeFormatting(t *testing.T) {
	require.Equal(t, "0B", sizeFloor(0))
	require.Equal(t, "1023B", sizeCeil(1023))
	require.Equal(t, "1.0KiB", sizeFloor(1024))
	require.Equal(t, "2.0GiB", sizeCeil(2*gib))
	require.Equal(t, "2.0GiB", sizeFloor(2*gib))
	require.Equal(t, "1.9GiB", sizeFloor(2*gib-1))
	require.Equal(t, "2.1GiB", sizeCeil(2*gib+1))
	require.Equal(t, "80.0GiB", sizeFloor(80*gib))
	require.Equal(t, "1.5TiB", sizeFloor(1536*gib))
	require.Equal(t, "16777216.0TiB", sizeCeil(math.MaxUint64))
	require.Equal(t, "30%", percent(3000))
	require.Equal(t, "33.33%", percent(3333))
	require.Equal(t, "0.01%", percent(1))
}

// A slice that asks no compute share may use the whole device and reserves
// none of it: guaranteed slices carved by memory alone share a GPU.
func TestNoComputeShareReservesNothing(t *testing.T) {
	a := newAlloc(t, "", 8*gib)
	for i := 0; i < 4; i++ {
		got, err := a.Allocate(fmt.Sprintf("m%d", i), api.AllocRequest{MemoryBytes: 2 * gib})
		require.NoError(t, err)
		require.Zero(t, got[0].ComputePercent, "no share asked is reported as 0")
	}
	require.Zero(t, a.Devices()[0].ComputePercent)
	require.True(t, a.Release("m0"))
	// An asked share is still reserved, and all 100% are free.
	_, err := a.Allocate("c", api.AllocRequest{MemoryBytes: gib, ComputePercent: 100})
	require.NoError(t, err)
	require.Equal(t, 100.0, a.Devices()[0].ComputePercent)
	require.NoError(t, a.Restore("r", []api.SliceDevice{{UUID: uuid(0), MemoryBytes: gib}}, ""))
	require.Equal(t, 100.0, a.Devices()[0].ComputePercent)
	checkBooks(t, a)
}
