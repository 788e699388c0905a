package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

// systemLibvgpu is where packages install libvgpu.
const systemLibvgpu = "/usr/lib/vgpu/libvgpu.so"

// childExit makes vgpuctl exit with a given status: the status of the command
// `vgpuctl run` ran. err, when set, is printed first.
type childExit struct {
	code int
	err  error
}

func (e childExit) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func (e childExit) Unwrap() error { return e.err }

const runHelp = `Usage:
  vgpuctl run --memory SIZE|PCT% [request flags] [--libvgpu PATH] [--socket PATH] -- CMD [ARGS...]

Runs CMD inside a fresh slice: asks vgpud for a slice owned by this vgpuctl
process, runs CMD as its child with LD_PRELOAD=<libvgpu> (appended to any
LD_PRELOAD already set), VGPU_SLICE_DIR=<the slice's directory> and
CUDA_VISIBLE_DEVICES=<the slice's device UUIDs, in slice order> (replacing any
value set: CUDA device 0 is the slice's first device, wherever vgpud placed
it, and devices outside the slice are not seen at all), passes on
SIGINT, SIGTERM, SIGHUP and SIGQUIT, waits for it, releases the slice and exits
with CMD's status (128+N when a signal N ended it; 127 when CMD cannot be
started). If vgpuctl itself dies, vgpud releases the slice on its own: the
slice's owner is this process.

libvgpu is, in order: --libvgpu, $VGPU_LIBVGPU, ../build/libvgpu.so next to the
vgpuctl binary (a source checkout), ` + systemLibvgpu + `.

Everything CMD starts, and anything that unsets LD_PRELOAD below it, counts
against the slice: vgpud attributes processes to the slice by ancestry, and in
enforce mode kills one that goes past the slice behind libvgpu's back.

Examples:
  vgpuctl run --memory 2GiB -- python train.py --epochs 3
  vgpuctl run --memory 50% --compute 50 --qos burstable -- ./bench

Flags:
`

func runCommand() *command {
	return &command{name: "run", run: runRun}
}

func runRun(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vgpuctl run", flag.ContinueOnError)
	socket := socketFlag(fs)
	var rf requestFlags
	rf.register(fs)
	libFlag := fs.String("libvgpu", "", "`PATH` of libvgpu.so (env VGPU_LIBVGPU)")
	quiet := fs.Bool("quiet", false, "do not print the slice on stderr")
	// The command starts at the first non-flag argument (or after "--"): its own
	// flags must not be parsed as vgpuctl's.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return parseFlags(fs, runHelp, []string{"--help"}, stdout)
		}
		return usageError{err}
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usagef("run: no command (vgpuctl run [flags] -- CMD ARGS...)")
	}
	req, err := rf.request()
	if err != nil {
		return err
	}
	lib, err := findLibvgpu(*libFlag)
	if err != nil {
		return err
	}
	req.Owner = api.Owner{Kind: api.OwnerPID, PID: os.Getpid()}

	// Catch the signals before the slice exists: a Ctrl-C from here on must
	// not kill vgpuctl between alloc and release.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	c := api.NewClient(*socket)
	defer c.Close()
	ctx, cancel := callCtx()
	s, err := c.Alloc(ctx, req)
	cancel()
	if err != nil {
		return apiError("run: alloc", err)
	}
	release := func() {
		ctx, cancel := callCtx()
		defer cancel()
		if err := c.Release(ctx, s.ID); err != nil && !api.IsNotFound(err) {
			// vgpud will release it anyway once it sees this process gone.
			fmt.Fprintf(stderr, "vgpuctl: warning: release slice %s: %v\n", s.ID, err)
		}
	}
	if !*quiet {
		fmt.Fprintf(stderr, "vgpuctl: slice %s (%s) at %s\n", s.ID, describeSlice(s), s.Dir)
	}

	select {
	case sig := <-sigs: // interrupted while allocating: nothing started yet
		release()
		return childExit{code: 128 + int(sig.(syscall.Signal))}
	default:
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Env = runEnv(os.Environ(), lib, s)
	defer release()
	return runChild(cmd, sigs)
}

// runChild runs the workload, forwarding the signals vgpuctl receives to it,
// and turns how it ended into vgpuctl's exit: its code, 128+signal when a
// signal killed it, 126/127 when it could not start (as a shell does).
func runChild(cmd *exec.Cmd, sigs <-chan os.Signal) error {
	name := cmd.Args[0]
	if err := cmd.Start(); err != nil {
		code := 127
		if errors.Is(err, os.ErrPermission) {
			code = 126
		}
		return childExit{code: code, err: fmt.Errorf("run %s: %w", name, err)}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				_ = cmd.Process.Signal(sig) // it may have exited meanwhile
			case <-done:
				return
			}
		}
	}()
	waitErr := cmd.Wait()
	close(done)

	if waitErr == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(waitErr, &ee) {
		return childExit{code: 1, err: fmt.Errorf("run %s: %w", name, waitErr)}
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return childExit{code: 128 + int(ws.Signal())}
	}
	return childExit{code: ee.ExitCode()}
}

// describeSlice: "2GiB on GPU 0", "4GiB each on GPUs 0,1".
func describeSlice(s api.Slice) string {
	if len(s.Devices) == 0 {
		return "no devices"
	}
	idx := make([]string, len(s.Devices))
	for i, d := range s.Devices {
		idx[i] = fmt.Sprint(d.Index)
	}
	if len(s.Devices) == 1 {
		return units.HumanSize(s.Devices[0].MemoryBytes) + " on GPU " + idx[0]
	}
	return units.HumanSize(s.Devices[0].MemoryBytes) + " each on GPUs " + strings.Join(idx, ",")
}

// runEnv is the child's environment: env with libvgpu appended to LD_PRELOAD
// (kept once), VGPU_SLICE_DIR set to the slice and CUDA_VISIBLE_DEVICES to
// the slice's device UUIDs in slice order.
//
// CUDA_VISIBLE_DEVICES replaces whatever the caller set: the slice is what the
// command may use, and CUDA's ordinals then follow the slice's devices (CUDA
// device 0 is the slice's first device, as libvgpu's budget numbers them), so a
// slice placed on GPU 1 runs the program on GPU 1 rather than on GPU 0, where
// libvgpu would refuse every allocation. UUIDs, not indices: CUDA's default
// ordinal order (fastest first) need not be NVML's (PCI bus order) that vgpud
// numbers devices by. NVIDIA_VISIBLE_DEVICES is left alone: only the NVIDIA
// container toolkit reads it, when it creates a container, and the driver
// does not; setting it here would change nothing for the command and could
// only mislead a container runtime the command starts.
func runEnv(env []string, lib string, s api.Slice) []string {
	out := make([]string, 0, len(env)+3)
	preload := ""
	cvd := visibleDevices(s)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "LD_PRELOAD":
			preload = v
		case k == "VGPU_SLICE_DIR", k == "CUDA_VISIBLE_DEVICES" && cvd != "":
		default:
			out = append(out, kv)
		}
	}
	var libs []string
	for _, l := range strings.FieldsFunc(preload, func(r rune) bool { return r == ':' || r == ' ' }) {
		if l != lib {
			libs = append(libs, l)
		}
	}
	libs = append(libs, lib)
	out = append(out, "LD_PRELOAD="+strings.Join(libs, ":"), "VGPU_SLICE_DIR="+s.Dir)
	if cvd != "" {
		out = append(out, "CUDA_VISIBLE_DEVICES="+cvd)
	}
	return out
}

// visibleDevices is the slice's CUDA_VISIBLE_DEVICES: its device UUIDs in
// slice order; "" when a device has none (an older vgpud: the caller's
// setting, if any, is then left as it was).
func visibleDevices(s api.Slice) string {
	uuids := make([]string, 0, len(s.Devices))
	for _, d := range s.Devices {
		if d.UUID == "" {
			return ""
		}
		uuids = append(uuids, d.UUID)
	}
	return strings.Join(uuids, ",")
}

// findLibvgpu returns the absolute path of libvgpu.so: --libvgpu, then
// $VGPU_LIBVGPU, then ../build/libvgpu.so next to the vgpuctl binary, then the
// system path.
func findLibvgpu(flagPath string) (string, error) {
	check := func(what, p string) (string, error) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", what, p, err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		if fi.IsDir() {
			return "", fmt.Errorf("%s %s: is a directory, want libvgpu.so", what, abs)
		}
		return abs, nil
	}
	if flagPath != "" {
		return check("--libvgpu", flagPath)
	}
	if p := os.Getenv("VGPU_LIBVGPU"); p != "" {
		return check("VGPU_LIBVGPU", p)
	}
	var looked []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		p := filepath.Join(filepath.Dir(exe), "..", "build", "libvgpu.so")
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
		looked = append(looked, filepath.Clean(p))
	}
	if _, err := os.Stat(systemLibvgpu); err == nil {
		return systemLibvgpu, nil
	}
	looked = append(looked, systemLibvgpu)
	return "", fmt.Errorf("libvgpu.so not found (looked at %s): give --libvgpu PATH or set VGPU_LIBVGPU",
		strings.Join(looked, ", "))
}
