package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
)

// CallsResult is what `bench_overhead calls` prints: per-batch ns per call of every
// thread, thread after thread (Threads*Iters samples).
type CallsResult struct {
	Mode      string    `json:"mode"`
	Op        string    `json:"op"`
	Threads   int       `json:"threads"`
	Iters     int       `json:"iters"`
	Batch     int       `json:"batch"`
	Warmup    int       `json:"warmup"`
	LibVGPU   bool      `json:"libvgpu"`
	NsPerCall []float64 `json:"ns_per_call"`
}

// InitResult is what `bench_overhead init` prints for one process.
type InitResult struct {
	Mode    string `json:"mode"`
	PID     int    `json:"pid"`
	InitNS  int64  `json:"init_ns"` // cuInit .. first cuMemAlloc/cuMemFree
	LateNS  int64  `json:"late_ns"` // how long after the common start time it woke
	LoadNS  int64  `json:"load_ns"` // spawn -> main(); -1 when unknown
	LibVGPU bool   `json:"libvgpu"`
}

// InfoResult is what `bench_overhead info` prints.
type InfoResult struct {
	Mode              string `json:"mode"`
	CUDADriverVersion int    `json:"cuda_driver_version"`
	Device            int    `json:"device"`
	Name              string `json:"name"`
	TotalBytes        uint64 `json:"total_bytes"`
	LibVGPU           bool   `json:"libvgpu"`
}

// lastJSONLine returns the last line of out that starts with '{'. The programs print
// exactly one such line; anything else on stdout (a library's chatter) is ignored.
func lastJSONLine(out []byte) ([]byte, error) {
	var last []byte
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 256*1024*1024)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) > 0 && line[0] == '{' {
			last = append(last[:0], line...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading output: %w", err)
	}
	if last == nil {
		return nil, fmt.Errorf("no JSON result in output (%d bytes)", len(out))
	}
	return last, nil
}

func decodeResult(out []byte, mode string, v any) error {
	line, err := lastJSONLine(out)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decoding %s result: %w", mode, err)
	}
	return nil
}

// ParseCalls decodes and checks the output of `bench_overhead calls`.
func ParseCalls(out []byte) (*CallsResult, error) {
	var r CallsResult
	if err := decodeResult(out, "calls", &r); err != nil {
		return nil, err
	}
	if r.Mode != "calls" {
		return nil, fmt.Errorf("expected a calls result, got mode %q", r.Mode)
	}
	if r.Threads < 1 || r.Iters < 1 || r.Batch < 1 {
		return nil, fmt.Errorf("calls result: threads %d, iters %d, batch %d: all must be >= 1",
			r.Threads, r.Iters, r.Batch)
	}
	if want := r.Threads * r.Iters; len(r.NsPerCall) != want {
		return nil, fmt.Errorf("calls result: %d samples, want threads*iters = %d",
			len(r.NsPerCall), want)
	}
	for i, x := range r.NsPerCall {
		if x < 0 {
			return nil, fmt.Errorf("calls result: sample %d is negative (%g)", i, x)
		}
	}
	return &r, nil
}

// ParseInit decodes and checks the output of `bench_overhead init`.
func ParseInit(out []byte) (*InitResult, error) {
	var r InitResult
	if err := decodeResult(out, "init", &r); err != nil {
		return nil, err
	}
	if r.Mode != "init" {
		return nil, fmt.Errorf("expected an init result, got mode %q", r.Mode)
	}
	if r.InitNS <= 0 {
		return nil, fmt.Errorf("init result: init_ns %d must be > 0", r.InitNS)
	}
	return &r, nil
}

// ParseInfo decodes the output of `bench_overhead info`.
func ParseInfo(out []byte) (*InfoResult, error) {
	var r InfoResult
	if err := decodeResult(out, "info", &r); err != nil {
		return nil, err
	}
	if r.Mode != "info" {
		return nil, fmt.Errorf("expected an info result, got mode %q", r.Mode)
	}
	return &r, nil
}
