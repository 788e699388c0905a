package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

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
	path, gpus, err := simgpu.WriteCDISpec(state, libDir, dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: CDI devices %s=0..%d and by UUID\n", path, gpucdi.DefaultKind, gpus-1)
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
