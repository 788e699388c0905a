// Package dra is vgpu's Kubernetes Dynamic Resource Allocation driver (the
// kubelet plugin behind cmd/vgpu-dra): it publishes the GPUs vgpud manages
// as shareable devices in ResourceSlices and turns an allocated
// ResourceClaim into a vgpud slice, handed to the container as the CDI device
// vgpu.io/slice=<id>. vgpud's store is the only state: a claim's slice has a
// deterministic id and an owner of kind claim, so a restarted plugin finds
// what it prepared by asking vgpud.
package dra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

// The opaque configuration a claim (or a DeviceClass) may give driver
// vgpu.io: the parts of a slice the scheduler does not decide. Memory and
// compute share come from the allocation's consumed capacity, never from
// here, so that the scheduler's books and vgpud's always agree.
const (
	ConfigAPIVersion = "vgpu.io/v1alpha1"
	ConfigKind       = "SliceConfig"
)

// SliceConfig is the opaque configuration, apiVersion vgpu.io/v1alpha1,
// kind SliceConfig. Every field is optional; unknown fields are an error.
type SliceConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// QoS is the slice's class: guaranteed (default), burstable, best-effort.
	QoS string `json:"qos,omitempty"`
	// Priority: while a higher-priority slice is active, lower ones are held
	// to their floor (0 when unset).
	Priority *int64 `json:"priority,omitempty"`
	// ComputePolicy: cap (a ceiling) or share (a guarantee; idle capacity
	// may be used). Unset: vgpud's default.
	ComputePolicy string `json:"computePolicy,omitempty"`
	// MemoryMax is the elastic ceiling per device (a Kubernetes quantity, at
	// least the allocated memory, at most the device's memory).
	MemoryMax string `json:"memoryMax,omitempty"`
}

// maxConfigBytes bounds one opaque configuration: it is user input.
const maxConfigBytes = 64 << 10

// DecodeConfig strictly decodes one opaque configuration: JSON (what the
// apiserver stores), the right apiVersion and kind, no unknown or duplicate
// trailing content, every value checked.
func DecodeConfig(raw []byte) (SliceConfig, error) {
	var c SliceConfig
	if len(raw) > maxConfigBytes {
		return c, fmt.Errorf("config: %d bytes, at most %d", len(raw), maxConfigBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return SliceConfig{}, fmt.Errorf("config: %w (want a JSON object, apiVersion %s, kind %s)",
			err, ConfigAPIVersion, ConfigKind)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return SliceConfig{}, errors.New("config: trailing data after the object")
	}
	if c.APIVersion != ConfigAPIVersion || c.Kind != ConfigKind {
		return SliceConfig{}, fmt.Errorf("config: apiVersion %q kind %q: want apiVersion %s, kind %s",
			c.APIVersion, c.Kind, ConfigAPIVersion, ConfigKind)
	}
	if err := c.validate(); err != nil {
		return SliceConfig{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

func (c SliceConfig) validate() error {
	if _, err := api.ParseQoS(c.QoS); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	if _, err := api.ParseComputePolicy(c.ComputePolicy); err != nil {
		return fmt.Errorf("computePolicy: %w", err)
	}
	if c.Priority != nil && (*c.Priority < 0 || *c.Priority > math.MaxUint32) {
		return fmt.Errorf("priority %d: want 0..%d", *c.Priority, uint32(math.MaxUint32))
	}
	if c.MemoryMax != "" {
		if _, err := units.ParseSize(c.MemoryMax); err != nil {
			return fmt.Errorf("memoryMax: %w", err)
		}
	}
	return nil
}

// merge lays o over c: the fields o sets win.
func (c SliceConfig) merge(o SliceConfig) SliceConfig {
	if o.QoS != "" {
		c.QoS = o.QoS
	}
	if o.Priority != nil {
		c.Priority = o.Priority
	}
	if o.ComputePolicy != "" {
		c.ComputePolicy = o.ComputePolicy
	}
	if o.MemoryMax != "" {
		c.MemoryMax = o.MemoryMax
	}
	return c
}

// claimConfig is the configuration for a claim's requests served by driver:
// the class's configurations first, then the claim's (the claim's own
// settings win, as DRA prescribes), each in order, each applying when it
// names no request or one of requests. vgpud makes one slice per claim, so
// configurations for different requests of one claim are merged too.
func claimConfig(alloc *resourceapi.AllocationResult, driver string, requests map[string]bool) (SliceConfig, error) {
	var out SliceConfig
	for _, source := range []resourceapi.AllocationConfigSource{
		resourceapi.AllocationConfigSourceClass, resourceapi.AllocationConfigSourceClaim,
	} {
		for i, cfg := range alloc.Devices.Config {
			if cfg.Source != source || cfg.Opaque == nil || cfg.Opaque.Driver != driver || !appliesTo(cfg.Requests, requests) {
				continue
			}
			c, err := DecodeConfig(cfg.Opaque.Parameters.Raw)
			if err != nil {
				return SliceConfig{}, fmt.Errorf("%s config #%d: %w", source, i, err)
			}
			out = out.merge(c)
		}
	}
	return out, nil
}

// appliesTo: a configuration naming no request applies to all; one naming
// "req" applies to req and its subrequests ("req/sub").
func appliesTo(names []string, requests map[string]bool) bool {
	if len(names) == 0 {
		return true
	}
	for _, n := range names {
		for r := range requests {
			if n == r || n == baseRequest(r) {
				return true
			}
		}
	}
	return false
}

// baseRequest is the main request of "main/sub" (or the name itself).
func baseRequest(r string) string {
	base, _, _ := strings.Cut(r, "/")
	return base
}
