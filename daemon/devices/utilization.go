package devices

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ProcessUtil is one sample of NVML's per-process utilization.
type ProcessUtil struct {
	HostPID int
	// TimeStampUs is the end of the sample (CPU time, microseconds since the epoch,
	// as NVML's lastSeenTimeStamp).
	TimeStampUs uint64
	// SMPercent is the share of the sample period during which the process had
	// a kernel running.
	SMPercent uint32
}

// ProcessUtilization returns the device's per-process utilization samples newer
// than sinceUs (0: whatever NVML still holds). No process ran since then: an
// empty list, no error. The compute-share controller turns the samples into busy
// time per slice (daemon/compute.go).
func (n *NVML) ProcessUtilization(uuid string, sinceUs uint64) ([]ProcessUtil, error) {
	end, err := n.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	h, err := n.handle(uuid)
	if err != nil {
		return nil, err
	}
	samples, err := call("get process utilization", func() ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return h.GetProcessUtilization(sinceUs)
	})
	if errors.Is(err, nvml.ERROR_NOT_FOUND) {
		return nil, nil // no sample newer than sinceUs
	}
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", uuid, err)
	}
	out := make([]ProcessUtil, 0, len(samples))
	for _, s := range samples {
		out = append(out, ProcessUtil{HostPID: int(s.Pid), TimeStampUs: s.TimeStamp, SMPercent: s.SmUtil})
	}
	return out, nil
}
