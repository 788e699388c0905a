package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
)

// Every slice is published as a CDI device, vgpu.io/slice=<id>, one spec
// file per slice in cdi_dir: what vgpu-runtime adds to a container (libvgpu,
// the read-only /etc/ld.so.preload, the budget read-only and the usage
// read-write under a read-only /run/vgpu), plus the slice's GPUs as the
// node's CDI spec describes them (nvidia-ctk's, or the simulated node's).
// So podman (--device vgpu.io/slice=<id>), containerd and CRI-O with CDI on,
// or a DRA driver hand a container its slice without the runc wrapper.

// Where a slice appears inside the container: the same places vgpu-runtime
// uses (runtime-hook/inject.go), so libvgpu finds it the same way.
const (
	cdiContainerLibVGPU  = "/usr/lib/vgpu/libvgpu.so"
	cdiContainerPreload  = "/etc/ld.so.preload"
	cdiContainerVGPUDir  = "/run/vgpu"
	cdiContainerSliceDir = "/run/vgpu/slice"
	// cdiFilesDir (under the state dir) holds the preload file and the
	// mount skeleton every published slice shares.
	cdiFilesDir = "cdi-files"
)

// cdiPublisher writes and removes the slices' CDI specs. mu orders a
// slice's write against its removal: a release that removed the spec before
// the allocation wrote it makes the write a no-op (see publish).
type cdiPublisher struct {
	mu       sync.Mutex
	dir      string // "" : off
	nodes    *gpucdi.NodeCache
	libvgpu  string
	preload  string
	skeleton string
	log      *zap.Logger
}

// newCDIPublisher prepares the shared files; on failure publishing is off
// (logged): slices still work through vgpu-runtime.
func newCDIPublisher(cfg Config, log *zap.Logger) *cdiPublisher {
	p := &cdiPublisher{dir: cfg.CDIDir, nodes: gpucdi.NewNodeCache(cfg.CDISpecDirs, cfg.CDIKind),
		libvgpu: cfg.LibVGPU, log: log.Named("cdi")}
	if p.dir == "" {
		return p
	}
	files := filepath.Join(cfg.StateDir, cdiFilesDir)
	p.preload = filepath.Join(files, "ld.so.preload")
	p.skeleton = filepath.Join(files, "skeleton")
	if err := p.prepare(); err != nil {
		p.log.Error("slices are not published as CDI devices", zap.Error(err))
		p.dir = ""
	}
	return p
}

// prepare writes the preload file (naming libvgpu's container path) and the
// skeleton (slice/budget and slice/usage as empty mount points).
func (p *cdiPublisher) prepare() error {
	if err := os.MkdirAll(filepath.Join(p.skeleton, "slice"), 0o755); err != nil {
		return fmt.Errorf("cdi files: %w", err)
	}
	if err := keepMountedFile(p.preload, []byte(cdiContainerLibVGPU+"\n")); err != nil {
		return fmt.Errorf("cdi preload file: %w", err)
	}
	for _, f := range []string{"budget", "usage"} {
		if err := keepMountedFile(filepath.Join(p.skeleton, "slice", f), nil); err != nil {
			return fmt.Errorf("cdi skeleton: %w", err)
		}
	}
	return nil
}

// keepMountedFile makes path hold content without replacing an existing
// file: running containers have these files bind-mounted (the preload at
// /etc/ld.so.preload) or have mounts on them (the skeleton's budget and
// usage), and renaming a new file over one detaches those mounts in every
// container, so after a vgpud restart their new processes would start
// without libvgpu or their budget. An existing file with the right content
// is left alone; one with other content is rewritten in place (same inode).
func keepMountedFile(path string, content []byte) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, content):
		return nil
	case err == nil:
		return os.WriteFile(path, content, 0o644) //nolint:forbidigo // in place on purpose: the same inode keeps the containers' mounts
	case errors.Is(err, os.ErrNotExist):
		return atomicfile.Write(path, content, 0o644, atomicfile.Volatile)
	default:
		return err
	}
}

// publish writes the slice's spec unless live says the slice is gone by now.
// A failure is logged, not returned: the slice exists and vgpu-runtime needs
// no spec; only CDI consumers miss it.
func (p *cdiPublisher) publish(sl api.Slice, live func() bool) {
	if p == nil || p.dir == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !live() {
		return
	}
	if err := p.write(sl); err != nil {
		p.log.Warn("slice not published as a CDI device", zap.String("slice", sl.ID), zap.Error(err))
	}
}

func (p *cdiPublisher) write(sl api.Slice) error {
	node, err := p.nodes.Load()
	if err != nil {
		return err
	}
	names, err := node.DeviceNames(sl.Devices)
	if err != nil {
		return err
	}
	edits, err := node.Edits(names)
	if err != nil {
		return err
	}
	bind := func(host, ctr string, opts ...string) *cdispec.Mount {
		return &cdispec.Mount{HostPath: host, ContainerPath: ctr, Type: "bind",
			Options: append([]string{"bind", "nosuid", "nodev"}, opts...)}
	}
	own := cdispec.ContainerEdits{
		Env: []string{"VGPU_SLICE_ID=" + sl.ID, "VGPU_SLICE_DIR=" + cdiContainerSliceDir},
		Mounts: []*cdispec.Mount{
			bind(p.libvgpu, cdiContainerLibVGPU, "ro"),
			bind(p.preload, cdiContainerPreload, "ro", "noexec"),
			bind(p.skeleton, cdiContainerVGPUDir, "ro", "noexec"),
			bind(filepath.Join(sl.Dir, "budget"), cdiContainerSliceDir+"/budget", "ro", "noexec"),
			bind(filepath.Join(sl.Dir, "usage"), cdiContainerSliceDir+"/usage", "rw", "noexec"),
		},
	}
	own.Env = append(own.Env, edits.Env...)
	own.Mounts = append(own.Mounts, edits.Mounts...)
	own.DeviceNodes = edits.DeviceNodes
	own.Hooks = edits.Hooks
	spec := &cdispec.Spec{Kind: gpucdi.SliceKind, Devices: []cdispec.Device{{Name: sl.ID, ContainerEdits: own}}}
	return gpucdi.WriteSpec(p.dir, gpucdi.SpecName(sl.ID), spec)
}

// unpublish removes a released slice's spec.
func (p *cdiPublisher) unpublish(id string) {
	if p == nil || p.dir == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := gpucdi.RemoveSpec(p.dir, gpucdi.SpecName(id)); err != nil {
		p.log.Warn("stale CDI spec of a released slice", zap.String("slice", id), zap.Error(err))
	}
}

// resync, at start, rewrites the spec of every slice vgpud holds (the node's
// GPU spec or libvgpu may have changed while it was down) and removes the
// specs of slices it no longer holds.
func (p *cdiPublisher) resync(held []api.Slice) {
	if p == nil || p.dir == "" {
		return
	}
	keep := map[string]bool{}
	for _, sl := range held {
		keep[gpucdi.SpecName(sl.ID)+".json"] = true
		p.publish(sl, func() bool { return true })
	}
	entries, err := os.ReadDir(p.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		p.log.Warn("list CDI specs", zap.Error(err))
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, gpucdi.SliceSpecPrefix) || !strings.HasSuffix(name, ".json") || keep[name] || !p.ours(name) {
			continue
		}
		p.unpublish(strings.TrimSuffix(strings.TrimPrefix(name, gpucdi.SliceSpecPrefix), ".json"))
		p.log.Info("stale CDI spec removed", zap.String("file", name))
	}
}

// ours says whether a slice spec in the dir was written by a vgpud with this
// state dir (it mounts this state dir's preload file): another vgpud
// sharing the CDI dir (a test's, a second instance) keeps its slices.
func (p *cdiPublisher) ours(name string) bool {
	data, err := os.ReadFile(filepath.Join(p.dir, name))
	if err != nil {
		return false
	}
	quoted, err := json.Marshal(p.preload)
	return err == nil && bytes.Contains(data, quoted)
}

// sliceLive says whether id is held and not being released.
func (s *Server) sliceLive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.slices[id]
	return ok && !e.releasing
}

// validateCDI checks the CDI settings (config.go's Validate calls it).
func (c *Config) validateCDI() []error {
	var errs []error
	for key, p := range map[string]string{"cdi_dir": c.CDIDir, "libvgpu": c.LibVGPU} {
		if p != "" && !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: want an absolute path", key, p))
		}
	}
	if c.CDIDir != "" {
		if c.LibVGPU == "" {
			errs = append(errs, fmt.Errorf("libvgpu: empty (want libvgpu's path, e.g. %s)", DefaultLibVGPU))
		}
		for _, d := range c.CDISpecDirs {
			if !filepath.IsAbs(d) {
				errs = append(errs, fmt.Errorf("cdi_spec_dirs %q: want an absolute path", d))
			}
		}
		if err := gpucdi.ValidateKind(c.CDIKind); err != nil {
			errs = append(errs, fmt.Errorf("cdi_kind: %w", err))
		}
	}
	return errs
}
