package runtimehook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// DriverSpec describes what a container needs from the node's GPU driver
// beyond the device nodes the runtime finds itself (/dev/nvidia*): library
// mounts, files, env, and per device the nodes that stand for it. The runtime
// reads it from the config's driver_spec file and applies it for the slice's
// devices; it knows nothing of who wrote it.
//
// A simulated node is described this way (`vgpu-sim driver-spec` writes one
// for its state file and libraries), so the product carries no simulator
// code. On a real node the NVIDIA CDI spec takes this role.
type DriverSpec struct {
	// Mounts are bound into every slice's container (host paths must be
	// regular files).
	Mounts []DriverMount `json:"mounts,omitempty"`
	// Env is set in the container.
	Env map[string]string `json:"env,omitempty"`
	// LibraryDirs (container paths) are put in front of LD_LIBRARY_PATH.
	LibraryDirs []string `json:"library_dirs,omitempty"`
	// Devices maps a device UUID to what stands for it. Every device of a
	// slice must be listed.
	Devices map[string]DriverDevice `json:"devices,omitempty"`
}

// DriverMount is a file bound into the container.
type DriverMount struct {
	Host      string `json:"host"`
	Container string `json:"container"`
	Writable  bool   `json:"writable,omitempty"`
	Exec      bool   `json:"exec,omitempty"` // a library: mapped executable
}

// DriverDevice lists a device's nodes (host paths, the same inside the
// container): a character device is handed over as a device node with its
// cgroup rule, a regular file (a simulated node's stand-in) is bound
// read-write.
type DriverDevice struct {
	Nodes []string `json:"nodes"`
}

// LoadDriverSpec reads and checks a driver spec file (strictly: an unknown key
// is an error, not a silently missing mount).
func LoadDriverSpec(path string) (*DriverSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("driver spec: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var ds DriverSpec
	if err := dec.Decode(&ds); err != nil {
		return nil, fmt.Errorf("driver spec %s: %w", path, err)
	}
	if err := ds.validate(); err != nil {
		return nil, fmt.Errorf("driver spec %s: %w", path, err)
	}
	return &ds, nil
}

func (ds *DriverSpec) validate() error {
	var errs []error
	abs := func(what, p string) {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q is not an absolute path", what, p))
		}
	}
	for _, m := range ds.Mounts {
		abs("mount host path", m.Host)
		abs("mount container path", m.Container)
	}
	for _, d := range ds.LibraryDirs {
		abs("library dir", d)
	}
	for uuid, d := range ds.Devices {
		for _, n := range d.Nodes {
			abs("device "+uuid+" node", n)
		}
	}
	return errors.Join(errs...)
}

// Inject adds the driver for the slice's devices to inj, checking every host
// path on the host (these come from the node's config, never from a
// container's rootfs).
func (ds *DriverSpec) Inject(devices []api.SliceDevice, inj *Injection) error {
	for _, m := range ds.Mounts {
		if err := checkRegular(m.Host, "driver file"); err != nil {
			return err
		}
		inj.DriverMounts = append(inj.DriverMounts, m)
	}
	for _, sd := range devices {
		dev, ok := ds.Devices[sd.UUID]
		if !ok {
			return fmt.Errorf("driver spec has no device %s", sd.UUID)
		}
		for _, node := range dev.Nodes {
			if err := injectNode(node, inj); err != nil {
				return err
			}
		}
	}
	inj.DriverEnv = ds.Env
	inj.DriverLibDirs = ds.LibraryDirs
	return nil
}

// injectNode hands a device node over as a device (character device) or as a
// read-write file (a stand-in file, as a simulated node has).
func injectNode(node string, inj *Injection) error {
	d, ok, err := charDevice(node)
	if err != nil {
		return err
	}
	if ok {
		inj.Devices = append(inj.Devices, d)
		return nil
	}
	if err := checkRegular(node, "device node"); err != nil {
		return err
	}
	inj.DriverMounts = append(inj.DriverMounts, DriverMount{Host: node, Container: node, Writable: true})
	return nil
}
