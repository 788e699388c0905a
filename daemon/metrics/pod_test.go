package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// TestPodLabels: a container slice whose owner carries its Kubernetes
// identity exports namespace, pod and container on every per-slice series;
// a slice without them exports exactly what it did before (no empty labels);
// the registry serves both in one family and lints clean.
func TestPodLabels(t *testing.T) {
	in := testInput()
	in.Slices[0].Owner = api.Owner{Kind: api.OwnerContainer, ContainerID: "a",
		Labels: map[string]string{"namespace": "ml", "pod": "train-0", "container": "worker"}}
	// A hand-edited record: mended, never a failed scrape.
	in.Slices[2].Owner = api.Owner{Kind: api.OwnerContainer, ContainerID: "c",
		Labels: map[string]string{"namespace": "x\xff", "pod": "p"}}
	in.Compute = []SliceCompute{{Slice: "a", UUID: uuidA, QoS: api.QoSGuaranteed, Target: 0.3, Allowed: 0.3}}
	in.Activity = map[string]api.SliceActivity{"a": {State: api.ActivityIdle, LendableBytes: []uint64{0}}}
	in.Slices[0].Devices = []api.SliceDevice{{UUID: uuidA, MemoryBytes: 4 << 30, MemoryMaxBytes: 8 << 30, GrantedBytes: 1 << 30}}
	m := New(func() Input { return in })
	m.ObserveTick(testReport())

	const pod = `container="worker",namespace="ml",pod="train-0"`
	expected := `
# HELP vgpu_slice_memory_limit_bytes The slice's memory limit on the device.
# TYPE vgpu_slice_memory_limit_bytes gauge
vgpu_slice_memory_limit_bytes{` + pod + `,qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 4.294967296e+09
vgpu_slice_memory_limit_bytes{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 8.589934592e+09
vgpu_slice_memory_limit_bytes{qos="burstable",slice="b",uuid="slice-device-1"} 1.073741824e+09
# HELP vgpu_slice_info A slice vgpud holds (value 1): its QoS class and compute policy (cap or share).
# TYPE vgpu_slice_info gauge
vgpu_slice_info{compute_policy="cap",` + pod + `,qos="guaranteed",slice="a"} 1
vgpu_slice_info{compute_policy="share",qos="burstable",slice="b"} 1
vgpu_slice_info{compute_policy="cap",container="",namespace="x` + "\uFFFD" + `",pod="p",qos="guaranteed",slice="c"} 1
`
	require.NoError(t, testutil.CollectAndCompare((*collector)(m), strings.NewReader(expected),
		"vgpu_slice_memory_limit_bytes", "vgpu_slice_info"))

	// Every per-slice family of slice a carries the labels.
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, name := range []string{"vgpu_slice_memory_used_bytes", "vgpu_slice_memory_peak_bytes", "vgpu_slice_driver_used_bytes",
		"vgpu_slice_allocations_refused_total", "vgpu_slice_backstop_events_total", "vgpu_slice_reclaimed_bytes_total",
		"vgpu_slice_processes", "vgpu_slice_tampered", "vgpu_slice_compute_target_ratio", "vgpu_slice_compute_allowed_ratio",
		"vgpu_slice_token_rate", "vgpu_slice_activity_seconds", "vgpu_slice_lendable_bytes",
		"vgpu_slice_memory_max_bytes", "vgpu_slice_memory_granted_bytes"} {
		require.Contains(t, string(body), name+"{"+pod, name)
	}

	problems, err := testutil.GatherAndLint(m.Registry())
	require.NoError(t, err)
	require.Empty(t, problems)
}
