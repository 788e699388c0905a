package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/shm"
)

// requireMountNS fails unless programs can be run in a private mount namespace
// (root and unshare(1)), which the container-mode tests need to give one process
// its own /run/vgpu/slice without touching the machine's.
func requireMountNS(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("container mode needs root to mount /run/vgpu/slice in a private mount namespace; " +
			"`make test` runs as root")
	}
	_, err := exec.LookPath("unshare")
	require.NoError(t, err, "unshare(1) (util-linux) is needed for the container-mode tests")
}

// TestContainerSliceWins: where /run/vgpu/slice exists (the runtime mounted it),
// libvgpu uses it and ignores VGPU_SLICE_DIR, so a container cannot move to a
// bigger slice by editing its environment.
func TestContainerSliceWins(t *testing.T) {
	requireMountNS(t)
	const ovh = 128 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh, limit: 1 * GiB})
	big := filepath.Join(t.TempDir(), "big")
	require.NoError(t, shm.CreateSlice(big, shm.SliceSpec{Devices: []shm.DeviceBudget{
		{Index: 0, MemoryLimit: 4 * GiB, ContextOverhead: ovh}}}))
	bigSl, err := shm.OpenSlice(big)
	require.NoError(t, err)
	defer bigSl.Close()

	e := f.env()
	e.slice = big // what a tenant would try
	e.container = f.slice
	p := start(t, e, "alloc", "--api", "alloc", "--until-oom", "--step")
	p.phase("ready")
	p.next()
	res := p.expect("RESULT")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
	admitted := num(t, res, "admitted")
	require.Equal(t, f.limit-ovh, admitted, "capped by the mounted 1 GiB slice")
	p.phase("allocated")
	require.Equal(t, admitted+ovh, f.used())
	require.Equal(t, uint64(0), bigSl.Usage.DeviceUsed(0), "the env's slice is never touched")
	f.requireAgree(p.pid(), admitted+ovh, "container process")
	p.next()
	p.phase("freed")
	p.next()
	p.phase("released")
	p.next()
	p.waitOK()
}

// TestContainerBadSliceAlwaysRefuses: in a container a bad or missing region
// refuses, whatever VGPU_FAIL_MODE says.
func TestContainerBadSliceAlwaysRefuses(t *testing.T) {
	requireMountNS(t)
	for _, c := range []struct{ name, want string }{
		{"bad-magic", "budget: bad magic"},
		{"empty-dir", "No such file or directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{ovh: 128 * MiB})
			e := f.env("VGPU_FAIL_MODE=passthrough")
			e.slice = ""
			if c.name == "empty-dir" {
				e.container = "-"
			} else {
				patch(t, f.slice+"/budget", 0, []byte("NOTVGPU!"))
				e.container = f.slice
			}
			lines, stderr, code := run(t, e, "alloc", "--api", "alloc", "--count", "1", "--ignore-init")
			require.Equal(t, 4, code, "stderr:\n%s", stderr)
			vl := vgpuLines(stderr)
			require.Len(t, vl, 1, "stderr:\n%s", stderr)
			require.Contains(t, vl[0], c.want)
			require.Contains(t, vl[0], "refusing CUDA (container slice")
			require.Equal(t, "CUDA_ERROR_NOT_PERMITTED", lineWith(t, lines, "INIT")["name"])
			require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", lineWith(t, lines, "RESULT")["name"])
		})
	}
}
