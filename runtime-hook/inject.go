package runtimehook

import (
	"errors"
	"path/filepath"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Where things appear inside the container.
const (
	// ContainerLibVGPU is where libvgpu.so is mounted; /etc/ld.so.preload names it.
	ContainerLibVGPU = "/usr/lib/vgpu/libvgpu.so"
	// ContainerPreload makes the dynamic loader load libvgpu into every process:
	// unlike LD_PRELOAD it cannot be unset, and it is mounted read-only.
	ContainerPreload = "/etc/ld.so.preload"
	// ContainerVGPUDir is a read-only skeleton holding slice/budget and
	// slice/usage as mount points. Being a mount point itself, it cannot be
	// renamed away by the container to plant a forged slice in its place, and
	// nothing can be created inside it.
	ContainerVGPUDir = "/run/vgpu"
	// ContainerSliceDir is where libvgpu looks for its regions (container mode).
	ContainerSliceDir = "/run/vgpu/slice"
	// HookPATH is the whole environment of the poststop hook: hooks run as
	// root on the host and must never inherit the container's env
	// (CVE-2025-23266: an inherited LD_PRELOAD ran in a root hook).
	HookPATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// HookTimeout bounds the poststop hook (seconds).
	HookTimeout = 30
)

// Injection is everything vgpu-runtime adds to a container's spec, all host
// paths already resolved and checked on the host side.
type Injection struct {
	SliceID  string
	SliceDir string // host dir with budget and usage (vgpud's store)
	LibVGPU  string // host path of libvgpu.so
	Preload  string // host file whose content names ContainerLibVGPU
	Skeleton string // host dir: slice/{budget,usage} as empty files
	// Hook is the poststop hook's path and args (argv[0] included).
	HookPath string
	HookArgs []string
	// CDIDevices are the slice's GPUs as qualified CDI names
	// (nvidia.com/gpu=GPU-…): the driver, its device nodes, mounts and hooks
	// are applied from the node's CDI specs after Apply (gpucdi.Node.Inject).
	CDIDevices []string
}

// Apply edits the spec: the slice's mounts, env and the poststop hook (the
// GPUs are the node's CDI devices, applied next). Mounts are appended, so they come after (and win over)
// the spec's own, e.g. a tmpfs at /run.
func (inj *Injection) Apply(s *specs.Spec) error {
	if s.Process == nil {
		return errors.New("spec has no process")
	}
	if s.Root == nil || s.Root.Path == "" {
		return errors.New("spec has no root filesystem")
	}
	ro := []string{"bind", "ro", "nosuid", "nodev", "noexec"}
	roExec := []string{"bind", "ro", "nosuid", "nodev"}
	rw := []string{"bind", "rw", "nosuid", "nodev", "noexec"}
	bind := func(src, dst string, opts []string) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: src,
			Options: append([]string(nil), opts...)})
	}
	bind(inj.LibVGPU, ContainerLibVGPU, roExec)
	bind(inj.Preload, ContainerPreload, ro)
	bind(inj.Skeleton, ContainerVGPUDir, ro)
	bind(filepath.Join(inj.SliceDir, "budget"), ContainerSliceDir+"/budget", ro)
	bind(filepath.Join(inj.SliceDir, "usage"), ContainerSliceDir+"/usage", rw)

	s.Process.Env = setEnv(s.Process.Env, map[string]string{"VGPU_SLICE_ID": inj.SliceID})

	if s.Hooks == nil {
		s.Hooks = &specs.Hooks{}
	}
	timeout := HookTimeout
	s.Hooks.Poststop = append(s.Hooks.Poststop, specs.Hook{
		Path:    inj.HookPath,
		Args:    append([]string(nil), inj.HookArgs...),
		Env:     []string{HookPATH},
		Timeout: &timeout,
	})
	return nil
}

// setEnv replaces (or appends) the given keys, dropping duplicates of them.
func setEnv(env []string, set map[string]string) []string {
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	// Deterministic order, so two creates of one spec give equal files.
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+set[k])
	}
	return out
}
