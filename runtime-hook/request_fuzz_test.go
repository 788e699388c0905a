package runtimehook

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseRequest: whatever a container's annotations and env say (the
// fuzzer's annotations are "key=value" lines, its env is lines as in
// execve), ParseRequest never panics; it finds a request exactly when
// HasRequest says there is one; it refuses only with ErrMalformed; and a
// request it accepts passes api.AllocRequest.Validate, so vgpud never refuses
// it for its values.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range [][2]string{
		{"vgpu.io/memory=1GiB", ""},
		{"", "PATH=/bin\nVGPU_MEMORY=512M\nVGPU_CORES=30%"},
		{"vgpu.io/memory=50%\nvgpu.io/cores=25\nvgpu.io/devices=2\nvgpu.io/priority=3\nvgpu.io/qos=best-effort", ""},
		{"vgpu.io/memory=1G\nvgpu.io/devices=GPU-391f319a-ca6f-4092-8327-918d834bf021, GPU-aaaaaaaa", ""},
		{"vgpu.io/memory=1G\nvgpu.io/priority=-3", ""},
		{"vgpu.io/memory=1G\nvgpu.io/priority=4294967296", ""},
		{"vgpu.io/memory=1G\nvgpu.io/cores=0.001", "VGPU_DEVICES=17"},
		{"vgpu.io/memory=1e400%", "VGPU_CORES=NaN"},
		{"vgpu.io/memroy=1G", ""},
		{"vgpu.io/cores=50", ""},
		{"vgpu.io/memory=-0%\nio.kubernetes.cri.container-type=sandbox", "VGPU_MEMORY="},
		{"vgpu.io/memory=18446744073709551615", "VGPU_DEVICES=GPU-a,GPU-a"},
		{"vgpu.io/memory=16EiB", "VGPU_PRIORITY=9223372036854775808"},
		{"", "CUDA_DEVICE_MEMORY_LIMIT_0=4096m\nCUDA_DEVICE_MEMORY_LIMIT_1=4096m\nCUDA_DEVICE_SM_LIMIT=30"},
		{"vgpu.io/cores=5", "CUDA_DEVICE_MEMORY_LIMIT=0\nCUDA_DEVICE_SM_LIMIT=x\nVGPU_MEMORY="},
		{"vgpu.io/memory=512m", "CUDA_DEVICE_MEMORY_LIMIT=1.5g"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, annLines, envLines string) {
		ann := map[string]string{}
		for _, line := range strings.Split(annLines, "\n") {
			k, v, _ := strings.Cut(line, "=")
			ann[k] = v
		}
		var env []string
		if envLines != "" {
			env = strings.Split(envLines, "\n")
		}
		req, found, err := ParseRequest(ann, env)
		if found != HasRequest(ann, env) {
			t.Fatalf("found %v, HasRequest %v (err %v)", found, !found, err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !found {
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted %+v, which vgpud refuses: %v", req, err)
		}
	})
}
