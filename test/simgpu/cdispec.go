package simgpu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
)

// The simulated node described as nvidia-ctk describes a real one, so that
// everything handing GPUs to containers (vgpu-runtime, vgpud's published
// slices, podman, containerd) runs the real-node code path on it. vgpu-sim
// init/cdi-spec and the benchmarks' vgpud write it.

// ContainerSimLibDir is where a container finds the simulated driver.
const ContainerSimLibDir = "/usr/lib/vgpu-sim"

// DriverLibs are the simulated driver's libraries (in build/simgpu).
var DriverLibs = []string{"libcuda.so.1", "libnvidia-ml.so.1"}

// CDISpecName is the spec's file name (without .json): the name nvidia-ctk's
// is usually given, so that a simulated node looks like a real one.
const CDISpecName = "nvidia"

// WriteCDISpec writes the node at state's CDI spec into dir (CDISpecName.json),
// its driver the simulated libraries in libDir, and returns the file's path
// and how many GPUs it describes.
func WriteCDISpec(state, libDir, dir string) (string, int, error) {
	spec, err := CDISpec(state, libDir)
	if err != nil {
		return "", 0, err
	}
	if err := gpucdi.WriteSpec(dir, CDISpecName, spec); err != nil {
		return "", 0, err
	}
	return filepath.Join(dir, CDISpecName+".json"), len(spec.Devices) / 2, nil
}

// CDISpec describes the node at state as nvidia-ctk describes a real one:
// kind nvidia.com/gpu, each device by index and by UUID with its node, and
// "the driver" in the common edits — the simulated libraries (mounted at
// /usr/lib/vgpu-sim, on LD_LIBRARY_PATH) and the state file every process of
// the node maps read-write (VGPU_SIM_STATE).
func CDISpec(state, libDir string) (*cdispec.Spec, error) {
	abs, err := filepath.Abs(state)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", state, err)
	}
	if libDir, err = filepath.Abs(libDir); err != nil {
		return nil, fmt.Errorf("lib dir: %w", err)
	}
	st, err := Status(abs)
	if err != nil {
		return nil, fmt.Errorf("read the node: %w", err)
	}
	if len(st.Devices) == 0 {
		return nil, errors.New("the node has no device")
	}
	spec := &cdispec.Spec{Kind: gpucdi.DefaultKind}
	spec.ContainerEdits.Env = []string{"VGPU_SIM_STATE=" + abs, "LD_LIBRARY_PATH=" + ContainerSimLibDir}
	spec.ContainerEdits.Mounts = []*cdispec.Mount{bindMount(abs, abs, "rw", "noexec")}
	for _, l := range DriverLibs {
		host := filepath.Join(libDir, l)
		if st, err := os.Stat(host); err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("simulated driver library %s: not a regular file (make build; --lib-dir)", host)
		}
		spec.ContainerEdits.Mounts = append(spec.ContainerEdits.Mounts, bindMount(host, ContainerSimLibDir+"/"+l, "ro"))
	}
	for _, d := range st.Devices {
		edits, err := deviceEdits(fmt.Sprintf(st.DeviceNodes, d.Minor))
		if err != nil {
			return nil, err
		}
		for _, name := range []string{fmt.Sprint(d.Index), d.UUID} {
			spec.Devices = append(spec.Devices, cdispec.Device{Name: name, ContainerEdits: edits})
		}
	}
	return spec, nil
}

// deviceEdits hands a device's node over: a character device as a device
// node (with its cgroup rule), a stand-in regular file bound read-write.
func deviceEdits(node string) (cdispec.ContainerEdits, error) {
	st, err := os.Lstat(node)
	if err != nil {
		return cdispec.ContainerEdits{}, fmt.Errorf("device node: %w", err)
	}
	switch {
	case st.Mode()&os.ModeCharDevice != 0:
		return cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{{Path: node}}}, nil
	case st.Mode().IsRegular():
		return cdispec.ContainerEdits{Mounts: []*cdispec.Mount{bindMount(node, node, "rw", "noexec")}}, nil
	}
	return cdispec.ContainerEdits{}, fmt.Errorf("device node %s: neither a character device nor a stand-in file", node)
}

func bindMount(host, ctr string, opts ...string) *cdispec.Mount {
	return &cdispec.Mount{HostPath: host, ContainerPath: ctr, Type: "bind",
		Options: append([]string{"bind", "nosuid", "nodev"}, opts...)}
}
