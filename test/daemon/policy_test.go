package daemon

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// TestRunComputePolicy: `vgpuctl run --compute 40 --compute-policy share`
// gets a slice whose budget says policy share, shown by `vgpuctl slices` and
// /metrics; the same run without --compute-policy gets vgpud's default, cap.
// (What the policy does on the device is vgpu-bench throttle's to measure.)
func TestRunComputePolicy(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start()
	for _, c := range []struct {
		id    string
		flags []string
		want  api.ComputePolicy
	}{
		{"shared", []string{"--compute-policy", "share"}, api.ComputePolicyShare},
		{"default", nil, api.ComputePolicyCap},
	} {
		argv := append([]string{"bin/vgpuctl", "run", "--memory", "1GiB", "--compute", "40", "--id", c.id}, c.flags...)
		argv = append(argv, "--", "sh", "-c", "echo READY; read line; exit 0")
		p := nd.startProc(nd.env(), argv...)
		p.expect("READY")

		sl, err := nd.client.Get(bg(), c.id)
		require.NoError(t, err)
		require.Equal(t, c.want, sl.ComputePolicy, c.id)
		b, err := shm.OpenBudget(filepath.Join(sl.Dir, shm.BudgetFile), false)
		require.NoError(t, err)
		policy, share := b.Policy(), b.Device(0).ComputeShareBP
		require.NoError(t, b.Close())
		require.Equal(t, c.want.Code(), policy, "%s: the budget's policy", c.id)
		require.Equal(t, uint32(4000), share, "%s: the budget's share", c.id)

		out, errOut, code := nd.ctl("slices")
		require.Equal(t, 0, code, errOut)
		var row []string
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[0] == c.id {
				row = f
			}
		}
		require.NotNil(t, row, "slices lists %s:\n%s", c.id, out)
		require.Equal(t, "-", row[2], "ELASTIC")
		require.Equal(t, "40%", row[3], "COMPUTE")
		require.Equal(t, string(c.want), row[4], "POLICY")
		require.Contains(t, d.metricsText(t),
			`vgpu_slice_info{compute_policy="`+string(c.want)+`",qos="guaranteed",slice="`+c.id+`"} 1`)

		require.Equal(t, 0, p.wait(), p.stderr())
		_, err = nd.client.Get(bg(), c.id)
		require.True(t, api.IsNotFound(err), "released after the run: %v", err)
	}
}
