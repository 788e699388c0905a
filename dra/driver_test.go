package dra

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
)

// recoverable wraps err the way the helper marks publishing errors.
type recoverable struct{ error }

func (r recoverable) Is(target error) bool { return target == kubeletplugin.ErrRecoverable }
func (r recoverable) Unwrap() error        { return r.error }

// TestHandleError: fields the apiserver dropped (no DRAConsumableCapacity)
// and recoverable errors are logged; anything else stops the plugin.
func TestHandleError(t *testing.T) {
	var fatal []error
	d := New("vgpu.io", node, nil, zaptest.NewLogger(t), func(err error) { fatal = append(fatal, err) })
	desired := &resourceapi.ResourceSlice{Spec: resourceapi.ResourceSliceSpec{Devices: []resourceapi.Device{
		Device(testDevices()[0], nil)}}}
	actual := desired.DeepCopy()
	actual.Spec.Devices[0].AllowMultipleAllocations = nil
	dropped := &resourceslice.DroppedFieldsError{PoolName: node, DesiredSlice: desired, ActualSlice: actual}
	d.HandleError(context.Background(), recoverable{fmt.Errorf("publish: %w", dropped)}, "publish")
	d.HandleError(context.Background(), recoverable{errors.New("apiserver away")}, "publish")
	require.Empty(t, fatal)
	d.HandleError(context.Background(), errors.New("socket gone"), "DRA gRPC server failed")
	require.Len(t, fatal, 1)
	require.ErrorContains(t, fatal[0], "DRA gRPC server failed: socket gone")
}

// TestDeviceAttributes: what a selector can use, and the capacities'
// policies (compute: default 0, at most what is there).
func TestDeviceAttributes(t *testing.T) {
	dev := testDevices()[1]
	dev.ComputePercent = 40
	d := Device(dev, nil)
	require.Equal(t, "gpu-1", d.Name)
	require.Equal(t, "GPU-1", *d.Attributes["uuid"].StringValue)
	require.Equal(t, "NVIDIA H100", *d.Attributes["productName"].StringValue)
	require.Equal(t, int64(1), *d.Attributes["index"].IntValue)
	require.Equal(t, int64(16*gib), *d.Attributes["memoryTotal"].IntValue)
	require.Equal(t, "0000:01:00.0", *d.Attributes["pciBusID"].StringValue)
	require.Equal(t, int64(0), *d.Attributes["numaNode"].IntValue)
	_, hasNUMA := Device(testDevices()[0], nil).Attributes["numaNode"]
	require.False(t, hasNUMA, "unknown NUMA node: no attribute")
	c := d.Capacity[CapacityCompute]
	require.Equal(t, "60", c.Value.String())
	require.True(t, c.RequestPolicy.Default.IsZero())
	require.Equal(t, "60", c.RequestPolicy.ValidRange.Max.String())
	require.Nil(t, d.Capacity[CapacityMemory].RequestPolicy)
	require.LessOrEqual(t, len(d.Attributes)+len(d.Capacity), resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice)
}
