package runtimehook

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
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

// HostDevice is a device node on the host to hand to the container.
type HostDevice struct {
	Path         string // same path inside the container
	Major, Minor int64
}

// Injection is everything vgpu-runtime adds to a container's spec, all host
// paths already resolved and checked on the host side.
type Injection struct {
	SliceID  string
	SliceDir string // host dir with budget and usage (vgpud's store)
	LibVGPU  string // host path of libvgpu.so
	Preload  string // host file whose content names ContainerLibVGPU
	Skeleton string // host dir: slice/{budget,usage} as empty files
	Devices  []HostDevice
	// Hook is the poststop hook's path and args (argv[0] included).
	HookPath string
	HookArgs []string
	// The driver, from the node's driver spec (DriverSpec.Inject): files to
	// bind, env, and library dirs to put in front of LD_LIBRARY_PATH.
	DriverMounts  []DriverMount
	DriverEnv     map[string]string
	DriverLibDirs []string
}

// Apply edits the spec: mounts, device nodes and their cgroup rules, env and
// the poststop hook. Mounts are appended, so they come after (and win over)
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

	for _, m := range inj.DriverMounts {
		switch {
		case m.Writable:
			bind(m.Host, m.Container, rw)
		case m.Exec:
			bind(m.Host, m.Container, roExec)
		default:
			bind(m.Host, m.Container, ro)
		}
	}

	env := map[string]string{"VGPU_SLICE_ID": inj.SliceID}
	for k, v := range inj.DriverEnv {
		env[k] = v
	}
	if len(inj.DriverLibDirs) > 0 {
		ld := strings.Join(inj.DriverLibDirs, ":")
		if old := getEnv(s.Process.Env, "LD_LIBRARY_PATH"); old != "" {
			ld += ":" + old
		}
		env["LD_LIBRARY_PATH"] = ld
	}
	s.Process.Env = setEnv(s.Process.Env, env)

	addDevices(s, inj.Devices)

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

func hasDevice(devs []specs.LinuxDevice, path string) bool {
	for _, d := range devs {
		if d.Path == path {
			return true
		}
	}
	return false
}

func getEnv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val // the last one wins, as in execve
		}
	}
	return v
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
	for _, k := range []string{"VGPU_SLICE_ID", "VGPU_SIM_STATE", "LD_LIBRARY_PATH"} {
		if v, ok := set[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// charDevice returns the host char device at path, ok=false when there is none
// (missing, or not a char device). Lstat: a symlink is not followed.
func charDevice(path string) (HostDevice, bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return HostDevice{}, false, nil
		}
		return HostDevice{}, false, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return HostDevice{}, false, nil
	}
	return HostDevice{Path: path, Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev))}, true, nil
}

// addDevices hands the device nodes to the container with a cgroup rule that
// allows each; the rules are appended after the spec's own (usually a deny-all
// first), so this allow is the one that applies to the node.
func addDevices(s *specs.Spec, devs []HostDevice) {
	if len(devs) == 0 {
		return
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	for _, d := range devs {
		if !hasDevice(s.Linux.Devices, d.Path) {
			mode := os.FileMode(0o666)
			var zero uint32
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{
				Path: d.Path, Type: "c", Major: d.Major, Minor: d.Minor,
				FileMode: &mode, UID: &zero, GID: &zero,
			})
		}
		major, minor := d.Major, d.Minor
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
			Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm",
		})
	}
}
