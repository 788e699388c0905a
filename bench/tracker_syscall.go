package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The operations of the syscall-cost part, in report order.
const (
	opOpenFile   = "open+close, untracked file"
	opOpenDevice = "open+close, tracked device"
	opForkExit   = "fork+exit+wait, untracked process"
)

// syscallCost alternates no tracker (A) and a fresh eBPF tracker (B) as
// A B B A, Rounds times, timing each operation in each phase.
func (e *benchEnv) syscallCost(ctx context.Context) ([]TrackerSyscallRow, error) {
	plain := filepath.Join(filepath.Dir(e.node), "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil { //nolint:forbidigo // a scratch file
		return nil, fmt.Errorf("scratch file: %w", err)
	}
	ops := []string{opOpenFile, opOpenDevice, opForkExit}
	detached := make(map[string][]float64)
	attached := make(map[string][]float64)
	added := make(map[string][]float64)
	for r := 0; r < e.opts.Rounds; r++ {
		fmt.Fprintf(e.log, "bench: syscall cost, round %d/%d (ABBA)\n", r+1, e.opts.Rounds)
		round := make(map[string][2]float64) // per op: sum detached, sum attached
		for _, on := range []bool{false, true, true, false} {
			ns, err := e.phase(ctx, on, plain)
			if err != nil {
				return nil, err
			}
			for op, v := range ns {
				s := round[op]
				if on {
					attached[op] = append(attached[op], v)
					s[1] += v / 2
				} else {
					detached[op] = append(detached[op], v)
					s[0] += v / 2
				}
				round[op] = s
			}
		}
		for op, s := range round {
			added[op] = append(added[op], s[1]-s[0])
		}
	}
	rows := make([]TrackerSyscallRow, 0, len(ops))
	for _, op := range ops {
		rows = append(rows, TrackerSyscallRow{
			Op: op, Detached: Summarize(detached[op]), Attached: Summarize(attached[op]), RoundAddedNS: added[op],
		})
	}
	return rows, nil
}

// phase times each operation once, with a fresh eBPF tracker (and a
// subscriber draining it) when on. The device is opened last: the
// benchmark process then holds it "open" in the tracker's eyes (closes are
// not hooked) and its forks would be reported; the next phase's tracker is
// fresh and sees no fd held.
func (e *benchEnv) phase(ctx context.Context, on bool, plain string) (map[string]float64, error) {
	if on {
		tr, err := e.newTracker(ctx, false)
		if err != nil {
			return nil, err
		}
		defer tr.Close()
		if tr.Kind() != trackerEBPF {
			return nil, fmt.Errorf("the eBPF tracker did not load (got %s)", tr.Kind())
		}
		_, stop := newRecorder(tr, e.dev)
		defer stop()
	}
	runtime.GC() // not inside a timed loop
	out := make(map[string]float64)
	var err error
	if out[opForkExit], err = timeForks(e.opts.ForksPerPhase); err != nil {
		return nil, err
	}
	if out[opOpenFile], err = timeOpens(plain, e.opts.OpsPerPhase); err != nil {
		return nil, err
	}
	if out[opOpenDevice], err = timeOpens(e.node, e.opts.OpsPerPhase); err != nil {
		return nil, err
	}
	return out, nil
}

// timeOpens returns the mean ns of an open(O_RDONLY|O_CLOEXEC)+close of
// path, in CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID: user and
// kernel, the BPF programs included, since they run in the opener's
// context). Not wall time: the tracker's reader runs in this process (its
// work and its garbage collections would be charged to the opens, while
// vgpud is another process), and on a small machine any other load shows
// up in wall time as noise larger than the effect.
func timeOpens(path string, n int) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, fmt.Errorf("path %q: %w", path, err)
	}
	t0, err := threadCPU()
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		// Raw: unix.Open would allocate the C string each time, and with it
		// charge garbage collection work to the loop.
		fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(fdCWD), uintptr(unsafe.Pointer(p)),
			uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
		if errno != 0 {
			return 0, fmt.Errorf("open %s: %w", path, errno)
		}
		_ = unix.Close(int(fd))
	}
	t1, err := threadCPU()
	if err != nil {
		return 0, err
	}
	return float64(t1-t0) / float64(n), nil
}

// fdCWD is AT_FDCWD in a variable: a negative constant cannot be converted
// to a system call argument (uintptr), a variable's value can.
var fdCWD = unix.AT_FDCWD

// threadCPU is the calling thread's CPU time in ns.
func threadCPU() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("thread cpu clock: %w", err)
	}
	return ts.Nano(), nil
}

// timeForks returns the mean ns of a fork whose child exits at once, and the
// parent's wait for it.
func timeForks(n int) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		pid, errno := forkExit()
		if errno != 0 {
			return 0, fmt.Errorf("fork: %w", errno)
		}
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err != unix.EINTR { //nolint:errorlint // raw errno
				if err != nil {
					return 0, fmt.Errorf("wait4 %d: %w", pid, err)
				}
				break
			}
		}
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(n), nil
}

// forkExit forks (clone with SIGCHLD, no exec); the child calls exit_group
// at once with raw system calls only, so it runs none of the Go runtime.
//
//go:norace
//go:nosplit
func forkExit() (int, syscall.Errno) {
	pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	if pid == 0 {
		_, _, _ = syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
	return int(pid), 0
}
