// Package runtimehook is the logic of vgpu-runtime, the runc wrapper that hands a
// container its vGPU slice (DESIGN §6).
//
// vgpu-runtime is registered with containerd as the BinaryName of a runc.v2
// runtime class. It acts only on `create` of a container that asks for a slice
// (annotations vgpu.io/…, or env VGPU_…): it asks vgpud for the slice, edits the
// bundle's config.json (mounts, device nodes, env, a poststop hook that releases
// the slice) and runs runc. Every other command and every container without a
// request goes to runc untouched, through exec(2): a wrapper that fails breaks
// every container on the node, so it passes through what it does not own.
package runtimehook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
)

// DefaultConfigPath is read when VGPU_RUNTIME_CONFIG and --vgpu-config are not
// given; a missing file there means the defaults.
const DefaultConfigPath = "/etc/vgpu/runtime.json"

// Defaults of the config.
const (
	DefaultRunc     = "runc"
	DefaultLibVGPU  = "/usr/lib/vgpu/libvgpu.so"
	DefaultStateDir = "/run/vgpu/runtime"
	DefaultTimeout  = 10 * time.Second
)

// Environment variables that override the config file (and are overridden by
// vgpu-runtime's own --vgpu-* flags).
const (
	EnvConfig  = "VGPU_RUNTIME_CONFIG"
	EnvRunc    = "VGPU_RUNC"
	EnvSocket  = "VGPU_SOCKET"
	EnvLibVGPU = "VGPU_LIBVGPU"
)

// Config says which runc vgpu-runtime runs, where vgpud listens and what it
// mounts into containers. JSON file (DefaultConfigPath), every field optional:
//
//	{
//	  "runc": "runc",                        // path, or a name looked up in PATH
//	  "socket": "/run/vgpu/vgpud.sock",      // vgpud's API socket
//	  "libvgpu": "/usr/lib/vgpu/libvgpu.so", // host path of the interception library
//	  "state_dir": "/run/vgpu/runtime",      // generated files (ld.so.preload, mount skeleton)
//	  "timeout": "10s",                      // each request to vgpud
//	  "cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi"], // the node's CDI specs (later wins)
//	  "cdi_kind": "nvidia.com/gpu"           // the CDI kind of the node's GPUs
//	}
type Config struct {
	Runc     string         `json:"runc"`
	Socket   string         `json:"socket"`
	LibVGPU  string         `json:"libvgpu"`
	StateDir string         `json:"state_dir"`
	Timeout  units.Duration `json:"timeout"`
	// CDISpecDirs are the directories of the node's CDI specs, lowest
	// priority first; the GPUs of a slice are applied from them (the NVIDIA
	// spec `nvidia-ctk cdi generate` writes, or the simulated node's).
	CDISpecDirs []string `json:"cdi_spec_dirs"`
	// CDIKind is the CDI kind of the node's GPUs.
	CDIKind string `json:"cdi_kind"`

	// Source says where the config came from (for error messages).
	Source string `json:"-"`
}

// DefaultConfig is the config without a file.
func DefaultConfig() Config {
	return Config{
		Runc:     DefaultRunc,
		Socket:   api.DefaultSocket,
		LibVGPU:  DefaultLibVGPU,
		StateDir: DefaultStateDir,
		Timeout:  units.Duration(DefaultTimeout),
		// A copy: a config decoded over the defaults must not write into
		// the package's slice.
		CDISpecDirs: append([]string(nil), gpucdi.DefaultSpecDirs...),
		CDIKind:     gpucdi.DefaultKind,
		Source:      "defaults",
	}
}

// Overrides are the values given on vgpu-runtime's command line (empty: not
// given).
type Overrides struct {
	ConfigPath string
	Runc       string
	Socket     string
	LibVGPU    string
}

// LoadConfig builds the config: defaults, then the file (the --vgpu-config
// flag, else $VGPU_RUNTIME_CONFIG, else DefaultConfigPath, which may be
// missing), then the environment, then the flags.
func LoadConfig(getenv func(string) string, o Overrides) (Config, error) {
	cfg := DefaultConfig()
	path, named := o.ConfigPath, true
	if path == "" {
		path = getenv(EnvConfig)
	}
	if path == "" {
		path, named = DefaultConfigPath, false
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := decodeConfig(data, &cfg); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
		cfg.Source = path
	case errors.Is(err, os.ErrNotExist) && !named:
		// No file at the default place: defaults.
	default:
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	for _, kv := range []struct {
		dst       *string
		env, flag string
	}{
		{&cfg.Runc, EnvRunc, o.Runc},
		{&cfg.Socket, EnvSocket, o.Socket},
		{&cfg.LibVGPU, EnvLibVGPU, o.LibVGPU},
	} {
		if v := getenv(kv.env); v != "" {
			*kv.dst = v
		}
		if kv.flag != "" {
			*kv.dst = kv.flag
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config (%s): %w", cfg.Source, err)
	}
	return cfg, nil
}

func decodeConfig(data []byte, cfg *Config) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	// A misspelt key must not silently fall back to a default.
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("decode: trailing data after the JSON object")
	}
	return nil
}

// Validate checks the values that cannot be fixed up later.
func (c *Config) Validate() error {
	var errs []error
	if c.Runc == "" {
		errs = append(errs, errors.New("runc: empty"))
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("socket: empty"))
	}
	for name, p := range map[string]string{"libvgpu": c.LibVGPU, "state_dir": c.StateDir} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s: %q is not an absolute path", name, p))
		}
	}
	if len(c.CDISpecDirs) == 0 {
		errs = append(errs, errors.New("cdi_spec_dirs: empty"))
	}
	for _, d := range c.CDISpecDirs {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("cdi_spec_dirs: %q is not an absolute path", d))
		}
	}
	if err := gpucdi.ValidateKind(c.CDIKind); err != nil {
		errs = append(errs, fmt.Errorf("cdi_kind: %w", err))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout: %s is not positive", time.Duration(c.Timeout)))
	}
	return errors.Join(errs...)
}
