package runtimehook

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

// AnnotationPrefix starts every request annotation.
const AnnotationPrefix = "vgpu.io/"

// The request keys: annotation vgpu.io/<key>, or env VGPU_<KEY>; each has a
// parser in requestParsers.
//
//	memory    per device: a size, a Kubernetes quantity ("1Gi" = 2³⁰ bytes,
//	          "512M" = 512·10⁶; "1GiB" also does; internal/units), or a
//	          share of the device ("50%")
//	cores     compute share per device in percent, 0 < p <= 100 ("30" or "30%");
//	          absent: no share (not throttled, nothing reserved)
//	devices   how many devices ("2", at most api.MaxSliceDevices), or which
//	          ("GPU-…,GPU-…": UUIDs); default 1
//	priority  an integer (higher runs first when devices are contended)
//	qos       guaranteed (default) | burstable | best-effort
//	compute-policy  cap | share: what the compute share means (a ceiling, or
//	          a guarantee that may use idle capacity); default: vgpud's
//	          (env VGPU_COMPUTE_POLICY)
//	memory-max  the elastic ceiling per device, a size >= memory: an allocation
//	          over memory may be granted more, up to this; default: none
//	idle-release  a duration ("2s", "30m"): release the slice once it has been
//	          empty that long after its last GPU process, while the container
//	          runs on (notebooks, forgotten jobs); default: kept
//
// memory is required once any key is given. Annotations win over env, key by
// key. An empty value counts as not given.
//
// HAMi's container env is a request too, below both (hamiValues): a
// workload moving from HAMi keeps its limits.
var requestKeys = []string{"memory", "memory-max", "cores", "devices", "priority", "qos", "compute-policy", "idle-release"}

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
	hami, err := hamiValues(env)
	return err != nil || len(hami) > 0
}

func isEnvKey(k string) bool {
	for _, key := range requestKeys {
		if k == envName(key) {
			return true
		}
	}
	return false
}

// envName is a key's env variable: VGPU_ and the key in upper case, '-' as '_'.
func envName(key string) string {
	return "VGPU_" + strings.ReplaceAll(strings.ToUpper(key), "-", "_")
}

var uuidPattern = regexp.MustCompile(`^(GPU|MIG)-[0-9A-Za-z-]+$`)

// ParseRequest builds the allocation request from the container's annotations
// and env. found is false when neither names a request key. A request it
// returns passes api.AllocRequest.Validate, the checks vgpud makes before it
// looks at its devices, and one that does not is refused here with vgpud's
// reason and the annotation (or env) that gave the value at fault.
func ParseRequest(annotations map[string]string, env []string) (req api.AllocRequest, found bool, err error) {
	vals, err := requestValues(annotations, env)
	if err != nil {
		return req, true, err
	}
	if len(vals) == 0 {
		return req, false, nil
	}
	if _, ok := vals["memory"]; !ok {
		return req, true, fmt.Errorf("%w: %s given without vgpu.io/memory (or VGPU_MEMORY): say how much memory the slice has",
			ErrMalformed, strings.Join(vals.sources(), ", "))
	}
	for _, key := range requestKeys {
		v, ok := vals[key]
		if !ok {
			continue
		}
		if why := requestParsers[key](&req, strings.TrimSpace(v.value)); why != "" {
			return req, true, fmt.Errorf("%w: %s=%q: %s", ErrMalformed, v.source, v.shown(), why)
		}
	}
	req.Owner.Labels = PodLabels(annotations)
	if err := req.Validate(); err != nil {
		return req, true, vals.invalid(err)
	}
	return req, true, nil
}

// criLabels: the CRI annotations that name a container's pod and itself, by
// Owner.Labels key: containerd's first, then CRI-O's.
var criLabels = []struct{ key, containerd, crio string }{
	{api.OwnerLabelNamespace, "io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"},
	{api.OwnerLabelPod, "io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"},
	{api.OwnerLabelContainer, "io.kubernetes.cri.container-name", "io.kubernetes.container.name"},
}

// PodLabels returns the container's namespace, pod and container names from
// the CRI annotations (containerd's io.kubernetes.cri.sandbox-namespace,
// sandbox-name and container-name; CRI-O's io.kubernetes.pod.namespace,
// pod.name and container.name), for the slice's owner and so its metrics;
// nil when there are none (a container not started by a CRI). A value that
// is no valid label (api.ValidOwnerLabel: too long, not UTF-8) is left out:
// metadata never stops a container.
func PodLabels(annotations map[string]string) map[string]string {
	var out map[string]string
	for _, l := range criLabels {
		v := annotations[l.containerd]
		if v == "" {
			v = annotations[l.crio]
		}
		if !api.ValidOwnerLabel(l.key, v) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(criLabels))
		}
		out[l.key] = v
	}
	return out
}

// fieldKeys maps an AllocRequest field (api.RequestError.Field) to the
// request key that sets it.
var fieldKeys = map[string]string{
	"memory_bytes":     "memory",
	"memory_percent":   "memory",
	"memory_max_bytes": "memory-max",
	"compute_percent":  "cores",
	"idle_release":     "idle-release",
	"device_count":     "devices",
	"uuids":            "devices",
	"priority":         "priority",
	"qos":              "qos",
	"compute_policy":   "compute-policy",
}

// invalid words a refusal of api.AllocRequest.Validate as the other errors
// of ParseRequest are: the value at fault, where it came from, and why.
func (vals valueSet) invalid(err error) error {
	var re *api.RequestError
	if !errors.As(err, &re) {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if v, ok := vals[fieldKeys[re.Field]]; ok {
		return fmt.Errorf("%w: %s=%q: %s", ErrMalformed, v.source, v.shown(), re.Reason)
	}
	return fmt.Errorf("%w: %s", ErrMalformed, re.Reason)
}

// requestValue is one request key's value and where it came from (for
// errors: "annotation vgpu.io/memory", "env VGPU_MEMORY"). raw, when set, is
// what the source said, value its translation (HAMi's env).
type requestValue struct{ value, source, raw string }

// shown is the value as its source wrote it.
func (v requestValue) shown() string {
	if v.raw != "" {
		return v.raw
	}
	return v.value
}

type valueSet map[string]requestValue

// sources lists where the given keys came from, in requestKeys order.
func (vals valueSet) sources() []string {
	var given []string
	for _, k := range requestKeys {
		if v, ok := vals[k]; ok {
			given = append(given, v.source)
		}
	}
	return given
}

// requestValues gathers the request keys from env, then annotations (which
// win, key by key). An unknown vgpu.io/ annotation is an error: a typo
// (vgpu.io/memroy) must not silently run the container without its limit.
func requestValues(annotations map[string]string, env []string) (valueSet, error) {
	vals, err := hamiValues(env)
	if err != nil {
		return nil, err
	}
	fromEnv := valueSet{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		for _, key := range requestKeys {
			// The last occurrence wins, as for execve's environment.
			if k == envName(key) {
				if v == "" {
					delete(fromEnv, key)
					continue
				}
				fromEnv[key] = requestValue{value: v, source: "env " + k}
			}
		}
	}
	for key, v := range fromEnv {
		vals[key] = v
	}
	var unknown []string
	for k, v := range annotations {
		key, ok := strings.CutPrefix(k, AnnotationPrefix)
		if !ok || v == "" {
			continue
		}
		if _, known := requestParsers[key]; !known {
			unknown = append(unknown, k)
			continue
		}
		vals[key] = requestValue{value: v, source: "annotation " + k}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%w: unknown annotation %s (known: %s%s)",
			ErrMalformed, strings.Join(unknown, ", "), AnnotationPrefix, strings.Join(requestKeys, ", "))
	}
	return vals, nil
}

// requestParsers set each key's field of the request from its trimmed value,
// returning why the value is wrong ("" when it is right).
var requestParsers = map[string]func(req *api.AllocRequest, v string) string{
	"memory":   parseMemory,
	"cores":    parseCores,
	"devices":  parseDevices,
	"priority": parsePriority,
	"qos":      parseQoS,
	// vgpud's default when not given (the request leaves it empty).
	"compute-policy": parseComputePolicy,
	"idle-release":   parseIdleRelease,
	"memory-max":     parseMemoryMax,
}

func parseMemoryMax(req *api.AllocRequest, v string) string {
	n, err := units.ParseSize(v)
	if err != nil {
		return "want a size (8Gi, 512Mi, bytes; " + sizeWhy(err) + ")"
	}
	req.MemoryMaxBytes = n // at least memory: api.AllocRequest.Validate
	return ""
}

func parseIdleRelease(req *api.AllocRequest, v string) string {
	d, err := time.ParseDuration(v)
	if err != nil {
		return "want a duration (2s, 30m, 1h)"
	}
	req.IdleRelease = units.Duration(d) // its range: api.AllocRequest.Validate
	return ""
}

func parseMemory(req *api.AllocRequest, v string) string {
	if p, isPct := strings.CutSuffix(v, "%"); isPct {
		f, err := parsePercent(p)
		if err != nil {
			return err.Error()
		}
		if f == 0 {
			return "must be more than 0"
		}
		req.MemoryPercent = f // its range: api.AllocRequest.Validate
		return ""
	}
	n, err := units.ParseSize(v)
	if err != nil {
		return "want a size (1Gi, 512Mi, bytes; " + sizeWhy(err) + ") or a percentage (50%)"
	}
	if n == 0 {
		return "must be more than 0"
	}
	req.MemoryBytes = n
	return ""
}

func parseCores(req *api.AllocRequest, v string) string {
	f, err := parsePercent(strings.TrimSuffix(v, "%"))
	if err != nil {
		return err.Error()
	}
	if f == 0 {
		// 0 would mean "no share" on the wire: leaving the key out says that.
		return "a compute share must be more than 0 (leave it out for none)"
	}
	req.ComputePercent = f // its range and granularity: api.AllocRequest.Validate
	return ""
}

// parseDevices takes a device count or a list of UUIDs (how many a slice may
// span, and that none is given twice: api.AllocRequest.Validate).
func parseDevices(req *api.AllocRequest, v string) string {
	if n, err := strconv.Atoi(v); err == nil {
		if n == 0 {
			// 0 would mean "the default" on the wire.
			return fmt.Sprintf("a device count must be 1..%d", api.MaxSliceDevices)
		}
		req.DeviceCount = n
		return ""
	}
	for _, u := range strings.Split(v, ",") {
		u = strings.TrimSpace(u)
		if !uuidPattern.MatchString(u) {
			return fmt.Sprintf("want a count or a comma-separated list of GPU UUIDs (GPU-…), got %q", u)
		}
		req.UUIDs = append(req.UUIDs, u)
	}
	return ""
}

// parsePriority takes an integer (its range: api.AllocRequest.Validate).
func parsePriority(req *api.AllocRequest, v string) string {
	n, err := strconv.Atoi(v)
	if err != nil {
		return "want an integer"
	}
	req.Priority = n
	return ""
}

func parseQoS(req *api.AllocRequest, v string) string {
	q, err := api.ParseQoS(v)
	if err != nil || v == "" {
		return "want guaranteed, burstable or best-effort"
	}
	req.QoS = q
	return ""
}

func parseComputePolicy(req *api.AllocRequest, v string) string {
	p, err := api.ParseComputePolicy(v)
	if err != nil || v == "" {
		return "want cap or share"
	}
	req.ComputePolicy = p
	return ""
}

func parsePercent(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("want a percentage, e.g. 50%")
	}
	return f, nil
}

// sizeWhy is units.ParseSize's reason without the value it repeats.
func sizeWhy(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}
