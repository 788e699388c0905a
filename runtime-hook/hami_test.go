package runtimehook

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// TestHAMiEnv: HAMi's container env is a request, in HAMi-core's notation
// (binary k/m/g, bare bytes), below vgpu.io/ annotations and VGPU_ env key
// by key.
func TestHAMiEnv(t *testing.T) {
	cases := []struct {
		name string
		ann  map[string]string
		env  []string
		want api.AllocRequest
	}{
		{"g", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=4g"}, api.AllocRequest{MemoryBytes: 4 << 30}},
		{"G", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=4G"}, api.AllocRequest{MemoryBytes: 4 << 30}},
		{"m (HAMi's device plugin)", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT_0=4096m"}, api.AllocRequest{MemoryBytes: 4 << 30}},
		{"k", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=1048576k"}, api.AllocRequest{MemoryBytes: 1 << 30}},
		{"bytes", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=1073741824"}, api.AllocRequest{MemoryBytes: 1 << 30}},
		{"sm limit", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=2g", "CUDA_DEVICE_SM_LIMIT=30"},
			api.AllocRequest{MemoryBytes: 2 << 30, ComputePercent: 30}},
		{"per-device sm limit", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT_0=2048m", "CUDA_DEVICE_SM_LIMIT_0=25"},
			api.AllocRequest{MemoryBytes: 2 << 30, ComputePercent: 25}},
		{"sm limit 0 is HAMi's no limit", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=2g", "CUDA_DEVICE_SM_LIMIT=0"},
			api.AllocRequest{MemoryBytes: 2 << 30}},
		{"two devices", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT_1=3000m", "CUDA_DEVICE_MEMORY_LIMIT_0=3000m",
			"CUDA_DEVICE_SM_LIMIT_0=40", "CUDA_DEVICE_SM_LIMIT_1=40"},
			api.AllocRequest{MemoryBytes: 3000 << 20, ComputePercent: 40, DeviceCount: 2}},
		{"per-device wins over global", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=8g", "CUDA_DEVICE_MEMORY_LIMIT_0=1g"},
			api.AllocRequest{MemoryBytes: 1 << 30}},
		{"last occurrence wins", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=8g", "CUDA_DEVICE_MEMORY_LIMIT=2g"},
			api.AllocRequest{MemoryBytes: 2 << 30}},
		{"VGPU_ env wins key by key", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=4g", "CUDA_DEVICE_SM_LIMIT=30", "VGPU_MEMORY=1Gi"},
			api.AllocRequest{MemoryBytes: 1 << 30, ComputePercent: 30}},
		{"an empty VGPU_ value leaves HAMi's", nil, []string{"CUDA_DEVICE_MEMORY_LIMIT=4g", "VGPU_MEMORY="},
			api.AllocRequest{MemoryBytes: 4 << 30}},
		{"annotations win", map[string]string{"vgpu.io/memory": "2Gi", "vgpu.io/devices": "1"},
			[]string{"CUDA_DEVICE_MEMORY_LIMIT_0=4096m", "CUDA_DEVICE_MEMORY_LIMIT_1=4096m", "VGPU_CORES=20", "CUDA_DEVICE_SM_LIMIT=50"},
			api.AllocRequest{MemoryBytes: 2 << 30, ComputePercent: 20, DeviceCount: 1}},
		{"HAMi memory, vgpu.io cores", map[string]string{"vgpu.io/cores": "10"}, []string{"CUDA_DEVICE_MEMORY_LIMIT=1g"},
			api.AllocRequest{MemoryBytes: 1 << 30, ComputePercent: 10}},
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

// TestHAMiEnvNoRequest: HAMi's "no limit" (0) and an SM limit alone are no
// request: the container runs untouched.
func TestHAMiEnvNoRequest(t *testing.T) {
	for _, env := range [][]string{
		{"CUDA_DEVICE_MEMORY_LIMIT=0"},
		{"CUDA_DEVICE_MEMORY_LIMIT_0=0m"},
		{"CUDA_DEVICE_MEMORY_LIMIT="},
		{"CUDA_DEVICE_SM_LIMIT=50"},
		{"CUDA_DEVICE_SM_LIMIT=garbage"},
		{"CUDA_DEVICE_MEMORY_LIMIT_X=4g", "CUDA_DEVICE_MEMORY_LIMITS=4g", "CUDA_DEVICE_MEMORY_LIMIT_01=4g"},
	} {
		require.False(t, HasRequest(nil, env), "%q", env)
		_, found, err := ParseRequest(nil, env)
		require.NoError(t, err, "%q", env)
		require.False(t, found, "%q", env)
	}
}

func TestHAMiEnvMalformed(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT=4x"}, `env CUDA_DEVICE_MEMORY_LIMIT="4x": want a size in HAMi-core's notation`},
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT=1.5g"}, `env CUDA_DEVICE_MEMORY_LIMIT="1.5g": want a size`},
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT=-1g"}, `want a size`},
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT=99999999999g"}, `want a size`},
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT_0=1g", "CUDA_DEVICE_MEMORY_LIMIT_1=2g"},
			`env CUDA_DEVICE_MEMORY_LIMIT_0="1g" and CUDA_DEVICE_MEMORY_LIMIT_1="2g" differ`},
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT=1g", "CUDA_DEVICE_SM_LIMIT=101"}, `env CUDA_DEVICE_SM_LIMIT="101": want a percentage`},
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT=1g", "CUDA_DEVICE_SM_LIMIT_0=10", "CUDA_DEVICE_SM_LIMIT_1=20"}, "differ"},
		// vgpud's rules, with the HAMi value as the container wrote it.
		{[]string{"CUDA_DEVICE_MEMORY_LIMIT=1g", "CUDA_DEVICE_MEMORY_LIMIT_0=1g", "CUDA_DEVICE_MEMORY_LIMIT_1=1g",
			"CUDA_DEVICE_MEMORY_LIMIT_2=1g", "CUDA_DEVICE_MEMORY_LIMIT_3=1g", "CUDA_DEVICE_MEMORY_LIMIT_4=1g",
			"CUDA_DEVICE_MEMORY_LIMIT_5=1g", "CUDA_DEVICE_MEMORY_LIMIT_6=1g", "CUDA_DEVICE_MEMORY_LIMIT_7=1g",
			"CUDA_DEVICE_MEMORY_LIMIT_8=1g", "CUDA_DEVICE_MEMORY_LIMIT_9=1g", "CUDA_DEVICE_MEMORY_LIMIT_10=1g",
			"CUDA_DEVICE_MEMORY_LIMIT_11=1g", "CUDA_DEVICE_MEMORY_LIMIT_12=1g", "CUDA_DEVICE_MEMORY_LIMIT_13=1g",
			"CUDA_DEVICE_MEMORY_LIMIT_14=1g", "CUDA_DEVICE_MEMORY_LIMIT_15=1g", "CUDA_DEVICE_MEMORY_LIMIT_16=1g"},
			`env CUDA_DEVICE_MEMORY_LIMIT_16="1g": 17 devices asked, a slice spans at most 16`},
	} {
		t.Run(c.want, func(t *testing.T) {
			require.True(t, HasRequest(nil, c.env), "a malformed request is still a request")
			_, found, err := ParseRequest(nil, c.env)
			require.True(t, found)
			require.ErrorIs(t, err, ErrMalformed)
			require.ErrorContains(t, err, c.want)
		})
	}
}
