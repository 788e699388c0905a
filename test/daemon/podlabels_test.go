package daemon

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// TestPodLabelsOnMetrics: a slice whose owner carries its Kubernetes
// identity (what vgpu-runtime sends from the CRI annotations) exports
// namespace, pod and container on its series, also after vgpud restarts
// (they are recorded with the slice); a slice without them exports no such
// labels; labels vgpud cannot put on a series are refused with a 400.
func TestPodLabelsOnMetrics(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start("--enforcer-interval", "20ms")
	labels := map[string]string{"namespace": "ml", "pod": "train-0", "container": "worker"}
	_, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "k8s", MemoryBytes: 1 * GiB, Owner: api.Owner{Labels: labels}})
	require.NoError(t, err)
	_, err = nd.client.Alloc(bg(), api.AllocRequest{ID: "bare", MemoryBytes: 1 * GiB})
	require.NoError(t, err)

	const pod = `container="worker",namespace="ml",pod="train-0"`
	check := func(d *vgpud) {
		t.Helper()
		var body string
		eventually(t, lineTimeout, "the slices' tick series", func() bool {
			body = scrape(t, d)
			return strings.Contains(body, `vgpu_slice_memory_limit_bytes{`+pod+`,qos="guaranteed",slice="k8s"`) &&
				strings.Contains(body, `vgpu_slice_memory_limit_bytes{qos="guaranteed",slice="bare"`)
		})
		require.Contains(t, body, `vgpu_slice_info{compute_policy="cap",`+pod+`,qos="guaranteed",slice="k8s"} 1`)
		require.Contains(t, body, `vgpu_slice_info{compute_policy="cap",qos="guaranteed",slice="bare"} 1`)
	}
	check(d)
	s, err := nd.client.Get(bg(), "k8s")
	require.NoError(t, err)
	require.Equal(t, labels, s.Owner.Labels, "the API shows them")

	d.stop()
	d = nd.start("--enforcer-interval", "20ms")
	check(d)

	for _, bad := range []map[string]string{{"node": "n1"}, {"pod": strings.Repeat("p", 254)}} {
		_, err = nd.client.Alloc(bg(), api.AllocRequest{MemoryBytes: 1 * GiB, Owner: api.Owner{Labels: bad}})
		var se *api.StatusError
		require.True(t, errorsAs(err, &se), "%v", err)
		require.Equal(t, 400, se.StatusCode, "%v", err)
		require.ErrorContains(t, err, "owner label")
	}
}
