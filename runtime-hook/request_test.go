package runtimehook

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

func TestParseRequest(t *testing.T) {
	cases := []struct {
		name string
		ann  map[string]string
		env  []string
		want api.AllocRequest
	}{
		{"annotation size", map[string]string{"vgpu.io/memory": "1GiB"}, nil,
			api.AllocRequest{MemoryBytes: 1 << 30}},
		{"env only", nil, []string{"PATH=/bin", "VGPU_MEMORY=512Mi", "VGPU_CORES=30%"},
			api.AllocRequest{MemoryBytes: 512 << 20, ComputePercent: 30}},
		{"annotations win key by key", map[string]string{"vgpu.io/memory": "2GiB"},
			[]string{"VGPU_MEMORY=1GiB", "VGPU_QOS=burstable"},
			api.AllocRequest{MemoryBytes: 2 << 30, QoS: api.QoSBurstable}},
		{"everything", map[string]string{"vgpu.io/memory": "50%", "vgpu.io/cores": "25", "vgpu.io/devices": "2",
			"vgpu.io/priority": "3", "vgpu.io/qos": "best-effort"}, nil,
			api.AllocRequest{MemoryPercent: 50, ComputePercent: 25, DeviceCount: 2, Priority: 3, QoS: api.QoSBestEffort}},
		{"widest accepted", map[string]string{"vgpu.io/memory": "100%", "vgpu.io/cores": "0.01%", "vgpu.io/devices": "16",
			"vgpu.io/priority": "4294967295"}, nil,
			api.AllocRequest{MemoryPercent: 100, ComputePercent: 0.01, DeviceCount: 16, Priority: 4294967295}},
		{"uuids", map[string]string{"vgpu.io/memory": "1Gi",
			"vgpu.io/devices": "GPU-391f319a-ca6f-4092-8327-918d834bf021, GPU-aaaaaaaa-ca6f-4092-8327-918d834bf021"}, nil,
			api.AllocRequest{MemoryBytes: 1 << 30, UUIDs: []string{"GPU-391f319a-ca6f-4092-8327-918d834bf021",
				"GPU-aaaaaaaa-ca6f-4092-8327-918d834bf021"}}},
		{"last env entry wins", nil, []string{"VGPU_MEMORY=1Gi", "VGPU_MEMORY=3Gi"},
			api.AllocRequest{MemoryBytes: 3 << 30}},
		{"compute policy", map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/cores": "40", "vgpu.io/compute-policy": "share"}, nil,
			api.AllocRequest{MemoryBytes: 1 << 30, ComputePercent: 40, ComputePolicy: api.ComputePolicyShare}},
		{"idle release", map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/idle-release": "2s"}, nil,
			api.AllocRequest{MemoryBytes: 1 << 30, IdleRelease: units.Duration(2 * time.Second)}},
		{"memory ceiling", map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/memory-max": "4GiB"}, nil,
			api.AllocRequest{MemoryBytes: 1 << 30, MemoryMaxBytes: 4 << 30}},
		{"memory ceiling from env", nil, []string{"VGPU_MEMORY=1Gi", "VGPU_MEMORY_MAX=2Gi"},
			api.AllocRequest{MemoryBytes: 1 << 30, MemoryMaxBytes: 2 << 30}},
		{"idle release from env", nil, []string{"VGPU_MEMORY=1Gi", "VGPU_IDLE_RELEASE=30m"},
			api.AllocRequest{MemoryBytes: 1 << 30, IdleRelease: units.Duration(30 * time.Minute)}},
		{"compute policy from env", nil, []string{"VGPU_MEMORY=1Gi", "VGPU_COMPUTE_POLICY= cap "},
			api.AllocRequest{MemoryBytes: 1 << 30, ComputePolicy: api.ComputePolicyCap}},
		{"compute policy: annotation wins", map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/compute-policy": "share"},
			[]string{"VGPU_COMPUTE_POLICY=cap"},
			api.AllocRequest{MemoryBytes: 1 << 30, ComputePolicy: api.ComputePolicyShare}},
		// Sizes are Kubernetes quantities: no "i" is decimal.
		{"decimal G", map[string]string{"vgpu.io/memory": "4G"}, nil, api.AllocRequest{MemoryBytes: 4e9}},
		{"decimal M from env", nil, []string{"VGPU_MEMORY=512M"}, api.AllocRequest{MemoryBytes: 512e6}},
		{"decimal GB", map[string]string{"vgpu.io/memory": "4GB", "vgpu.io/memory-max": "8Gi"}, nil,
			api.AllocRequest{MemoryBytes: 4e9, MemoryMaxBytes: 8 << 30}},
		{"fractional quantity", map[string]string{"vgpu.io/memory": "1.5Gi"}, nil, api.AllocRequest{MemoryBytes: 3 << 29}},
		{"no compute policy: vgpud's default", map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/compute-policy": ""},
			[]string{"VGPU_COMPUTE_POLICY="}, api.AllocRequest{MemoryBytes: 1 << 30}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.True(t, HasRequest(c.ann, c.env))
			req, found, err := ParseRequest(c.ann, c.env)
			require.NoError(t, err)
			require.True(t, found)
			require.Equal(t, c.want, req)
		})
	}
}

func TestParseRequestNone(t *testing.T) {
	for _, c := range []struct {
		ann map[string]string
		env []string
	}{
		{nil, nil},
		{map[string]string{"io.kubernetes.cri.container-type": "container", "other.io/memory": "1G"}, []string{"VGPU_FAIL_MODE=refuse", "MEMORY=1G"}},
		{map[string]string{"vgpu.io/memory": ""}, []string{"VGPU_MEMORY="}},
	} {
		require.False(t, HasRequest(c.ann, c.env))
		_, found, err := ParseRequest(c.ann, c.env)
		require.NoError(t, err)
		require.False(t, found)
	}
}

func TestParseRequestMalformed(t *testing.T) {
	cases := []struct {
		ann  map[string]string
		env  []string
		want string
	}{
		{map[string]string{"vgpu.io/memory": "lots"}, nil, `annotation vgpu.io/memory="lots": want a size`},
		{map[string]string{"vgpu.io/memory": "0"}, nil, "more than 0"},
		{map[string]string{"vgpu.io/memory": "150%"}, nil, "(0, 100]"},
		{nil, []string{"VGPU_MEMORY=1Gi", "VGPU_CORES=0"}, `env VGPU_CORES="0"`},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/devices": "0"}, nil, "1..16"},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/devices": "gpu0"}, nil, "GPU UUIDs"},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/priority": "high"}, nil, "integer"},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/qos": "gold"}, nil, "guaranteed, burstable or best-effort"},
		{map[string]string{"vgpu.io/memroy": "1G"}, nil, "unknown annotation vgpu.io/memroy"},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/compute_policy": "share"}, nil,
			"unknown annotation vgpu.io/compute_policy (known: vgpu.io/memory, memory-max, cores, devices, priority, qos, compute-policy, idle-release)"},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/compute-policy": "burst"}, nil,
			`malformed vGPU request: annotation vgpu.io/compute-policy="burst": want cap or share`},
		{nil, []string{"VGPU_MEMORY=1Gi", "VGPU_COMPUTE_POLICY=Share"},
			`malformed vGPU request: env VGPU_COMPUTE_POLICY="Share": want cap or share`},
		{map[string]string{"vgpu.io/compute-policy": "share"}, nil, "annotation vgpu.io/compute-policy given without vgpu.io/memory"},
		{map[string]string{"vgpu.io/cores": "50"}, nil, "without vgpu.io/memory"},
		{map[string]string{"vgpu.io/memory": "512m"}, nil,
			`annotation vgpu.io/memory="512m": want a size (1Gi, 512Mi, bytes; "m" is milli in Kubernetes quantities`},
		{nil, []string{"VGPU_MEMORY=4g"}, `env VGPU_MEMORY="4g": want a size (1Gi, 512Mi, bytes; unknown unit "g": write 4Gi`},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/idle-release": "soon"}, nil,
			`annotation vgpu.io/idle-release="soon": want a duration`},
		{map[string]string{"vgpu.io/memory": "2Gi", "vgpu.io/memory-max": "1Gi"}, nil,
			`annotation vgpu.io/memory-max="1Gi": memory ceiling 1073741824 is below the memory asked 2147483648`},
		{map[string]string{"vgpu.io/memory": "2Gi", "vgpu.io/memory-max": "lots"}, nil,
			`annotation vgpu.io/memory-max="lots": want a size`},
		{nil, []string{"VGPU_MEMORY=1Gi", "VGPU_IDLE_RELEASE=-2s"}, `env VGPU_IDLE_RELEASE="-2s": idle release -2s out of range`},
		// What vgpud would refuse is refused here, with its reason and the key.
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/priority": "-3"}, nil,
			`annotation vgpu.io/priority="-3": priority -3 is negative`},
		{nil, []string{"VGPU_MEMORY=1Gi", "VGPU_PRIORITY=4294967296"},
			`env VGPU_PRIORITY="4294967296": priority 4294967296 out of range (at most 4294967295)`},
		{map[string]string{"vgpu.io/memory": "-5%"}, nil, `annotation vgpu.io/memory="-5%": memory percent -5 out of range (0, 100]`},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/cores": "101"}, nil,
			`annotation vgpu.io/cores="101": compute percent 101 out of range (0, 100]`},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/cores": "0.001"}, nil, "below the 0.01% granularity"},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/devices": "17"}, nil,
			`annotation vgpu.io/devices="17": 17 devices asked, a slice spans at most 16`},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/devices": "-2"}, nil, "device count -2 is negative"},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/devices": "GPU-a,GPU-b,GPU-a"}, nil, "uuid GPU-a given twice"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			require.True(t, HasRequest(c.ann, c.env), "a malformed request is still a request")
			_, found, err := ParseRequest(c.ann, c.env)
			require.True(t, found)
			require.ErrorIs(t, err, ErrMalformed)
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestIsSandbox(t *testing.T) {
	require.True(t, IsSandbox(map[string]string{"io.kubernetes.cri.container-type": "sandbox"}))
	require.True(t, IsSandbox(map[string]string{"io.kubernetes.cri-o.ContainerType": "sandbox"}))
	require.False(t, IsSandbox(map[string]string{"io.kubernetes.cri.container-type": "container"}))
	require.False(t, IsSandbox(nil))
}

func TestSliceIDFor(t *testing.T) {
	require.Equal(t, "c1", SliceIDFor("c1"))
	long := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" // CRI: 64 hex
	id := SliceIDFor(long)
	require.NotEqual(t, long, id)
	require.Regexp(t, `^c-[0-9a-f]{48}$`, id)
	require.Equal(t, id, SliceIDFor(long), "deterministic")
	require.NotEqual(t, id, SliceIDFor(long+"0"))
}

// TestParseRequestSameReasonAsVgpud: a value vgpud refuses is refused by
// ParseRequest with vgpud's own reason (api.AllocRequest.Validate's).
func TestParseRequestSameReasonAsVgpud(t *testing.T) {
	for _, c := range []struct {
		ann map[string]string
		req api.AllocRequest // what vgpud would be sent
	}{
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/priority": "-1"}, api.AllocRequest{MemoryBytes: 1 << 30, Priority: -1}},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/priority": "99999999999"}, api.AllocRequest{MemoryBytes: 1 << 30, Priority: 99999999999}},
		{map[string]string{"vgpu.io/memory": "200%"}, api.AllocRequest{MemoryPercent: 200}},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/cores": "100.001"}, api.AllocRequest{MemoryBytes: 1 << 30, ComputePercent: 100.001}},
		{map[string]string{"vgpu.io/memory": "1Gi", "vgpu.io/devices": "40"}, api.AllocRequest{MemoryBytes: 1 << 30, DeviceCount: 40}},
	} {
		var want *api.RequestError
		require.ErrorAs(t, c.req.Validate(), &want)
		_, _, err := ParseRequest(c.ann, nil)
		require.ErrorIs(t, err, ErrMalformed)
		require.True(t, strings.HasSuffix(err.Error(), ": "+want.Reason), "%v does not end with vgpud's reason %q", err, want.Reason)
	}
}

// TestPodLabels: the CRI annotations of containerd and CRI-O name the
// slice's namespace, pod and container (its owner's labels, on its metrics).
func TestPodLabels(t *testing.T) {
	want := map[string]string{"namespace": "ml", "pod": "train-0", "container": "worker"}
	containerd := map[string]string{"vgpu.io/memory": "1Gi", "io.kubernetes.cri.container-type": "container",
		"io.kubernetes.cri.sandbox-namespace": "ml", "io.kubernetes.cri.sandbox-name": "train-0",
		"io.kubernetes.cri.container-name": "worker"}
	crio := map[string]string{"vgpu.io/memory": "1Gi", "io.kubernetes.pod.namespace": "ml",
		"io.kubernetes.pod.name": "train-0", "io.kubernetes.container.name": "worker"}
	for name, ann := range map[string]map[string]string{"containerd": containerd, "CRI-O": crio} {
		require.Equal(t, want, PodLabels(ann), name)
		req, found, err := ParseRequest(ann, nil)
		require.NoError(t, err, name)
		require.True(t, found)
		require.Equal(t, want, req.Owner.Labels, name)
		require.NoError(t, req.Validate())
	}
	require.Nil(t, PodLabels(map[string]string{"vgpu.io/memory": "1Gi"}), "no CRI: no labels")
	req, _, err := ParseRequest(map[string]string{"vgpu.io/memory": "1Gi"}, nil)
	require.NoError(t, err)
	require.Nil(t, req.Owner.Labels)
	// Partial, and values no label may carry, are left out, never refused.
	got := PodLabels(map[string]string{"io.kubernetes.pod.namespace": "ns",
		"io.kubernetes.cri.sandbox-name": strings.Repeat("p", 254), "io.kubernetes.container.name": "\xff"})
	require.Equal(t, map[string]string{"namespace": "ns"}, got)
}
