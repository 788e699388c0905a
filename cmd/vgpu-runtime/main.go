// Command vgpu-runtime is a runc-compatible OCI runtime that hands containers
// their vGPU slices (logic: package runtimehook in runtime-hook/).
//
// Register it with containerd as the BinaryName of a runc.v2 runtime (`vgpuctl
// install containerd`). For `create` of a container that asks for a slice
// (annotations vgpu.io/memory, … or env VGPU_MEMORY, …) it gets the slice from
// vgpud, edits the bundle's config.json and runs runc; every other command and
// every other container is exec'ed into runc untouched.
//
//	vgpu-runtime [--vgpu-config FILE] [--vgpu-runc PATH] [--vgpu-socket PATH]
//	             [--vgpu-libvgpu PATH] <runc global flags> <runc command> ...
//	vgpu-runtime hook poststop --id SLICE [--socket PATH]   (the poststop hook)
//
// Config: /etc/vgpu/runtime.json (or $VGPU_RUNTIME_CONFIG); env VGPU_RUNC,
// VGPU_SOCKET, VGPU_LIBVGPU and the --vgpu-* flags override it. Errors go to
// runc's --log in its --log-format (containerd shows the last error line) and
// to stderr; never to stdout, which runc's callers parse.
package main

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	runtimehook "github.com/vgpu-project/vgpu/runtime-hook"
)

func main() {
	self, err := os.Executable()
	if err != nil {
		self = ""
	}
	r := &runtimehook.Runtime{
		Args:       os.Args[1:],
		Getenv:     os.Getenv,
		Environ:    os.Environ(),
		Stdin:      os.Stdin,
		Stderr:     os.Stderr,
		Exec:       syscall.Exec,
		RunChild:   runChild,
		NewClient:  func(socket string) runtimehook.VGPUD { return api.NewClient(socket) },
		Executable: self,
	}
	os.Exit(r.Main())
}

// runChild runs runc with exactly the descriptors runc would have had had we
// exec'ed it: stdio plus every inherited descriptor that is not close-on-exec
// (runc create --preserve-fds hands such fds to the container). Termination
// signals are forwarded, so a caller that stops us stops runc.
func runChild(path string, argv, env []string) (int, error) {
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	cmd.ExtraFiles = inheritedFiles()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

// inheritedFiles lists descriptors 3.. that are open without FD_CLOEXEC, at
// their own numbers (nil entries are closed in the child). Go opens all of its
// own descriptors close-on-exec, so these are exactly what our caller passed.
func inheritedFiles() []*os.File {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	max := -1
	keep := map[int]bool{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		keep[fd] = true
		if fd > max {
			max = fd
		}
	}
	if max < 3 {
		return nil
	}
	files := make([]*os.File, max-2)
	for fd := range keep {
		files[fd-3] = os.NewFile(uintptr(fd), "fd"+strconv.Itoa(fd))
	}
	return files
}
