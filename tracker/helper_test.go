package tracker

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/internal/testdev"
)

// The test binary doubles as the processes the tracker watches (helperMain).
const (
	helperEnv = "VGPU_TRACKER_HELPER" // "hold", "child" or "newtracker"
	devEnv    = "VGPU_TRACKER_DEV"    // the device node "hold" opens
	noBPFEnv  = "VGPU_TEST_NO_BPF"    // "1": a non-root run may skip the eBPF tests
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

// helperMain: "hold" prints the wall-clock ns just before it opens $VGPU_TRACKER_DEV
// ("open <ns>"), then obeys stdin lines: "fork" starts a "child" that inherits
// the open fd and prints "child <pid>"; "reap" ends the child and prints
// "reaped". EOF exits. "child" waits for EOF. "newtracker" runs New and
// prints its Kind (the non-root fallback test).
func helperMain(mode string) int {
	switch mode {
	case "child":
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		return 0
	case "newtracker":
		tr, err := New(context.Background(), Config{Majors: []uint32{1}, Log: zap.NewExample()})
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("kind", tr.Kind())
		_ = tr.Close()
		return 0
	}
	fmt.Println("open", time.Now().UnixNano())
	dev, err := os.OpenFile(os.Getenv(devEnv), os.O_RDWR, 0)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer dev.Close()
	fmt.Println("opened")
	in := bufio.NewScanner(os.Stdin)
	var child *exec.Cmd
	var childIn interface{ Close() error }
	for in.Scan() {
		switch in.Text() {
		case "fork":
			child = exec.Command(os.Args[0])
			child.Env = append(os.Environ(), helperEnv+"=child")
			child.ExtraFiles = []*os.File{dev}
			w, err := child.StdinPipe()
			if err == nil {
				err = child.Start()
			}
			if err != nil {
				fmt.Println("error", err)
				return 1
			}
			childIn = w
			fmt.Println("child", child.Process.Pid)
		case "reopen": // two more opens back to back
			for range 2 {
				f, err := os.OpenFile(os.Getenv(devEnv), os.O_RDWR, 0)
				if err != nil {
					fmt.Println("error", err)
					return 1
				}
				_ = f.Close()
			}
			fmt.Println("reopened")
		case "reap":
			_ = childIn.Close()
			_ = child.Wait()
			fmt.Println("reaped")
		}
	}
	return 0
}

// helper is a running "hold" process.
type helper struct {
	cmd   *exec.Cmd
	stdin interface {
		Write([]byte) (int, error)
		Close() error
	}
	out       *bufio.Scanner
	openedAt  time.Time // just before its open, by its clock (the same machine's)
	pid       int
	startTime uint64
}

// startHolder starts a "hold" helper opening dev, in cgroup dir cg ("" = ours).
func startHolder(t *testing.T, dev, cg string) *helper {
	t.Helper()
	var attr *syscall.SysProcAttr
	if cg != "" {
		attr = cgroupAttr(t, cg)
	}
	return startHolderAttr(t, dev, attr)
}

// startHolderAttr starts a "hold" helper opening dev, cloned with attr.
func startHolderAttr(t *testing.T, dev string, attr *syscall.SysProcAttr) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=hold", devEnv+"="+dev)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = attr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), pid: cmd.Process.Pid}
	t.Cleanup(h.stop)
	f := h.line(t, "open")
	ns, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	h.openedAt = time.Unix(0, ns)
	h.line(t, "opened")
	id, err := procfs.IdentityOf(h.pid)
	require.NoError(t, err)
	h.startTime = id.StartTime
	return h
}

// cgroupAttr starts a process in cgroup directory cg (clone3
// CLONE_INTO_CGROUP): born there, its first instruction, and so its open,
// already runs in it. The directory fd stays open until the test ends.
func cgroupAttr(t *testing.T, cg string) *syscall.SysProcAttr {
	t.Helper()
	fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
}

// want is the Process the tracker should list for h: in our pid
// namespace, in cgroup dir cg ("" = ours) with id cgID, holding dev.
func (h *helper) want(t *testing.T, cg string, cgID uint64, dev Device) Process {
	t.Helper()
	path := newScanner(Config{ProcRoot: "/proc"}).cgroupOf(os.Getpid()).path
	if cg != "" {
		path = "/" + strings.TrimPrefix(cg, cgroup2Mount("/proc")+"/")
	}
	return Process{PID: h.pid, NSPID: h.pid, PIDNamespace: pidNamespaceOf(t, h.pid),
		CgroupID: cgID, CgroupPath: path, StartTime: h.startTime, Devices: []Device{dev}}
}

// pidNamespaceOf is the inode that readlink /proc/<pid>/ns/pid shows.
func pidNamespaceOf(t *testing.T, pid int) uint64 {
	t.Helper()
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	require.NoError(t, err)
	var ino uint64
	_, err = fmt.Sscanf(link, "pid:[%d]", &ino)
	require.NoError(t, err, link)
	return ino
}

// line reads the helper's next stdout line, which must start with want.
func (h *helper) line(t *testing.T, want string) []string {
	t.Helper()
	require.True(t, h.out.Scan(), "helper %d ended before %q", h.pid, want)
	f := strings.Fields(h.out.Text())
	require.NotEmpty(t, f)
	require.Equal(t, want, f[0], "helper said %q", h.out.Text())
	return f
}

func (h *helper) send(t *testing.T, cmd string) {
	t.Helper()
	_, err := h.stdin.Write([]byte(cmd + "\n"))
	require.NoError(t, err)
}

func (h *helper) stop() {
	_ = h.stdin.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
}

// standIn makes a character-device node under a temp dir that stands in for
// /dev/nvidia0. It must have a driver (an open of an unregistered major fails
// with ENXIO, and a failed open holds nothing: the tracker reports only opens
// that succeeded): cpuid (203, CPU 0: nobody else opens it, so the tests see
// only their own processes) where loaded, else mem's null (1:3). Not root
// (only the procfs tests run then): /dev/null itself.
func standIn(t testing.TB, dir, name string) (string, Device) {
	t.Helper()
	if os.Geteuid() != 0 {
		return "/dev/null", Device{Major: 1, Minor: 3}
	}
	path, major, minor, err := testdev.StandIn(dir, name)
	require.NoError(t, err)
	return path, Device{Major: major, Minor: minor}
}

// freshCgroup creates a cgroup v2 directory for the test and returns it with
// its id (the directory's inode, what bpf_get_current_cgroup_id returns).
// Not root: no new cgroup (""), and the id of ours, which children inherit.
func freshCgroup(t *testing.T) (string, uint64) {
	t.Helper()
	if os.Geteuid() != 0 {
		return "", newScanner(Config{ProcRoot: "/proc"}).cgroupOf(os.Getpid()).id
	}
	root := cgroup2Mount("/proc")
	require.NotEmpty(t, root, "no cgroup2 mount")
	dir := filepath.Join(root, fmt.Sprintf("vgpu-tracker-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() {
		// Its processes are reaped by then (cleanups run last first).
		for i := 0; i < 50; i++ {
			if os.Remove(dir) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("could not remove test cgroup %s", dir)
	})
	var st unix.Stat_t
	require.NoError(t, unix.Stat(dir, &st))
	return dir, st.Ino
}

// requireBPF fails a non-root run (the eBPF tests must not pass by skipping)
// unless VGPU_TEST_NO_BPF=1 says this machine cannot load BPF.
func requireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(noBPFEnv) == "1" {
		t.Skip("not root and " + noBPFEnv + "=1: the eBPF tracker is not tested")
	}
	t.Fatal("the eBPF tracker tests need root (CAP_BPF, CAP_PERFMON, mknod, cgroups); " +
		"run as root, or set " + noBPFEnv + "=1 to skip them knowingly")
}

func newTracker(t *testing.T, cfg Config) Tracker {
	t.Helper()
	cfg.Log = zaptest.NewLogger(t)
	tr, err := New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	return tr
}

// waitEvent returns the first event on ch that matches, failing after d.
func waitEvent(t *testing.T, ch <-chan Event, d time.Duration, match func(Event) bool) (Event, time.Time) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-ch:
			require.True(t, ok, "subscription closed")
			if match(ev) {
				return ev, time.Now()
			}
		case <-deadline:
			t.Fatalf("no matching event within %s", d)
		}
	}
}

func is(kind EventKind, pid int) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == kind && ev.PID == pid }
}
