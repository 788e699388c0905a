package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// containerSimLibDir is where a container finds the simulated driver.
const containerSimLibDir = "/usr/lib/vgpu-sim"

// simDriverLibs are the simulated driver's libraries.
var simDriverLibs = []string{"libcuda.so.1", "libnvidia-ml.so.1"}

// cdiSpecName is the spec's file name (without .json): the name nvidia-ctk's
// is usually given, so that a simulated node looks like a real one.
const cdiSpecName = "nvidia"

func cmdCDISpec(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("cdi-spec", cdiSpecHelp, stdout)
	state := fs.String("state", "", "")
	libDir := fs.String("lib-dir", "", "")
	dir := fs.String("cdi-dir", "", "")
	if err := parse(fs, "cdi-spec", args); err != nil {
		return err
	}
	for name, v := range map[string]string{"--state FILE": *state, "--cdi-dir DIR": *dir} {
		if v == "" {
			return usageError{"cdi-spec", fmt.Errorf("%s is required", name)}
		}
	}
	return writeCDISpec(*state, *libDir, *dir, stdout)
}

// writeCDISpec writes the node's CDI spec into dir.
func writeCDISpec(state, libDir, dir string, stdout io.Writer) error {
	if libDir == "" {
		libDir = defaultLibDir()
	}
	spec, err := cdiSpec(state, libDir)
	if err != nil {
		return err
	}
	if err := gpucdi.WriteSpec(dir, cdiSpecName, spec); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: CDI devices %s=0..%d and by UUID\n",
		filepath.Join(dir, cdiSpecName+".json"), gpucdi.DefaultKind, len(spec.Devices)/2-1)
	return nil
}

// defaultLibDir is build/simgpu next to the bin/ holding vgpu-sim.
func defaultLibDir() string {
	self, err := os.Executable()
	if err != nil {
		return "build/simgpu"
	}
	return filepath.Join(filepath.Dir(filepath.Dir(self)), "build", "simgpu")
}

// cdiSpec describes the node at state as nvidia-ctk describes a real one:
// kind nvidia.com/gpu, each device by index and by UUID with its node, and
// "the driver" in the common edits — the simulated libraries (mounted at
// /usr/lib/vgpu-sim, on LD_LIBRARY_PATH) and the state file every process of
// the node maps read-write (VGPU_SIM_STATE).
func cdiSpec(state, libDir string) (*cdispec.Spec, error) {
	abs, err := filepath.Abs(state)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", state, err)
	}
	if libDir, err = filepath.Abs(libDir); err != nil {
		return nil, fmt.Errorf("lib dir: %w", err)
	}
	st, err := simgpu.Status(abs)
	if err != nil {
		return nil, fmt.Errorf("read the node: %w", err)
	}
	if len(st.Devices) == 0 {
		return nil, errors.New("the node has no device")
	}
	spec := &cdispec.Spec{Kind: gpucdi.DefaultKind}
	spec.ContainerEdits.Env = []string{"VGPU_SIM_STATE=" + abs, "LD_LIBRARY_PATH=" + containerSimLibDir}
	spec.ContainerEdits.Mounts = []*cdispec.Mount{bindMount(abs, abs, "rw", "noexec")}
	for _, l := range simDriverLibs {
		host := filepath.Join(libDir, l)
		if st, err := os.Stat(host); err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("simulated driver library %s: not a regular file (make build; --lib-dir)", host)
		}
		spec.ContainerEdits.Mounts = append(spec.ContainerEdits.Mounts, bindMount(host, containerSimLibDir+"/"+l, "ro"))
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
