package runtimehook

import (
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// TestDriverSpecInject: the spec's files are bound as asked (state rw,
// libraries read-only executable), a device's stand-in node file is bound
// read-write, env and library dirs reach the process; a slice device the spec
// does not list, a missing file or an unknown key is an error.
func TestDriverSpecInject(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, nil, 0o644))
		return p
	}
	state, lib, node := touch("state"), touch("libcuda.so.1"), touch("nvidia3")
	specPath := filepath.Join(dir, "driver.json")
	require.NoError(t, os.WriteFile(specPath, []byte(`{
  "mounts": [{"host": "`+state+`", "container": "`+state+`", "writable": true},
             {"host": "`+lib+`", "container": "/usr/lib/sim/libcuda.so.1", "exec": true}],
  "env": {"VGPU_SIM_STATE": "`+state+`"},
  "library_dirs": ["/usr/lib/sim"],
  "devices": {"GPU-a": {"nodes": ["`+node+`"]}}
}`), 0o644))
	ds, err := LoadDriverSpec(specPath)
	require.NoError(t, err)

	inj := &Injection{SliceID: "s", SliceDir: dir, LibVGPU: lib, Preload: state, Skeleton: dir}
	require.NoError(t, ds.Inject([]api.SliceDevice{{UUID: "GPU-a"}}, inj))
	s := &specs.Spec{Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Env: []string{"LD_LIBRARY_PATH=/opt/lib"}}}
	require.NoError(t, inj.Apply(s))
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	require.Contains(t, mounts[state].Options, "rw")
	require.Contains(t, mounts[node].Options, "rw")
	require.Contains(t, mounts["/usr/lib/sim/libcuda.so.1"].Options, "ro")
	require.NotContains(t, mounts["/usr/lib/sim/libcuda.so.1"].Options, "noexec")
	require.Contains(t, s.Process.Env, "VGPU_SIM_STATE="+state)
	require.Contains(t, s.Process.Env, "LD_LIBRARY_PATH=/usr/lib/sim:/opt/lib")

	err = ds.Inject([]api.SliceDevice{{UUID: "GPU-b"}}, &Injection{})
	require.ErrorContains(t, err, "no device GPU-b")
	require.NoError(t, os.Remove(lib))
	require.ErrorContains(t, ds.Inject([]api.SliceDevice{{UUID: "GPU-a"}}, &Injection{}), "driver file")

	require.NoError(t, os.WriteFile(specPath, []byte(`{"mount": []}`), 0o644))
	_, err = LoadDriverSpec(specPath)
	require.ErrorContains(t, err, "unknown field")
	require.NoError(t, os.WriteFile(specPath, []byte(`{"library_dirs": ["relative"]}`), 0o644))
	_, err = LoadDriverSpec(specPath)
	require.ErrorContains(t, err, "not an absolute path")
}
