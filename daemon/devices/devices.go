// Package devices discovers the node's GPUs through NVML (github.com/NVIDIA/go-nvml,
// unmodified) and answers the per-device questions vgpud asks while running:
// which processes hold memory on a device and how busy it is.
//
// The same code serves the real driver, the simulated node's libnvidia-ml.so.1
// and go-nvml's mock servers (NewFromInterface), so everything above this package
// is tested against all three.
package devices

import (
	"errors"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// Device is one physical GPU as NVML reports it.
type Device struct {
	// Index is the NVML index (the CUDA ordinal when CUDA_DEVICE_ORDER=PCI_BUS_ID,
	// which is how vgpu runs its tenants).
	Index       int
	UUID        string
	Name        string
	MemoryBytes uint64
	// Minor is the device node's minor number (/dev/nvidia<Minor>).
	Minor int
	// PCIBusID is NVML's bus id ("00000000:17:00.0"); empty when NVML gives none.
	PCIBusID string
	// NUMANode is the NUMA node the device is attached to, -1 where unknown.
	NUMANode int
}

// API returns the device as the API shows it, with nothing allocated.
func (d Device) API() api.Device {
	return api.Device{
		Index:       d.Index,
		UUID:        d.UUID,
		Name:        d.Name,
		MemoryBytes: d.MemoryBytes,
		Minor:       d.Minor,
		PCIBusID:    d.PCIBusID,
		NUMANode:    d.NUMANode,
	}
}

// ErrNotImplemented is returned (wrapped) when the NVML implementation lacks a
// function: go-nvml's mock servers panic for functions they do not mock, and a
// daemon must not crash because a test double (or an old driver) is partial.
var ErrNotImplemented = errors.New("not implemented by this NVML")

// call runs one NVML query, turning a non-success return into an error that says
// what was asked, and a panic of a partial mock into ErrNotImplemented.
func call[T any](what string, f func() (T, nvml.Return)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v, err = zero, fmt.Errorf("%s: %w (%v)", what, ErrNotImplemented, p)
		}
	}()
	v, ret := f()
	if ret != nvml.SUCCESS {
		return v, fmt.Errorf("%s: %w", what, ret)
	}
	return v, nil
}

// optional reports whether err only means "NVML cannot tell": the attribute is
// then recorded as unknown instead of failing discovery.
func optional(err error) bool {
	return errors.Is(err, nvml.ERROR_NOT_SUPPORTED) || errors.Is(err, ErrNotImplemented)
}

// Discover lists the devices of an initialized NVML, in index order. uuid, name,
// memory and minor number are required (an error names the device and the
// query); the PCI bus id and the NUMA node are optional and read as unknown
// when NVML does not support them.
func Discover(lib nvml.Interface) ([]Device, error) {
	count, err := call("count devices", lib.DeviceGetCount)
	if err != nil {
		return nil, fmt.Errorf("discover devices: %w", err)
	}
	devs := make([]Device, 0, count)
	for i := 0; i < count; i++ {
		d, err := describe(lib, i)
		if err != nil {
			return nil, fmt.Errorf("discover devices: device %d: %w", i, err)
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// describe reads one device's attributes.
func describe(lib nvml.Interface, i int) (Device, error) {
	h, err := call("get handle", func() (nvml.Device, nvml.Return) { return lib.DeviceGetHandleByIndex(i) })
	if err != nil {
		return Device{}, err
	}
	d := Device{Index: i, NUMANode: -1}
	if d.UUID, err = call("get uuid", h.GetUUID); err != nil {
		return Device{}, err
	}
	if d.UUID == "" {
		// Slices name their devices by uuid; a device without one cannot be carved.
		return Device{}, fmt.Errorf("get uuid: NVML returned an empty uuid")
	}
	if d.Name, err = call("get name", h.GetName); err != nil {
		return Device{}, err
	}
	mem, err := call("get memory info", h.GetMemoryInfo)
	if err != nil {
		return Device{}, err
	}
	if mem.Total == 0 {
		return Device{}, fmt.Errorf("get memory info: NVML reports 0 bytes of memory")
	}
	d.MemoryBytes = mem.Total
	if d.Minor, err = call("get minor number", h.GetMinorNumber); err != nil {
		return Device{}, err
	}
	pci, err := call("get pci info", h.GetPciInfo)
	switch {
	case err == nil:
		d.PCIBusID = pciBusID(&pci)
	case !optional(err):
		return Device{}, err
	}
	numa, err := call("get numa node", h.GetNumaNodeId)
	switch {
	case err == nil:
		d.NUMANode = numa
	case !optional(err):
		return Device{}, err
	}
	return d, nil
}

// pciBusID returns the bus id NVML filled in: the full-width field, else the
// legacy 16-byte one, else "" (unknown). Domain/bus/device numbers alone are not
// turned into an id: a mock that fills neither leaves them all zero, and a
// made-up "0000:00:00.0" for every device would be worse than nothing.
func pciBusID(p *nvml.PciInfo) string {
	if s := cString(p.BusId[:]); s != "" {
		return s
	}
	return cString(p.BusIdLegacy[:])
}

// cString converts a NUL-terminated C char array.
func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}
