package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/vgpu-project/vgpu/internal/atomicfile"
	runtimehook "github.com/vgpu-project/vgpu/runtime-hook"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// containerSimLibDir is where a container finds the simulated driver.
const containerSimLibDir = "/usr/lib/vgpu-sim"

// simDriverLibs are the simulated driver's libraries.
var simDriverLibs = []string{"libcuda.so.1", "libnvidia-ml.so.1"}

func cmdDriverSpec(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("driver-spec", driverSpecHelp, stdout)
	state := fs.String("state", "", "")
	libDir := fs.String("lib-dir", "", "")
	out := fs.String("out", "", "")
	if err := parse(fs, "driver-spec", args); err != nil {
		return err
	}
	for name, v := range map[string]string{"--state FILE": *state, "--lib-dir DIR": *libDir, "--out FILE": *out} {
		if v == "" {
			return usageError{"driver-spec", fmt.Errorf("%s is required", name)}
		}
	}
	spec, err := driverSpec(*state, *libDir)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode driver spec: %w", err)
	}
	if err := atomicfile.Write(*out, append(data, '\n'), 0o644, atomicfile.Durable); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d device(s)\n", *out, len(spec.Devices))
	return nil
}

// driverSpec describes the node at state for vgpu-runtime: the libraries,
// the state file (every process of the node maps it read-write) and each
// device's node.
func driverSpec(state, libDir string) (*runtimehook.DriverSpec, error) {
	abs, err := filepath.Abs(state)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", state, err)
	}
	libDir, err = filepath.Abs(libDir)
	if err != nil {
		return nil, fmt.Errorf("lib dir: %w", err)
	}
	st, err := simgpu.Status(abs)
	if err != nil {
		return nil, err
	}
	if len(st.Devices) == 0 {
		return nil, errors.New("the node has no device")
	}
	spec := &runtimehook.DriverSpec{
		Mounts:      []runtimehook.DriverMount{{Host: abs, Container: abs, Writable: true}},
		Env:         map[string]string{"VGPU_SIM_STATE": abs},
		LibraryDirs: []string{containerSimLibDir},
		Devices:     map[string]runtimehook.DriverDevice{},
	}
	for _, l := range simDriverLibs {
		spec.Mounts = append(spec.Mounts, runtimehook.DriverMount{
			Host: filepath.Join(libDir, l), Container: containerSimLibDir + "/" + l, Exec: true})
	}
	for _, d := range st.Devices {
		spec.Devices[d.UUID] = runtimehook.DriverDevice{Nodes: []string{fmt.Sprintf(st.DeviceNodes, d.Minor)}}
	}
	return spec, nil
}
