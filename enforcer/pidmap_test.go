package enforcer

import (
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
	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
	"golang.org/x/sys/unix"
)

// nsChild is a process started in a new pid namespace, where it is pid 1, and
// the pid-2 process it starts.
type nsChild struct {
	cmd        *exec.Cmd
	hostPID    int // pid 1 of the namespace, as we see it
	ns         uint64
	grandchild int // host pid of the namespace's pid 2
}

// startInPIDNamespace runs `sh -c 'sleep 600 & exec sleep 600'` as pid 1 of a
// fresh pid namespace (we run as root).
func startInPIDNamespace(t *testing.T) *nsChild {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 600 & exec sleep 600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setpgid: true}
	require.NoError(t, cmd.Start(), "starting a child in a new pid namespace (needs root)")
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	c := &nsChild{cmd: cmd, hostPID: cmd.Process.Pid}
	ns, err := procfs.PIDNamespaceOf(procfs.Root, c.hostPID)
	require.NoError(t, err)
	c.ns = ns
	// The background sleep is pid 2 inside; find its host pid among pid 1's
	// children (it shows up once the shell forked it).
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.hostPID, c.hostPID))
		if err != nil {
			return false
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return false
		}
		c.grandchild, _ = strconv.Atoi(f[0])
		// Wait for the exec of sleep too, so pid 1's start time is final
		// (exec does not change it, but the shell must have forked).
		return c.grandchild > 0
	}, 10*time.Second, 5*time.Millisecond)
	return c
}

// nsIdentity is the slot identity a process in c's namespace would record.
func nsIdentity(t *testing.T, hostPID int, nsPID int) shm.SlotIdentity {
	t.Helper()
	id, err := ProcessIdentity(hostPID)
	require.NoError(t, err)
	id.PID = nsPID
	return id
}

func TestProcfsMapperSameNamespace(t *testing.T) {
	m := NewProcfsMapper("")
	child := startSleeper(t, "")
	id, err := ProcessIdentity(child.Process.Pid)
	require.NoError(t, err)

	m.BeginTick()
	hp, res := m.Resolve(id)
	require.Equal(t, MapFound, res)
	require.Equal(t, child.Process.Pid, hp)
	got, ok := m.HostPID(id)
	require.True(t, ok)
	require.Equal(t, child.Process.Pid, got)

	// The same pid with an older start time: a reused pid.
	old := id
	old.StartTime--
	_, res = m.Resolve(old)
	require.Equal(t, MapGone, res)

	// Killed but not reaped: a zombie is dead.
	require.NoError(t, child.Process.Kill())
	require.Eventually(t, func() bool {
		return isZombie(child.Process.Pid)
	}, 10*time.Second, 5*time.Millisecond)
	_, res = m.Resolve(id)
	require.Equal(t, MapGone, res)
	_, _ = child.Process.Wait()
	_, res = m.Resolve(id)
	require.Equal(t, MapGone, res)
	require.Zero(t, m.Scans(), "a process in our own namespace never needs a /proc scan")

	// A slot still being claimed has no identity to map.
	_, res = m.Resolve(shm.SlotIdentity{PID: os.Getpid(), Claiming: true})
	require.Equal(t, MapUnknown, res)
}

func TestProcfsMapperOtherNamespace(t *testing.T) {
	c := startInPIDNamespace(t)
	require.NotEqual(t, procfs.SelfPIDNamespace(), c.ns, "the child must be in a new pid namespace")
	m := NewProcfsMapper("/proc")

	init1 := nsIdentity(t, c.hostPID, 1)
	second := nsIdentity(t, c.grandchild, 2)
	require.Equal(t, c.ns, second.PIDNamespace)

	m.BeginTick()
	hp, res := m.Resolve(init1)
	require.Equal(t, MapFound, res)
	require.Equal(t, c.hostPID, hp)
	hp, res = m.Resolve(second)
	require.Equal(t, MapFound, res)
	require.Equal(t, c.grandchild, hp)
	require.EqualValues(t, 1, m.Scans(), "two unmapped slots in one pass: one scan")

	// Mapped: later passes re-verify from the cache without scanning.
	for i := 0; i < 5; i++ {
		m.BeginTick()
		hp, ok := m.HostPID(second)
		require.True(t, ok)
		require.Equal(t, c.grandchild, hp)
	}
	require.EqualValues(t, 1, m.Scans())

	// The pid of that namespace with an older start time: the slot's process
	// is gone and the pid reused.
	old := second
	old.StartTime--
	m.BeginTick()
	_, res = m.Resolve(old)
	require.Equal(t, MapGone, res)
	require.EqualValues(t, 2, m.Scans())

	// A pid nobody has in that namespace: unknown in the pass it first shows
	// up (it may have started after this pass's scan), gone after the scan of
	// a later pass.
	missing := second
	missing.PID = 4000
	_, res = m.Resolve(missing)
	require.Equal(t, MapUnknown, res)
	_, res = m.Resolve(missing)
	require.Equal(t, MapUnknown, res)
	require.EqualValues(t, 2, m.Scans(), "at most one scan per pass")
	m.BeginTick()
	_, res = m.Resolve(missing)
	require.Equal(t, MapGone, res)

	// Kill the grandchild: its cached mapping fails verification.
	require.NoError(t, syscall.Kill(c.grandchild, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		m.BeginTick()
		_, res := m.Resolve(second)
		return res == MapGone
	}, 10*time.Second, 10*time.Millisecond)
	// pid 1 is untouched.
	hp, ok := m.HostPID(init1)
	require.True(t, ok)
	require.Equal(t, c.hostPID, hp)

	// The whole namespace goes away with its init.
	require.NoError(t, c.cmd.Process.Kill())
	_ = c.cmd.Wait()
	m.BeginTick()
	_, res = m.Resolve(init1)
	require.Equal(t, MapGone, res)
}

// fakeProc builds a proc-like tree for the parts of the mapper that need a
// namespace we cannot see (the daemon outside the initial pid namespace).
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	f := &fakeProc{t: t, root: t.TempDir()}
	f.nsFile("self")
	return f
}

// nsFile creates <root>/<dir>/ns/pid and returns its inode (the "namespace").
func (f *fakeProc) nsFile(dir string) uint64 {
	p := filepath.Join(f.root, dir, "ns")
	require.NoError(f.t, os.MkdirAll(p, 0o755))
	require.NoError(f.t, os.WriteFile(filepath.Join(p, "pid"), nil, 0o644))
	var st unix.Stat_t
	require.NoError(f.t, unix.Stat(filepath.Join(p, "pid"), &st))
	return st.Ino
}

// process adds host pid hp, in the namespace of nsDir (linked), with pid nspid there.
func (f *fakeProc) process(hp int, nsDir string, nspid int, start uint64, state byte) {
	dir := filepath.Join(f.root, strconv.Itoa(hp))
	require.NoError(f.t, os.MkdirAll(filepath.Join(dir, "ns"), 0o755))
	require.NoError(f.t, os.Link(filepath.Join(f.root, nsDir, "ns", "pid"), filepath.Join(dir, "ns", "pid")))
	status := fmt.Sprintf("Name:\tx\nState:\t%c\nNSpid:\t%d\t%d\n", state, hp, nspid)
	require.NoError(f.t, os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644))
	stat := fmt.Sprintf("%d (a (b) c) %c", hp, state)
	for field := 4; field <= 21; field++ {
		stat += " 0"
	}
	stat += fmt.Sprintf(" %d 0 0\n", start)
	require.NoError(f.t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
}

func TestProcfsMapperInvisibleNamespace(t *testing.T) {
	f := newFakeProc(t)
	nsA := f.nsFile("nsA")
	f.process(100, "nsA", 7, 5000, 'S')
	f.process(101, "nsA", 8, 5001, 'Z')
	m := NewProcfsMapper(f.root)
	require.False(t, m.seesAll)

	m.BeginTick()
	hp, res := m.Resolve(shm.SlotIdentity{PID: 7, PIDNamespace: nsA, StartTime: 5000})
	require.Equal(t, MapFound, res)
	require.Equal(t, 100, hp)
	_, res = m.Resolve(shm.SlotIdentity{PID: 8, PIDNamespace: nsA, StartTime: 5001})
	require.Equal(t, MapGone, res, "a zombie")

	// A namespace with no process visible from here: it may exist where we
	// cannot see it, so never "gone".
	invisible := shm.SlotIdentity{PID: 3, PIDNamespace: nsA + 1000, StartTime: 1}
	for i := 0; i < 3; i++ {
		m.BeginTick()
		_, res = m.Resolve(invisible)
		require.Equal(t, MapUnknown, res)
	}
	// A missing pid in a visible namespace is gone from the second pass on.
	gone := shm.SlotIdentity{PID: 9, PIDNamespace: nsA, StartTime: 1}
	_, res = m.Resolve(gone)
	require.Equal(t, MapUnknown, res)
	m.BeginTick()
	_, res = m.Resolve(gone)
	require.Equal(t, MapGone, res)

	// Cached mapping: the host pid now holds a newer process.
	require.NoError(t, os.RemoveAll(filepath.Join(f.root, "100")))
	f.process(100, "nsA", 7, 9000, 'S')
	m.BeginTick()
	_, res = m.Resolve(shm.SlotIdentity{PID: 7, PIDNamespace: nsA, StartTime: 5000})
	require.Equal(t, MapGone, res)
}
