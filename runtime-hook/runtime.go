package runtimehook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
)

// VGPUD is the part of vgpud's API the runtime uses (api.Client implements it).
type VGPUD interface {
	Devices(ctx context.Context) ([]api.Device, error)
	Alloc(ctx context.Context, req api.AllocRequest) (api.Slice, error)
	Release(ctx context.Context, id string) error
}

// Runtime is one invocation of vgpu-runtime. Main fills in the real world;
// tests replace Exec, RunChild and NewClient.
type Runtime struct {
	Args    []string // without argv[0]
	Getenv  func(string) string
	Environ []string
	Stdin   io.Reader
	Stderr  io.Writer

	// Exec replaces the process with runc; it returns only on failure.
	Exec func(path string, argv, env []string) error
	// RunChild runs runc as a child, handing it every descriptor vgpu-runtime
	// inherited (--preserve-fds, …), and returns its exit status.
	RunChild func(path string, argv, env []string) (int, error)
	// NewClient connects to vgpud.
	NewClient func(socket string) VGPUD
	// Executable is vgpu-runtime's own path (the poststop hook runs it).
	Executable string
}

// Exit statuses of vgpu-runtime's own failures (runc's are passed on).
const (
	exitFail  = 1
	exitUsage = 2
)

// Main runs the invocation and returns the exit status.
func (r *Runtime) Main() int {
	if len(r.Args) > 0 && r.Args[0] == "hook" {
		return r.hookMain(r.Args[1:])
	}
	inv, err := ParseArgs(r.Args)
	log := &RuncLog{Path: inv.Log, Format: inv.LogFormat, Stderr: r.Stderr}
	if err != nil {
		log.Error(err.Error())
		return exitUsage
	}
	cfg, cfgErr := LoadConfig(r.Getenv, inv.Own)
	if cfgErr != nil {
		// Still find a runc, so that containers without a request keep
		// working; a create that asks for a slice fails below.
		cfg = DefaultConfig()
		for _, v := range []string{r.Getenv(EnvRunc), inv.Own.Runc} {
			if v != "" {
				cfg.Runc = v
			}
		}
	}
	runc, err := r.resolveRunc(cfg.Runc)
	if err != nil {
		log.Error(err.Error())
		return exitFail
	}
	if inv.Command != "create" {
		return r.execRunc(log, runc, inv)
	}
	act, spec, mode, err := r.wants(inv)
	if err != nil || !act {
		// Not ours, or a bundle runc will complain about itself.
		return r.execRunc(log, runc, inv)
	}
	if cfgErr != nil {
		log.Error(fmt.Sprintf("container %s asks for a vGPU slice but the runtime config is broken: %v", inv.ContainerID, cfgErr))
		return exitFail
	}
	return r.create(log, cfg, runc, inv, spec, mode)
}

// resolveRunc finds the runc binary, refusing vgpu-runtime itself (a
// misconfigured PATH or config would loop forever).
func (r *Runtime) resolveRunc(name string) (string, error) {
	p := name
	if !strings.Contains(name, "/") {
		var err error
		if p, err = exec.LookPath(name); err != nil {
			return "", fmt.Errorf("find runc %q: %w", name, err)
		}
	}
	if r.Executable != "" {
		a, errA := os.Stat(p)
		b, errB := os.Stat(r.Executable)
		if errA == nil && errB == nil && os.SameFile(a, b) {
			return "", fmt.Errorf("runc %q is vgpu-runtime itself: set \"runc\" in %s or %s to the real runc", p, DefaultConfigPath, EnvRunc)
		}
	}
	return p, nil
}

func (r *Runtime) execRunc(log *RuncLog, runc string, inv Invocation) int {
	argv := append([]string{runc}, inv.RuncArgs...)
	err := r.Exec(runc, argv, r.Environ)
	log.Error(fmt.Sprintf("exec %s: %v", runc, err))
	return exitFail
}

// wants reads the bundle's config.json and says whether this create is ours.
func (r *Runtime) wants(inv Invocation) (act bool, spec []byte, mode os.FileMode, err error) {
	path := filepath.Join(inv.Bundle, "config.json") // "" bundle: the working dir, as runc
	f, err := os.Open(path)
	if err != nil {
		return false, nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, nil, 0, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return false, nil, 0, err
	}
	ann, env, err := peekSpec(data)
	if err != nil {
		return false, nil, 0, err
	}
	if IsSandbox(ann) || !HasRequest(ann, env) {
		return false, nil, 0, nil
	}
	return true, data, st.Mode(), nil
}

// create gets the slice, edits the spec and runs `runc create`. Every failure
// leaves no slice behind.
func (r *Runtime) create(log *RuncLog, cfg Config, runc string, inv Invocation, data []byte, mode os.FileMode) int {
	fail := func(err error) int {
		log.Error(fmt.Sprintf("container %s: %v", inv.ContainerID, err))
		return exitFail
	}
	if inv.ContainerID == "" {
		return fail(errors.New("create: no container id on the command line"))
	}
	spec, err := DecodeSpec(data)
	if err != nil {
		return fail(err)
	}
	req, err := containerRequest(spec, inv)
	if err != nil {
		return fail(err)
	}
	files, err := prepareStateDir(cfg)
	if err != nil {
		return fail(err)
	}
	if err := checkRegular(cfg.LibVGPU, "libvgpu"); err != nil {
		return fail(err)
	}
	// The node's GPUs must be described before a slice is taken: a node
	// without its NVIDIA CDI spec fails here, with nothing to undo.
	gpus, err := gpucdi.Load(cfg.CDISpecDirs, cfg.CDIKind)
	if err != nil {
		return fail(err)
	}

	client := r.NewClient(cfg.Socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeout))
	defer cancel()
	slice, err := client.Alloc(ctx, req)
	if err != nil {
		return fail(fmt.Errorf("vgpud did not give a slice (%s): %w", describeRequest(req), err))
	}
	release := func(why string) {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Duration(cfg.Timeout))
		defer rcancel()
		if err := client.Release(rctx, slice.ID); err != nil && !api.IsNotFound(err) {
			log.Warn(fmt.Sprintf("container %s: %s; releasing slice %s failed: %v (vgpud releases it when it sees the container is gone)",
				inv.ContainerID, why, slice.ID, err))
		}
	}
	rollback := func(err error) int {
		code := fail(err)
		release("create failed")
		return code
	}
	inj, err := r.injection(cfg, slice, files, gpus)
	if err != nil {
		return rollback(err)
	}
	if err := inj.Apply(spec); err != nil {
		return rollback(fmt.Errorf("edit spec: %w", err))
	}
	if err := gpus.Inject(spec, inj.CDIDevices); err != nil {
		return rollback(fmt.Errorf("slice %s: %w", slice.ID, err))
	}
	if err := WriteSpecFile(filepath.Join(inv.Bundle, "config.json"), spec, mode); err != nil {
		return rollback(err)
	}
	// runc runs as a child (not exec) so that a failed create still releases
	// the slice here; runc's own error is already the last line of its log.
	argv := append([]string{runc}, inv.RuncArgs...)
	code, err := r.RunChild(runc, argv, r.Environ)
	if err != nil {
		return rollback(fmt.Errorf("run %s: %w", runc, err))
	}
	if code != 0 {
		release(fmt.Sprintf("runc create exited with status %d", code))
	}
	return code
}

// describeRequest is the request in the user's terms, for errors.
func describeRequest(req api.AllocRequest) string {
	var parts []string
	if req.MemoryBytes > 0 {
		parts = append(parts, fmt.Sprintf("memory %d bytes", req.MemoryBytes))
	} else {
		parts = append(parts, fmt.Sprintf("memory %g%%", req.MemoryPercent))
	}
	if req.ComputePercent > 0 {
		parts = append(parts, fmt.Sprintf("cores %g%%", req.ComputePercent))
	}
	if req.DeviceCount > 0 {
		parts = append(parts, fmt.Sprintf("%d devices", req.DeviceCount))
	}
	if len(req.UUIDs) > 0 {
		parts = append(parts, "devices "+strings.Join(req.UUIDs, ","))
	}
	if req.QoS != "" {
		parts = append(parts, "qos "+string(req.QoS))
	}
	if req.ComputePolicy != "" {
		parts = append(parts, "compute policy "+string(req.ComputePolicy))
	}
	return strings.Join(parts, ", ")
}

// containerRequest is the slice request of the container being created: its
// annotations and env, named and owned by the container.
func containerRequest(spec *specs.Spec, inv Invocation) (api.AllocRequest, error) {
	var env []string
	if spec.Process != nil {
		env = spec.Process.Env
	}
	req, _, err := ParseRequest(spec.Annotations, env)
	if err != nil {
		return req, err
	}
	req.ID = SliceIDFor(inv.ContainerID)
	req.Owner = api.Owner{Kind: api.OwnerContainer, ContainerID: inv.ContainerID, Labels: req.Owner.Labels}
	if inv.Root != "" {
		// vgpud checks <root>/<id> to release slices of containers that are
		// gone without their poststop hook having run.
		root, err := filepath.Abs(inv.Root)
		if err != nil {
			return req, fmt.Errorf("runc --root %q: %w", inv.Root, err)
		}
		req.Owner.RuncRoot = root
	}
	return req, nil
}

// injection resolves, on the host, everything the spec will point at; the
// GPUs come from the node's CDI specs (gpus).
func (r *Runtime) injection(cfg Config, slice api.Slice, files stateFiles, gpus *gpucdi.Node) (*Injection, error) {
	if slice.Dir == "" || !filepath.IsAbs(slice.Dir) {
		return nil, fmt.Errorf("vgpud answered slice %s without an absolute directory (%q)", slice.ID, slice.Dir)
	}
	for _, f := range []string{"budget", "usage"} {
		if err := checkRegular(filepath.Join(slice.Dir, f), "slice "+f); err != nil {
			return nil, err
		}
	}
	self := r.Executable
	if !filepath.IsAbs(self) {
		return nil, fmt.Errorf("the poststop hook needs vgpu-runtime's absolute path, have %q", self)
	}
	names, err := gpus.DeviceNames(slice.Devices)
	if err != nil {
		return nil, fmt.Errorf("slice %s: %w", slice.ID, err)
	}
	return &Injection{
		SliceID:    slice.ID,
		SliceDir:   slice.Dir,
		LibVGPU:    cfg.LibVGPU,
		Preload:    files.preload,
		Skeleton:   files.skeleton,
		HookPath:   self,
		HookArgs:   []string{"vgpu-runtime", "hook", "poststop", "--socket", cfg.Socket, "--id", slice.ID},
		CDIDevices: names,
	}, nil
}

// checkRegular makes sure path is a regular file (symlinks resolved: these are
// host paths from the config or vgpud, never from a container's rootfs).
func checkRegular(path, what string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: %s is not a regular file", what, path)
	}
	return nil
}

// stateFiles are the runtime's generated host files, shared by every container.
type stateFiles struct {
	preload  string // names ContainerLibVGPU
	skeleton string // dir with slice/budget and slice/usage mount points
}

// prepareStateDir creates (once) the files every vGPU container mounts. They
// never change for a given config, so all containers share them; each write
// is atomic, so concurrent creates on a fresh node agree.
func prepareStateDir(cfg Config) (stateFiles, error) {
	sf := stateFiles{
		preload:  filepath.Join(cfg.StateDir, "ld.so.preload"),
		skeleton: filepath.Join(cfg.StateDir, "skeleton"),
	}
	want := ContainerLibVGPU + "\n"
	if b, err := os.ReadFile(sf.preload); err != nil || string(b) != want {
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return sf, fmt.Errorf("runtime state dir: %w", err)
		}
		if err := atomicfile.Write(sf.preload, []byte(want), 0o644, atomicfile.Volatile); err != nil {
			return sf, err
		}
	}
	slice := filepath.Join(sf.skeleton, "slice")
	for _, f := range []string{"budget", "usage"} {
		p := filepath.Join(slice, f)
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() {
			continue
		}
		if err := os.MkdirAll(slice, 0o755); err != nil {
			return sf, fmt.Errorf("runtime state dir: %w", err)
		}
		if err := atomicfile.Write(p, nil, 0o644, atomicfile.Volatile); err != nil {
			return sf, err
		}
	}
	return sf, nil
}

// SliceIDFor is the slice id of a container: the container id itself when
// vgpud accepts it, else "c-" and a hash of it (containerd allows ids up to 76
// characters; Kubernetes' are 64). The owner record keeps the full id.
func SliceIDFor(containerID string) string {
	if api.ValidSliceID(containerID) {
		return containerID
	}
	sum := sha256.Sum256([]byte(containerID))
	return "c-" + hex.EncodeToString(sum[:])[:48]
}

// hookMain runs `vgpu-runtime hook poststop --id ID [--socket PATH]`, the
// poststop hook that releases a container's slice. runc writes the
// container's state on stdin. A slice already gone is success. When vgpud
// cannot be reached the hook still exits 0 (a failing poststop hook would
// fail `runc delete`, and the container must go): vgpud releases slices
// whose containers are gone by itself.
func (r *Runtime) hookMain(args []string) int {
	if len(args) == 0 || args[0] != "poststop" {
		fmt.Fprintln(r.Stderr, "vgpu-runtime: usage: vgpu-runtime hook poststop --id SLICE [--socket PATH]")
		return exitUsage
	}
	var id, socket string
	for i := 1; i < len(args); i++ {
		name, val, hasVal := splitFlag(args[i])
		if !hasVal && i+1 < len(args) {
			i++
			val = args[i]
		}
		switch name {
		case "id":
			id = val
		case "socket":
			socket = val
		default:
			fmt.Fprintf(r.Stderr, "vgpu-runtime: hook poststop: unknown flag %q\n", args[i])
			return exitUsage
		}
	}
	if r.Stdin != nil {
		// Drain the state runc writes, so runc never sees a broken pipe.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Stdin, 1<<20))
	}
	if id == "" {
		fmt.Fprintln(r.Stderr, "vgpu-runtime: hook poststop: --id is required")
		return exitUsage
	}
	if socket == "" {
		socket = api.DefaultSocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	if err := r.NewClient(socket).Release(ctx, id); err != nil && !api.IsNotFound(err) {
		fmt.Fprintf(r.Stderr, "vgpu-runtime: hook poststop: release slice %s: %v (vgpud releases it when it sees the container is gone)\n", id, err)
	}
	return 0
}
