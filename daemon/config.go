// Package daemon is vgpud: it wires NVML device discovery, the allocator, the
// on-disk slice store, the enforcer loop and the metrics together, and serves
// the HTTP+JSON API of package daemon/api on a unix socket (DESIGN §5).
package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/containers"
	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
	"github.com/vgpu-project/vgpu/tracker"
)

// Defaults of every setting (documented in vgpud --help and deploy/README.md).
const (
	DefaultStateDir          = "/var/lib/vgpu"
	DefaultMetricsAddr       = "127.0.0.1:9410" // not 9400: dcgm-exporter's default, often on the same node
	DefaultPlacement         = api.PlacementBinpack
	DefaultEnforcerMode      = "report"
	DefaultEnforcerInterval  = 50 * time.Millisecond
	DefaultContextOverhead   = 256 << 20
	DefaultBackstopTolerance = 64 << 20
	DefaultLogFormat         = "json"
	DefaultLogLevel          = "info"
	DefaultComputePolicy     = api.ComputePolicyCap
	DefaultCDIDir            = "/var/run/cdi"
	DefaultLibVGPU           = "/usr/lib/vgpu/libvgpu.so"
)

// Config is vgpud's configuration: defaults, then the JSON config file, then
// command-line flags (cmd/vgpud applies them in that order).
type Config struct {
	// StateDir holds one record per slice (<state>/slices/<id>/) and a lock
	// file that keeps a second vgpud off the same state.
	StateDir string `json:"state_dir"`
	// Socket is the API's unix socket (mode 0600; its directory is created 0755).
	Socket string `json:"socket"`
	// MetricsAddr is the host:port of the Prometheus endpoint (/metrics, /healthz);
	// "" turns it off.
	MetricsAddr string `json:"metrics_addr"`
	// Placement is the node-wide policy, binpack or spread; a request may name its own.
	Placement string `json:"placement"`
	// EnforcerMode is off, report or enforce: what the backstop does with a
	// process whose real memory use exceeds its slice. Dead processes' charges are
	// returned and dead owners' slices released in every mode.
	EnforcerMode string `json:"enforcer_mode"`
	// EnforcerInterval is the period of the enforcer loop.
	EnforcerInterval units.Duration `json:"enforcer_interval"`
	// ContextOverhead is charged by libvgpu per CUDA context, on top of the
	// program's allocations: set it to the driver's per-context footprint.
	ContextOverhead Size `json:"context_overhead"`
	// BackstopTolerance is how far a process's real (driver) usage may exceed
	// what libvgpu charged it, and a slice's driver total its limit, before the
	// backstop acts: it absorbs the gap between the configured context overhead
	// and the driver's real footprint.
	BackstopTolerance Size `json:"backstop_tolerance"`
	// NVMLLibrary is the path of libnvidia-ml.so.1; "" lets the dynamic loader
	// find it (LD_LIBRARY_PATH, ld.so.cache).
	NVMLLibrary string `json:"nvml_library"`
	// LogFormat is json (production) or console; LogLevel debug, info, warn or error.
	LogFormat string `json:"log_format"`
	LogLevel  string `json:"log_level"`
	// ContainerdSocket, when set, is a containerd whose event stream tells
	// vgpud at once when a container is deleted (its slice is released even if
	// the poststop hook did not run). Without it a periodic check of runc's
	// state does the same, every ContainerCheckInterval.
	ContainerdSocket string `json:"containerd_socket"`
	// ContainerCheckInterval is the period of that check; ContainerGrace is how
	// old a container's slice must be before it is judged (vgpu-runtime
	// allocates it before runc has written the container's state).
	ContainerCheckInterval units.Duration `json:"container_check_interval"`
	ContainerGrace         units.Duration `json:"container_grace"`
	// ComputePolicy is the throttle policy of a slice whose request names
	// none: cap (its compute share is a ceiling, even alone on the device) or
	// share (a guarantee; it may use capacity others leave idle).
	ComputePolicy api.ComputePolicy `json:"compute_policy"`
	// Tracker is how vgpud learns which process holds which GPU: auto (eBPF,
	// else the procfs scanner, saying why), ebpf (eBPF or refuse to start),
	// procfs, or off (the enforcer's per-tick polling only).
	Tracker string `json:"tracker"`
	// TrackerMajors are the character-device majors the tracker follows
	// (NVIDIA's 195 by default; a simulated node's stand-in device nodes use
	// another).
	TrackerMajors []uint32 `json:"tracker_majors"`
	// CDIDir is where every slice is published as the CDI device
	// vgpu.io/slice=<id> (cdi.go); "" turns publishing off.
	CDIDir string `json:"cdi_dir"`
	// CDISpecDirs hold the node's CDI specs (nvidia-ctk's), whose GPU edits a
	// slice's spec carries; CDIKind is the kind of the node's GPUs.
	CDISpecDirs []string `json:"cdi_spec_dirs"`
	CDIKind     string   `json:"cdi_kind"`
	// LibVGPU is libvgpu's host path, mounted by the published specs.
	LibVGPU string `json:"libvgpu"`
}

// Tracker settings.
const (
	TrackerAuto   = "auto"
	TrackerEBPF   = "ebpf"
	TrackerProcfs = "procfs"
	TrackerOff    = "off"
)

// DefaultConfig returns the built-in defaults.
func DefaultConfig() Config {
	return Config{
		StateDir:          DefaultStateDir,
		Socket:            api.DefaultSocket,
		MetricsAddr:       DefaultMetricsAddr,
		Placement:         DefaultPlacement,
		EnforcerMode:      DefaultEnforcerMode,
		EnforcerInterval:  units.Duration(DefaultEnforcerInterval),
		ContextOverhead:   DefaultContextOverhead,
		BackstopTolerance: DefaultBackstopTolerance,
		LogFormat:         DefaultLogFormat,
		LogLevel:          DefaultLogLevel,
		// Container checks (package containers).
		ContainerCheckInterval: units.Duration(containers.DefaultInterval),
		ContainerGrace:         units.Duration(containers.DefaultGrace),
		ComputePolicy:          DefaultComputePolicy,
		Tracker:                TrackerAuto,
		TrackerMajors:          []uint32{tracker.NvidiaMajor},
		CDIDir:                 DefaultCDIDir,
		CDISpecDirs:            append([]string(nil), gpucdi.DefaultSpecDirs...),
		CDIKind:                gpucdi.DefaultKind,
		LibVGPU:                DefaultLibVGPU,
	}
}

// LoadConfigFile reads a JSON config file over cfg: keys present in the file
// replace cfg's values, absent keys keep them. Unknown keys are an error, so a
// misspelt setting is not silently ignored.
func LoadConfigFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return fmt.Errorf("config file %s: want a JSON object ({\"key\": value, ...}), got a JSON %s", path, typ.Value)
		}
		return fmt.Errorf("config file %s: %w", path, describeJSONError(data, err))
	}
	if dec.More() {
		return fmt.Errorf("config file %s: more than one JSON value", path)
	}
	fields := cfg.fields()
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report problems in a stable order
	for _, k := range keys {
		dst, ok := fields[k]
		if !ok {
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			sort.Strings(known)
			return fmt.Errorf("config file %s: unknown key %q (known keys: %s)", path, k, strings.Join(known, ", "))
		}
		if err := json.Unmarshal(raw[k], dst); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, k, describeJSONError(raw[k], err))
		}
	}
	return nil
}

// fields maps every config key to the field it sets.
func (c *Config) fields() map[string]any {
	return map[string]any{
		"state_dir":                &c.StateDir,
		"socket":                   &c.Socket,
		"metrics_addr":             &c.MetricsAddr,
		"placement":                &c.Placement,
		"enforcer_mode":            &c.EnforcerMode,
		"enforcer_interval":        &c.EnforcerInterval,
		"context_overhead":         &c.ContextOverhead,
		"backstop_tolerance":       &c.BackstopTolerance,
		"nvml_library":             &c.NVMLLibrary,
		"log_format":               &c.LogFormat,
		"log_level":                &c.LogLevel,
		"containerd_socket":        &c.ContainerdSocket,
		"container_check_interval": &c.ContainerCheckInterval,
		"container_grace":          &c.ContainerGrace,
		"compute_policy":           &c.ComputePolicy,
		"tracker":                  &c.Tracker,
		"tracker_majors":           &c.TrackerMajors,
		"cdi_dir":                  &c.CDIDir,
		"cdi_spec_dirs":            &c.CDISpecDirs,
		"cdi_kind":                 &c.CDIKind,
		"libvgpu":                  &c.LibVGPU,
	}
}

// describeJSONError adds the line number to a syntax error (encoding/json only
// gives a byte offset) and says what type a value should have had.
func describeJSONError(data []byte, err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		line := 1 + bytes.Count(data[:min(int(syn.Offset), len(data))], []byte("\n"))
		return fmt.Errorf("line %d: %w", line, err)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("want a JSON value for a %s, got a JSON %s", typ.Type, typ.Value)
	}
	return err
}

// Enforcer modes.
const (
	ModeOff     = "off"
	ModeReport  = "report"
	ModeEnforce = "enforce"
)

// Validate checks every setting and says which one is wrong and what it should be.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch c.Tracker {
	case TrackerAuto, TrackerEBPF, TrackerProcfs, TrackerOff:
	default:
		bad("tracker %q: want auto, ebpf, procfs or off", c.Tracker)
	}
	if c.Tracker != TrackerOff && len(c.TrackerMajors) == 0 {
		bad("tracker_majors: empty (want the GPU device major, %d for NVIDIA)", tracker.NvidiaMajor)
	}
	errs = append(errs, c.validateCDI()...)
	if c.StateDir == "" {
		bad("state_dir: empty (want a directory, e.g. %s)", DefaultStateDir)
	} else if !filepath.IsAbs(c.StateDir) {
		bad("state_dir %q: want an absolute path", c.StateDir)
	}
	switch {
	case c.Socket == "":
		bad("socket: empty (want a path, e.g. %s)", api.DefaultSocket)
	case !filepath.IsAbs(c.Socket):
		bad("socket %q: want an absolute path", c.Socket)
	case len(c.Socket) > 107:
		// sun_path is 108 bytes with the terminating NUL.
		bad("socket %q: %d bytes, a unix socket path has at most 107", c.Socket, len(c.Socket))
	}
	if c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("metrics_addr %q: want host:port, e.g. %s (or \"\" to turn it off): %v",
				c.MetricsAddr, DefaultMetricsAddr, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("metrics_addr %q: bad port %q", c.MetricsAddr, port)
		}
	}
	if c.Placement != api.PlacementBinpack && c.Placement != api.PlacementSpread {
		bad("placement %q: want %s or %s", c.Placement, api.PlacementBinpack, api.PlacementSpread)
	}
	switch c.EnforcerMode {
	case ModeOff, ModeReport, ModeEnforce:
	default:
		bad("enforcer_mode %q: want off, report or enforce", c.EnforcerMode)
	}
	if iv := time.Duration(c.EnforcerInterval); iv < time.Millisecond || iv > time.Minute {
		bad("enforcer_interval %s: want 1ms..1m (default %s)", iv, DefaultEnforcerInterval)
	}
	if c.ContextOverhead > 64<<30 {
		bad("context_overhead %s: more than a GPU's memory; want the driver's per-context footprint (default %s)",
			units.FormatSize(uint64(c.ContextOverhead)), units.FormatSize(DefaultContextOverhead))
	}
	if c.BackstopTolerance > 64<<30 {
		bad("backstop_tolerance %s: too large (default %s)",
			units.FormatSize(uint64(c.BackstopTolerance)), units.FormatSize(DefaultBackstopTolerance))
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		bad("log_format %q: want json or console", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.ContainerdSocket != "" && !filepath.IsAbs(c.ContainerdSocket) {
		bad("containerd_socket %q: want an absolute path (or \"\" for no containerd events)", c.ContainerdSocket)
	}
	if iv := time.Duration(c.ContainerCheckInterval); iv < 10*time.Millisecond || iv > time.Hour {
		bad("container_check_interval %s: want 10ms..1h (default %s)", iv, containers.DefaultInterval)
	}
	if g := time.Duration(c.ContainerGrace); g < 100*time.Millisecond || g > time.Hour {
		bad("container_grace %s: want 100ms..1h (default %s)", g, containers.DefaultGrace)
	}
	if c.ComputePolicy != api.ComputePolicyCap && c.ComputePolicy != api.ComputePolicyShare {
		bad("compute_policy %q: want %s or %s (default %s)", c.ComputePolicy,
			api.ComputePolicyCap, api.ComputePolicyShare, DefaultComputePolicy)
	}
	return errors.Join(errs...)
}

// Size is a byte count written as a Kubernetes quantity ("256Mi", "256MiB",
// "1G" = 10^9 bytes; see internal/units) or a plain number of bytes in JSON.
type Size uint64

func (s Size) String() string { return units.FormatSize(uint64(s)) }

// MarshalJSON writes the size as a string ("256MiB").
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON accepts "256MiB" or bytes.
func (s *Size) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		return s.Set(str)
	}
	var n uint64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("size: want a string like \"256MiB\" or bytes, got %s", b)
	}
	*s = Size(n)
	return nil
}

// Set parses a size (flag.Value).
func (s *Size) Set(str string) error {
	n, err := units.ParseSize(str)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}
