package simgpu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The real driver reports every process under its pid in the namespace of whoever
// asks NVML. A process in its own pid namespace (as in a container) registers its
// namespace's pid; NVML on the host must still report its host pid, and its memory
// must come back when it is SIGKILLed.
func TestNVMLReportsHostPidOfNamespacedProcess(t *testing.T) {
	requireRoot(t)
	e := newNode(t, Config{Devices: 1, Memory: 2 << 30, SMs: 8, ContextMemory: u64(64 * mib)})
	w := e.watch(t)
	require.Equal(t, nvView{procs: map[int]uint64{}}, w.query(t))

	c := e.cmd("sim_hold", strconv.FormatUint(300*mib, 10))
	c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	h := startCmd(t, c)
	require.Equal(t, "1", h.fields[1], "the holder is pid 1 of its own namespace")

	want := nvView{used: 364 * mib, procs: map[int]uint64{h.pid(): 364 * mib}}
	require.Equal(t, want, w.query(t), "listed under its host pid")
	require.Equal(t, want, w.query(t), "and again from the cached translation")

	h.kill(t) // its namespace dies with it: only the remembered translation can tell
	require.Equal(t, nvView{procs: map[int]uint64{}}, w.query(t), "its memory went back to the device")
}

// A namespaced process that dies before any observer translated it is still
// judged dead from the host while its namespace lives on (the host sees the
// namespace, not the process).
func TestNamespacedProcessDeadBeforeFirstLook(t *testing.T) {
	requireRoot(t)
	e := newNode(t, Config{Devices: 1, Memory: 2 << 30, SMs: 8, ContextMemory: u64(64 * mib)})
	// sh is pid 1 of the new namespace and outlives the holder (its child).
	hold := e.cmd("sim_hold", strconv.FormatUint(100*mib, 10))
	c := exec.Command("/bin/sh", "-c", `"$0" "$1"; exec sleep 1000`, hold.Path, hold.Args[1])
	c.Env = hold.Env
	c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	sh := startCmd(t, c)
	defer sh.kill(t)
	require.Equal(t, "2", sh.fields[1])
	st, err := Status(e.state)
	require.NoError(t, err)
	require.Equal(t, 164*mib, st.Devices[0].Used)

	child := childOf(t, sh.pid())
	require.NoError(t, syscall.Kill(child, syscall.SIGKILL))
	waitGone(t, child)

	w := e.watch(t) // a fresh observer: nothing cached
	require.Equal(t, nvView{procs: map[int]uint64{}}, w.query(t))
}

// An observer that cannot see the registering process (it sits in a child pid
// namespace, with its own /proc like a container) reports it under the
// registered pid and never reclaims it.
func TestBlindObserverKeepsLiveProcess(t *testing.T) {
	requireRoot(t)
	e := newNode(t, Config{Devices: 1, Memory: 2 << 30, SMs: 8, ContextMemory: u64(64 * mib)})
	h := e.start(t, "sim_hold", strconv.FormatUint(100*mib, 10))

	// A new pid and mount namespace with a fresh /proc: the host's processes vanish.
	watch := e.cmd("sim_nvwatch")
	c := exec.Command("/bin/sh", "-c", `mount --make-rprivate / && mount -t proc proc /proc && exec "$0"`, watch.Path)
	c.Env = watch.Env
	c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	w := startWatch(t, c)
	want := nvView{used: 164 * mib, procs: map[int]uint64{h.pid(): 164 * mib}}
	require.Equal(t, want, w.query(t))
	require.Equal(t, want, w.query(t))
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates pid namespaces")
	}
}

// nvView is one answer of sim_nvwatch: device 0's used bytes and pid -> bytes.
type nvView struct {
	used  uint64
	procs map[int]uint64
}

type watcher struct {
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func (e simEnv) watch(t *testing.T) *watcher {
	t.Helper()
	return startWatch(t, e.cmd("sim_nvwatch"))
}

func startWatch(t *testing.T, c *exec.Cmd) *watcher {
	t.Helper()
	stdin, err := c.StdinPipe()
	require.NoError(t, err)
	stdout, err := c.StdoutPipe()
	require.NoError(t, err)
	c.Stderr = os.Stderr
	require.NoError(t, c.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = c.Wait()
	})
	w := &watcher{stdin: stdin, lines: bufio.NewScanner(stdout)}
	require.True(t, w.lines.Scan(), "sim_nvwatch did not start")
	require.Equal(t, "READY", w.lines.Text())
	return w
}

func (w *watcher) query(t *testing.T) nvView {
	t.Helper()
	_, err := io.WriteString(w.stdin, "q\n")
	require.NoError(t, err)
	require.True(t, w.lines.Scan(), "sim_nvwatch stopped answering")
	f := strings.Fields(w.lines.Text())
	require.GreaterOrEqual(t, len(f), 3, "bad line %q", w.lines.Text())
	require.Equal(t, "USED", f[0])
	v := nvView{used: fieldU64(t, f[1]), procs: map[int]uint64{}}
	for _, p := range f[3:] {
		pid, bytes, ok := strings.Cut(p, ":")
		require.True(t, ok, "bad process %q", p)
		n, err := strconv.Atoi(pid)
		require.NoError(t, err)
		v.procs[n] = fieldU64(t, bytes)
	}
	return v
}

// childOf is the only child of pid (as the host sees it).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	require.NoError(t, err)
	f := strings.Fields(string(b))
	require.Len(t, f, 1, "children of %d", pid)
	n, err := strconv.Atoi(f[0])
	require.NoError(t, err)
	return n
}

// waitGone waits until pid has exited (a zombie counts: its files are closed).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		state, _, ok := procStat(pid)
		if !ok || state == 'Z' || state == 'X' {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d still running", pid)
}
