package bench

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseCalls(t *testing.T) {
	out := []byte("driver chatter\n" +
		`{"mode":"calls","op":"launch","threads":2,"iters":3,"batch":100,"warmup":5,"libvgpu":true,` +
		`"ns_per_call":[1.5,2,3,4,5,6.25]}` + "\n")
	r, err := ParseCalls(out)
	require.NoError(t, err)
	require.Equal(t, "launch", r.Op)
	require.Equal(t, 2, r.Threads)
	require.Equal(t, 3, r.Iters)
	require.Equal(t, 100, r.Batch)
	require.True(t, r.LibVGPU)
	require.Equal(t, []float64{1.5, 2, 3, 4, 5, 6.25}, r.NsPerCall)
}

func TestParseCallsRejectsBadOutput(t *testing.T) {
	for name, out := range map[string]string{
		"no json":       "bench_overhead: cuInit failed\n",
		"wrong mode":    `{"mode":"init","init_ns":5}`,
		"short samples": `{"mode":"calls","op":"alloc","threads":2,"iters":3,"batch":1,"ns_per_call":[1,2,3]}`,
		"zero batch":    `{"mode":"calls","op":"alloc","threads":1,"iters":1,"batch":0,"ns_per_call":[1]}`,
		"negative":      `{"mode":"calls","op":"alloc","threads":1,"iters":1,"batch":1,"ns_per_call":[-1]}`,
		"truncated":     `{"mode":"calls","op":"alloc","threads":1,"iters":1,"batch":1,"ns_per_call":[1`,
	} {
		_, err := ParseCalls([]byte(out))
		require.Error(t, err, name)
	}
}

func TestParseInitAndInfo(t *testing.T) {
	r, err := ParseInit([]byte(`{"mode":"init","pid":42,"init_ns":1500000,"late_ns":2000,"load_ns":-1,"libvgpu":false}`))
	require.NoError(t, err)
	require.Equal(t, 42, r.PID)
	require.Equal(t, int64(1500000), r.InitNS)
	require.Equal(t, int64(-1), r.LoadNS)
	require.False(t, r.LibVGPU)

	_, err = ParseInit([]byte(`{"mode":"init","pid":42,"init_ns":0}`))
	require.Error(t, err)

	info, err := ParseInfo([]byte(`{"mode":"info","cuda_driver_version":12040,"device":0,` +
		`"name":"NVIDIA H100 80GB HBM3","total_bytes":85045870592,"libvgpu":false}`))
	require.NoError(t, err)
	require.Equal(t, "NVIDIA H100 80GB HBM3", info.Name)
	require.Equal(t, "12.4", cudaVersionString(info.CUDADriverVersion))
	require.Equal(t, "", cudaVersionString(0))
}

func TestParseNvidiaProcVersion(t *testing.T) {
	require.Equal(t, "550.54.15", parseNvidiaProcVersion(
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\nGCC version: gcc"))
	require.Equal(t, "570.86.15", parseNvidiaProcVersion(
		"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16)"))
	require.Equal(t, "", parseNvidiaProcVersion("garbage"))
}
