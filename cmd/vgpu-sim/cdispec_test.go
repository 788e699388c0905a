package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// TestInitWritesCDISpec: `init --cdi-dir` describes the node as nvidia-ctk
// describes a real one, and the product's CDI code reads it: each device by
// index and UUID with its stand-in node, the libraries and the state file.
func TestInitWritesCDISpec(t *testing.T) {
	dir := t.TempDir()
	libDir := filepath.Join(dir, "lib")
	require.NoError(t, os.MkdirAll(libDir, 0o755))
	for _, l := range simgpu.DriverLibs {
		require.NoError(t, os.WriteFile(filepath.Join(libDir, l), []byte("ELF"), 0o755))
	}
	state, cdiDir := filepath.Join(dir, "node"), filepath.Join(dir, "cdi")
	code, out, errOut := runCLI("init", "--state", state, "--devices", "2", "--memory", "2GiB",
		"--cdi-dir", cdiDir, "--lib-dir", libDir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "nvidia.json")
	data, err := os.ReadFile(filepath.Join(cdiDir, "nvidia.json"))
	require.NoError(t, err)
	require.Contains(t, string(data), `"cdiVersion":"0.5.0"`, "a version podman 4.x reads")

	st, err := simgpu.Status(state)
	require.NoError(t, err)
	node, err := gpucdi.Load([]string{cdiDir}, gpucdi.DefaultKind)
	require.NoError(t, err)
	d1 := st.Devices[1]
	names, err := node.DeviceNames([]api.SliceDevice{{Index: 1, UUID: d1.UUID}})
	require.NoError(t, err)
	require.Equal(t, []string{"nvidia.com/gpu=" + d1.UUID}, names)

	s := &specs.Spec{Process: &specs.Process{}}
	require.NoError(t, node.Inject(s, names))
	mounts := map[string]string{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m.Source + " " + strings.Join(m.Options, ",")
	}
	require.Contains(t, mounts[state], "rw", "the state file, read-write")
	require.Contains(t, mounts[simgpu.ContainerSimLibDir+"/libcuda.so.1"], filepath.Join(libDir, "libcuda.so.1"))
	require.Contains(t, mounts[simgpu.ContainerSimLibDir+"/libcuda.so.1"], "ro")
	node1 := strings.Replace(st.DeviceNodes, "%d", "1", 1)
	require.Contains(t, mounts[node1], "rw", "the device's stand-in node")
	require.NotContains(t, mounts, strings.Replace(st.DeviceNodes, "%d", "0", 1), "only the asked device")
	require.Contains(t, s.Process.Env, "VGPU_SIM_STATE="+state)
	require.Contains(t, s.Process.Env, "LD_LIBRARY_PATH="+simgpu.ContainerSimLibDir)

	// cdi-spec rewrites it for an existing node; a missing library is an error.
	code, _, errOut = runCLI("cdi-spec", "--state", state, "--cdi-dir", cdiDir, "--lib-dir", libDir)
	require.Equal(t, 0, code, errOut)
	code, _, errOut = runCLI("cdi-spec", "--state", state, "--cdi-dir", cdiDir, "--lib-dir", dir)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "libcuda.so.1")
	code, _, errOut = runCLI("cdi-spec", "--state", state)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--cdi-dir DIR is required")
}
