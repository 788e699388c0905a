package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/testproc"
)

// hostCDIDir is where podman 4.x reads CDI specs (it has no setting for
// another dir): the podman test's vgpud publishes its slice there.
const hostCDIDir = "/var/run/cdi"

// TestPodmanSliceThroughCDI: podman, without vgpu-runtime, runs a container
// with --device vgpu.io/slice=<id> — the CDI device vgpud published for the
// slice, which carries libvgpu, the preload, the regions and the simulated
// GPU from the node's CDI spec — and the container is capped at the slice.
func TestPodmanSliceThroughCDI(t *testing.T) {
	requireHost(t)
	_, err := exec.LookPath("podman")
	require.NoError(t, err, "podman is needed: `make deps` installs Debian's podman")
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB, cdiDir: hostCDIDir})

	id := fmt.Sprintf("e2e-podman-%d", os.Getpid())
	_, err = n.client.Alloc(context.Background(), api.AllocRequest{ID: id, MemoryBytes: GiB})
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.client.Release(context.Background(), id) })
	spec := filepath.Join(hostCDIDir, "vgpu.io-slice_"+id+".json")
	require.FileExists(t, spec, "vgpud published the slice")

	pm := newPodman(t, n.dir)
	img := "oci-archive:" + buildTestImage(t, n.dir, n.root)
	// podman raises the container's open-file and process limits to its own
	// defaults (1048576), which runc may not set in a CI sandbox with lower
	// hard limits: modest ones, as a default container has.
	ulimits := []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"}
	runArgs := append([]string{"run", "--rm", "--network", "none"}, ulimits...)
	out, code := pm.run(append(runArgs, "--device", "vgpu.io/slice="+id, img,
		"/bin/alloc", "--api", "alloc", "--path", "linked", "--until-oom", "--chunk", "64MiB")...)
	require.Equal(t, 0, code, "podman run: %s", out)
	r := testproc.LineWith(t, out, "RESULT")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", r["name"])
	require.Equal(t, 1*GiB-ctxMem, num(t, r, "admitted"), "capped at the slice's 1 GiB including the context")
	require.Equal(t, uint64(0), n.deviceUsed(0), "all returned")

	// Released: the device is gone, podman refuses it.
	require.NoError(t, n.client.Release(context.Background(), id))
	require.NoFileExists(t, spec)
	out, code = pm.run(append(runArgs, "--device", "vgpu.io/slice="+id, img, "/bin/query")...)
	require.NotEqual(t, 0, code, "podman run of a released slice: %s", out)
	require.Contains(t, out, "vgpu.io/slice="+id)
}

// podman runs podman on storage of its own under dir, so the host's images
// and containers are neither used nor touched.
type podman struct {
	t    *testing.T
	args []string
}

func newPodman(t *testing.T, dir string) *podman {
	// podman refuses a runroot longer than 50 characters: t.TempDir's are.
	run, err := os.MkdirTemp("", "vgpu-pm-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(run) })
	return &podman{t: t, args: []string{"--root", filepath.Join(dir, "podman-root"),
		"--runroot", run, "--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs", "--events-backend", "file"}}
}

func (p *podman) run(args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "podman", append(append([]string(nil), p.args...), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	require.NoError(p.t, err, "podman %v: %s", args, out.String())
	return out.String(), 0
}
