package runtimehook

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

// AnnotationPrefix starts every request annotation.
const AnnotationPrefix = "vgpu.io/"

// The request keys: annotation vgpu.io/<key>, or env VGPU_<KEY>.
//
//	memory    per device: a size ("1GiB", "512M", bytes) or a share of the device ("50%")
//	cores     compute share per device in percent, 0 < p <= 100 ("30" or "30%"); default 100
//	devices   how many devices ("2"), or which ("GPU-…,GPU-…": UUIDs); default 1
//	priority  an integer (higher runs first when devices are contended)
//	qos       guaranteed (default) | burstable | best-effort
//
// memory is required once any key is given. Annotations win over env, key by
// key. An empty value counts as not given.
var requestKeys = []string{"memory", "cores", "devices", "priority", "qos"}

// Annotations containerd and CRI-O put on a pod's sandbox (pause) container.
// The sandbox never runs CUDA, but it carries the pod's annotations, so it must
// not take a slice of its own.
var sandboxAnnotations = map[string]string{
	"io.kubernetes.cri.container-type":     "sandbox",
	"io.kubernetes.cri-o.ContainerType":    "sandbox",
	"io.kubernetes.docker.type":            "podsandbox",
	"io.kubernetes.cri.sandbox-container":  "true",
	"io.kubernetes.cri-o.SandboxContainer": "true",
}

// ErrMalformed is wrapped by every error about the request's values.
var ErrMalformed = errors.New("malformed vGPU request")

// IsSandbox reports whether the spec is a pod's sandbox container.
func IsSandbox(annotations map[string]string) bool {
	for k, v := range sandboxAnnotations {
		if annotations[k] == v {
			return true
		}
	}
	return false
}

// HasRequest reports whether the annotations or env name any request key (even
// with a bad value: that is an error for ParseRequest, not a reason to ignore
// the container).
func HasRequest(annotations map[string]string, env []string) bool {
	for k, v := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) && v != "" {
			return true
		}
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if v != "" && isEnvKey(k) {
			return true
		}
	}
	return false
}

func isEnvKey(k string) bool {
	for _, key := range requestKeys {
		if k == envName(key) {
			return true
		}
	}
	return false
}

func envName(key string) string { return "VGPU_" + strings.ToUpper(key) }

var uuidPattern = regexp.MustCompile(`^(GPU|MIG)-[0-9A-Za-z-]+$`)

// ParseRequest builds the allocation request from the container's annotations
// and env. found is false when neither names a request key.
func ParseRequest(annotations map[string]string, env []string) (req api.AllocRequest, found bool, err error) {
	vals := map[string]string{} // key -> value
	src := map[string]string{}  // key -> where it came from (for errors)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		for _, key := range requestKeys {
			// The last occurrence wins, as for execve's environment.
			if k == envName(key) {
				if v == "" {
					delete(vals, key)
					continue
				}
				vals[key], src[key] = v, "env "+k
			}
		}
	}
	var unknown []string
	for k, v := range annotations {
		key, ok := strings.CutPrefix(k, AnnotationPrefix)
		if !ok || v == "" {
			continue
		}
		known := false
		for _, rk := range requestKeys {
			if key == rk {
				known = true
			}
		}
		if !known {
			unknown = append(unknown, k)
			continue
		}
		vals[key], src[key] = v, "annotation "+k
	}
	if len(unknown) > 0 {
		// A typo (vgpu.io/memroy) must not silently run the container
		// without its limit.
		sort.Strings(unknown)
		return req, true, fmt.Errorf("%w: unknown annotation %s (known: vgpu.io/memory, cores, devices, priority, qos)",
			ErrMalformed, strings.Join(unknown, ", "))
	}
	if len(vals) == 0 {
		return req, false, nil
	}
	bad := func(key, why string) error {
		return fmt.Errorf("%w: %s=%q: %s", ErrMalformed, src[key], vals[key], why)
	}
	mem, ok := vals["memory"]
	if !ok {
		var given []string
		for _, k := range requestKeys {
			if _, ok := vals[k]; ok {
				given = append(given, src[k])
			}
		}
		return req, true, fmt.Errorf("%w: %s given without vgpu.io/memory (or VGPU_MEMORY): say how much memory the slice has",
			ErrMalformed, strings.Join(given, ", "))
	}
	if p, isPct := strings.CutSuffix(strings.TrimSpace(mem), "%"); isPct {
		f, err := parsePercent(p)
		if err != nil {
			return req, true, bad("memory", err.Error())
		}
		req.MemoryPercent = f
	} else {
		n, err := units.ParseSize(mem)
		if err != nil {
			return req, true, bad("memory", "want a size (1GiB, 512MiB, bytes) or a percentage (50%)")
		}
		if n == 0 {
			return req, true, bad("memory", "must be more than 0")
		}
		req.MemoryBytes = n
	}
	if c, ok := vals["cores"]; ok {
		f, err := parsePercent(strings.TrimSuffix(strings.TrimSpace(c), "%"))
		if err != nil {
			return req, true, bad("cores", err.Error())
		}
		req.ComputePercent = f
	}
	if d, ok := vals["devices"]; ok {
		d = strings.TrimSpace(d)
		if n, err := strconv.Atoi(d); err == nil {
			if n < 1 || n > 64 {
				return req, true, bad("devices", "a device count must be 1..64")
			}
			req.DeviceCount = n
		} else {
			seen := map[string]bool{}
			for _, u := range strings.Split(d, ",") {
				u = strings.TrimSpace(u)
				if !uuidPattern.MatchString(u) {
					return req, true, bad("devices", fmt.Sprintf("want a count or a comma-separated list of GPU UUIDs (GPU-…), got %q", u))
				}
				if seen[u] {
					return req, true, bad("devices", "UUID "+u+" given twice")
				}
				seen[u] = true
				req.UUIDs = append(req.UUIDs, u)
			}
		}
	}
	if p, ok := vals["priority"]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 32)
		if err != nil {
			return req, true, bad("priority", "want an integer")
		}
		req.Priority = int(n)
	}
	if q, ok := vals["qos"]; ok {
		switch q = strings.TrimSpace(q); q {
		case api.QoSGuaranteed, api.QoSBurstable, api.QoSBestEffort:
			req.QoS = q
		default:
			return req, true, bad("qos", "want guaranteed, burstable or best-effort")
		}
	}
	return req, true, nil
}

func parsePercent(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("want a percentage, e.g. 50%")
	}
	if f <= 0 || f > 100 {
		return 0, errors.New("a percentage must be in (0, 100]")
	}
	return f, nil
}
