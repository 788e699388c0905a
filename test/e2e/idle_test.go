package e2e

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// A container asked with vgpu.io/idle-release=2s runs a GPU program as a
// child of its main process, which outlives it (a notebook kernel, a job's
// shell): vgpud releases the slice 2 s after that program exits, while the
// container keeps running; a container without the annotation keeps its
// slice. The slices' activity comes from the kernel (the process tracker
// follows the device node the container got, in the container's cgroup) and
// the driver, not from the tenant's slots.
func TestContainerIdleRelease(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB, trackDevice: true})
	gpuStep := []string{"/bin/dl_outlive", "/bin/alloc", "--api", "alloc", "--chunk", "64MiB", "--count", "1"}
	nb := n.run(run{id: "nb", vgpu: true, detach: true,
		annotations: []string{"vgpu.io/memory=1GiB", "vgpu.io/idle-release=2s"}, args: gpuStep})
	require.Equal(t, 0, nb.code, "ctr: %s", nb.ctr)
	job := n.run(run{id: "job", vgpu: true, detach: true, annotations: []string{"vgpu.io/memory=1GiB"}, args: gpuStep})
	require.Equal(t, 0, job.code, "ctr: %s", job.ctr)
	n.waitOutput(job, "CHILD_EXITED status=0")
	line := n.waitOutput(nb, "CHILD_EXITED status=0")
	_, at, _ := strings.Cut(line, "at_ns=")
	ns, err := strconv.ParseInt(strings.TrimSpace(at), 10, 64)
	require.NoError(t, err, "%q", line)
	exited := time.Unix(0, ns)

	time.Sleep(time.Until(exited.Add(1500 * time.Millisecond)))
	require.Contains(t, sliceIDs(n.slices()), "nb", "kept until it has been empty 2 s")
	deadline := exited.Add(4 * time.Second)
	for slices.Contains(sliceIDs(n.slices()), "nb") {
		require.True(t, time.Now().Before(deadline), "the idle-release slice is released about 2 s after its last GPU process")
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("slice released %v after its GPU process exited (idle release 2s)", time.Since(exited).Round(10*time.Millisecond))
	running, _ := n.taskRunning("nb")
	require.True(t, running, "the container keeps running")
	require.Contains(t, sliceIDs(n.slices()), "job", "a slice without an idle release is kept")
	n.stop("nb")
	n.stop("job")
}

func sliceIDs(ss []api.Slice) []string {
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID
	}
	return ids
}
