package daemon

import (
	"encoding/json"
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
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/internal/testproc"
)

// A process holding the stand-in device, born in a fresh cgroup and in its
// own pid namespace (pid 1 there, as in a container), is listed by
// GET /v1/processes and `vgpuctl ps` with its host pid, its pid and pid
// namespace as it sees them, its start time and its cgroup path. With the
// tracker off the list is empty and says so.
func TestProcessesListsHolder(t *testing.T) {
	nd, flags := trackedNode(t)
	nd.start(append(flags, "--tracker", "ebpf")...)
	cgPath, cgFD := testCgroup(t)

	cmd := exec.Command(filepath.Join(nd.root, "build/test/sim_hold"), strconv.Itoa(8<<20), "0")
	cmd.Env, cmd.Dir = nd.env(), nd.root
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgFD, Cloneflags: syscall.CLONE_NEWPID}
	p := testproc.Start(t, cmd, "sim_hold", lineTimeout)
	p.Expect("READY")
	pid := p.Pid()
	id, err := procfs.IdentityOf(pid)
	require.NoError(t, err)
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	require.NoError(t, err)
	var pidNS uint64
	_, err = fmt.Sscanf(link, "pid:[%d]", &pidNS)
	require.NoError(t, err)

	var got api.TrackedProcess
	eventually(t, 2*time.Second, "vgpud lists the holder", func() bool {
		ps, err := nd.client.Processes(bg())
		require.NoError(t, err)
		require.Equal(t, "ebpf", ps.Tracker)
		for _, tp := range ps.Processes {
			if tp.PID == pid {
				got = tp
				return true
			}
		}
		return false
	})
	require.Equal(t, 1, got.NSPID, "pid 1 of its own pid namespace")
	require.Equal(t, pidNS, got.PIDNamespace)
	require.Equal(t, id.StartTime, got.StartTime)
	require.Equal(t, cgPath, got.CgroupPath)
	require.NotZero(t, got.CgroupID)
	require.Len(t, got.Devices, 1)

	out, errOut, code := nd.ctl("ps", "--json")
	require.Equal(t, 0, code, errOut)
	var ps api.Processes
	require.NoError(t, json.Unmarshal([]byte(out), &ps))
	require.Contains(t, ps.Processes, got)
	out, errOut, code = nd.ctl("ps")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "PID")
	row := ""
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == strconv.Itoa(pid) {
			row = line
		}
	}
	require.Equal(t, []string{strconv.Itoa(pid), "1", strconv.FormatUint(pidNS, 10),
		strconv.FormatUint(id.StartTime, 10), cgPath, "-", got.Devices[0]}, strings.Fields(row), out)
}

func TestProcessesTrackerOff(t *testing.T) {
	nd, flags := trackedNode(t)
	nd.start(append(flags, "--tracker", "off")...)
	ps, err := nd.client.Processes(bg())
	require.NoError(t, err)
	require.Equal(t, api.Processes{Tracker: "off", Processes: []api.TrackedProcess{}}, ps)
	out, errOut, code := nd.ctl("ps")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "no processes hold a GPU device (tracker off)\n", out)
}

// testCgroup makes a cgroup v2 directory for the test at the top of the
// cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host)
// and returns its path as /proc/<pid>/cgroup shows it and an open fd of it
// (for CLONE_INTO_CGROUP); both go when the test ends.
func testCgroup(t *testing.T) (string, int) {
	t.Helper()
	return testCgroupNamed(t, fmt.Sprintf("vgpu-daemon-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
}

// testCgroupNamed is testCgroup with the directory's name.
func testCgroupNamed(t *testing.T, name string) (string, int) {
	t.Helper()
	root := ""
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var fs unix.Statfs_t
		if unix.Statfs(dir, &fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
			root = dir
			break
		}
	}
	require.NotEmpty(t, root, "no cgroup v2 mount")
	dir := filepath.Join(root, name)
	require.NoError(t, os.Mkdir(dir, 0o755))
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = unix.Close(fd)
		// Registered first, so it runs after the holder's kill and reap.
		eventually(t, 2*time.Second, "the test cgroup removed", func() bool { return os.Remove(dir) == nil })
	})
	return "/" + name, fd
}
