package procfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/internal/testproc"
)

// TestAliveChild: a running child is alive; the same pid with another start
// time (a reused pid) is dead; killed, it is dead as a zombie and after being
// reaped; a process of another pid namespace is never judged dead.
func TestAliveChild(t *testing.T) {
	cmd := startSleeper(t, "")
	pid := cmd.Process.Pid
	id, err := IdentityOf(pid)
	require.NoError(t, err)
	require.Equal(t, pid, id.PID)
	require.NotZero(t, id.StartTime)
	require.Equal(t, SelfPIDNamespace(), id.PIDNamespace)

	require.True(t, Alive(id))
	require.True(t, Alive(Identity{PID: pid}), "unknown start time and namespace: pid check only")
	reused := id
	reused.StartTime++
	require.False(t, Alive(reused), "wrong start time: a different process")
	foreign := id
	foreign.PIDNamespace = id.PIDNamespace + 1
	require.True(t, Alive(foreign), "another namespace's pid cannot be judged here")

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	// Until reaped the child is a zombie: dead already.
	var buf [StatBufSize]byte
	require.Eventually(t, func() bool {
		st, err := ReadStat(Root, pid, buf[:])
		return err == nil && st.State == 'Z'
	}, 10*time.Second, time.Millisecond)
	require.False(t, Alive(id), "zombie")
	_ = cmd.Wait()
	require.False(t, Alive(id), "reaped")
	require.False(t, Alive(Identity{PID: pid}))
	_, err = IdentityOf(pid)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.True(t, IsGone(err))

	require.False(t, Alive(Identity{PID: 0}))
	require.False(t, Alive(Identity{PID: -1}))
}

// TestReadStatOddName: the command name may contain spaces and parentheses;
// the parent pid is still field 4 and the start time field 22.
func TestReadStatOddName(t *testing.T) {
	cmd := startSleeper(t, "a) b (c")
	pid := cmd.Process.Pid
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	require.Contains(t, string(raw), "(a) b (c)")
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	want, err := strconv.ParseUint(fields[22-3], 10, 64)
	require.NoError(t, err)

	var buf [StatBufSize]byte
	st, err := ReadStat(Root, pid, buf[:])
	require.NoError(t, err)
	require.Equal(t, want, st.StartTime)
	require.Equal(t, os.Getpid(), st.PPID)
	require.Contains(t, "RSD", string(st.State))
}

// TestParseStat: fields are counted after the last ')'; short or malformed
// lines are errors, not zeros.
func TestParseStat(t *testing.T) {
	st, err := ParseStat([]byte("12 (a) b (c) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 1 2\n"))
	require.NoError(t, err)
	require.Equal(t, Stat{State: 'R', PPID: 1, StartTime: 777}, st)
	for _, bad := range []string{"12 no paren", "12 (x) S 1 2", "12 (x) S x 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20", ""} {
		_, err = ParseStat([]byte(bad))
		require.ErrorIs(t, err, ErrStatFormat, bad)
	}
}

// TestReadNSpid: the innermost pid of the NSpid line; absent or malformed
// lines say no.
func TestReadNSpid(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	buf := make([]byte, 4096)
	got, ok := ReadNSpid(write("nested", "Name:\tx\nNSpid:\t4242\t17\t1\nNSsid:\t1\n"), buf)
	require.True(t, ok)
	require.Equal(t, 1, got)
	got, ok = ReadNSpid(write("host", "Name:\tx\nNSpid:\t99\n"), buf)
	require.True(t, ok)
	require.Equal(t, 99, got)
	for _, body := range []string{"Name:\tx\n", "Name:\tx\nNSpid:\t\n", "Name:\tx\nNSpid:\tz\n", "Name:\tx\nNSpid:\t0\n"} {
		_, ok = ReadNSpid(write("bad", body), buf)
		require.False(t, ok, body)
	}
	_, ok = ReadNSpid(filepath.Join(dir, "missing"), buf)
	require.False(t, ok)
	self, ok := ReadNSpid("/proc/self/status", buf)
	require.True(t, ok)
	require.Positive(t, self)
}

// BenchmarkAlive: the per-slot liveness check against this process.
func BenchmarkAlive(b *testing.B) {
	id, err := IdentityOf(os.Getpid())
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if !Alive(id) {
			b.Fatal("self not alive")
		}
	}
}

func startSleeper(t *testing.T, name string) *exec.Cmd { return testproc.Sleeper(t, name) }
