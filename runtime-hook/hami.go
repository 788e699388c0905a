package runtimehook

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// HAMi's container env (HAMi-core, the in-container limiter of HAMi and
// Volcano's vGPU): the request of a workload moving from HAMi, below the
// vgpu.io/ annotations and VGPU_ env, key by key.
//
//	CUDA_DEVICE_MEMORY_LIMIT      memory per device, HAMi-core's notation:
//	                              bytes, or a number with k, m or g (any case,
//	                              binary: "1g" = "1024m" = "1048576k" =
//	                              "1073741824" = 1 GiB)
//	CUDA_DEVICE_MEMORY_LIMIT_<i>  the same for device i (what HAMi's device
//	                              plugin sets, "4096m"); every device of a
//	                              slice has the same memory, so these must
//	                              agree; when they name devices 0..n-1 and n >
//	                              1 they also ask for n devices. They win over
//	                              CUDA_DEVICE_MEMORY_LIMIT, as in HAMi-core.
//	CUDA_DEVICE_SM_LIMIT(_<i>)    compute share per device in percent, 1..100;
//	                              0 is HAMi's "no limit": no share
//
// A value of 0 (memory) is HAMi-core's "no limit" and counts as not given.
// The SM limit alone is no request (HAMi sets it beside a memory limit; an
// image that carries it alone keeps running untouched); the memory limit is.
const (
	hamiMemoryEnv = "CUDA_DEVICE_MEMORY_LIMIT"
	hamiSMEnv     = "CUDA_DEVICE_SM_LIMIT"
)

// hamiIndex parses <prefix>_<i>.
func hamiIndex(k, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(k, prefix+"_")
	if !ok || rest == "" {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || strconv.Itoa(i) != rest {
		return 0, false
	}
	return i, true
}

// hamiEnv is one HAMi variable's value: for the whole container (index -1)
// or one device.
type hamiEnv struct {
	name, value string
	index       int
}

// hamiValues translates HAMi's env into request values (memory in bytes,
// cores in percent, devices), sourced to the HAMi variable; the last
// occurrence of a variable wins, as for execve's environment.
func hamiValues(env []string) (valueSet, error) {
	last := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, hamiMemoryEnv) || strings.HasPrefix(k, hamiSMEnv) {
			last[k] = strings.TrimSpace(v)
		}
	}
	collect := func(prefix string) (global *hamiEnv, perDev []hamiEnv) {
		for k, v := range last {
			if k == prefix {
				global = &hamiEnv{name: k, value: v, index: -1}
			} else if i, ok := hamiIndex(k, prefix); ok {
				perDev = append(perDev, hamiEnv{name: k, value: v, index: i})
			}
		}
		sort.Slice(perDev, func(a, b int) bool { return perDev[a].index < perDev[b].index })
		return global, perDev
	}
	vals := valueSet{}

	memGlobal, memDev := collect(hamiMemoryEnv)
	mem, err := hamiPick(memGlobal, memDev, parseHAMiSize, "a size in HAMi-core's notation (4096m, 4g, bytes)")
	if err != nil {
		return nil, err
	}
	if mem == nil || mem.n == 0 {
		return vals, nil // no HAMi request (0: HAMi's "no limit")
	}
	vals["memory"] = requestValue{value: strconv.FormatUint(mem.n, 10), source: "env " + mem.name, raw: mem.value}
	if n := len(memDev); n > 1 && memDev[n-1].index == n-1 {
		vals["devices"] = requestValue{value: strconv.Itoa(n), source: "env " + memDev[n-1].name, raw: memDev[n-1].value}
	}

	smGlobal, smDev := collect(hamiSMEnv)
	sm, err := hamiPick(smGlobal, smDev, parseHAMiPercent, "a percentage 0..100 (0: no limit)")
	if err != nil {
		return nil, err
	}
	if sm != nil && sm.n != 0 {
		vals["cores"] = requestValue{value: strconv.FormatUint(sm.n, 10), source: "env " + sm.name, raw: sm.value}
	}
	return vals, nil
}

// hamiPicked is the value a HAMi variable gives every device of the slice.
type hamiPicked struct {
	hamiEnv
	n uint64
}

// hamiPick parses the per-device variables, which must agree (a slice has
// one size and one share on all its devices), else the global one; empty
// values count as not given. nil: none given.
func hamiPick(global *hamiEnv, perDev []hamiEnv, parse func(string) (uint64, bool), want string) (*hamiPicked, error) {
	var got *hamiPicked
	for _, e := range perDev {
		if e.value == "" {
			continue
		}
		n, ok := parse(e.value)
		if !ok {
			return nil, fmt.Errorf("%w: env %s=%q: want %s", ErrMalformed, e.name, e.value, want)
		}
		if got != nil && got.n != n {
			return nil, fmt.Errorf("%w: env %s=%q and %s=%q differ: a vGPU slice has the same limit on every device (set vgpu.io/ annotations or VGPU_ env instead)",
				ErrMalformed, got.name, got.value, e.name, e.value)
		}
		if got == nil {
			got = &hamiPicked{hamiEnv: e, n: n}
		}
	}
	if got != nil || global == nil || global.value == "" {
		return got, nil
	}
	n, ok := parse(global.value)
	if !ok {
		return nil, fmt.Errorf("%w: env %s=%q: want %s", ErrMalformed, global.name, global.value, want)
	}
	return &hamiPicked{hamiEnv: *global, n: n}, nil
}

// parseHAMiSize reads HAMi-core's size notation: a whole number of bytes, or
// of KiB, MiB or GiB with a k, m or g suffix (any case). HAMi-core itself
// reads "1.5g" as 1 GiB (strtoul); a fraction is refused here rather than
// guessed.
func parseHAMiSize(v string) (uint64, bool) {
	shift := uint(0)
	switch {
	case strings.HasSuffix(v, "k"), strings.HasSuffix(v, "K"):
		shift = 10
	case strings.HasSuffix(v, "m"), strings.HasSuffix(v, "M"):
		shift = 20
	case strings.HasSuffix(v, "g"), strings.HasSuffix(v, "G"):
		shift = 30
	}
	if shift != 0 {
		v = v[:len(v)-1]
	}
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > (1<<63-1)>>shift {
		return 0, false
	}
	return n << shift, true
}

// parseHAMiPercent reads CUDA_DEVICE_SM_LIMIT: a whole percent, 0..100.
func parseHAMiPercent(v string) (uint64, bool) {
	n, err := strconv.ParseUint(strings.TrimSuffix(v, "%"), 10, 64)
	if err != nil || n > 100 {
		return 0, false
	}
	return n, true
}
