package enforcer

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/shm"
)

func openUsage(t *testing.T, devices, slots int) *shm.UsageRegion {
	t.Helper()
	dir := t.TempDir()
	spec := shm.SliceSpec{Slots: slots}
	for d := 0; d < devices; d++ {
		spec.Devices = append(spec.Devices, shm.DeviceBudget{Index: uint32(d), MemoryLimit: 1 << 40})
	}
	require.NoError(t, shm.CreateSlice(dir, spec))
	u, err := shm.OpenUsage(filepath.Join(dir, shm.UsageFile))
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	return u
}

// TestReclaimKilledChild: end to end with real processes: the slot of a child
// that was SIGKILLed is returned by Reclaim(ProcessAlive), a running child's is
// kept.
func TestReclaimKilledChild(t *testing.T) {
	u := openUsage(t, 1, 4)
	victim, survivor := startSleeper(t, ""), startSleeper(t, "")
	slots := map[int]int{}
	for _, c := range []*exec.Cmd{victim, survivor} {
		id, err := ProcessIdentity(c.Process.Pid)
		require.NoError(t, err)
		i, err := u.ClaimSlot(id)
		require.NoError(t, err)
		require.True(t, u.Charge(i, 0, 64<<20, 1<<40))
		slots[c.Process.Pid] = i
	}
	self, err := ProcessIdentity(os.Getpid())
	require.NoError(t, err)
	selfSlot, err := u.ClaimSlot(self)
	require.NoError(t, err)
	require.True(t, u.Charge(selfSlot, 0, 1, 1<<40))

	rep, err := u.Reclaim(ProcessAlive)
	require.NoError(t, err)
	require.Empty(t, rep.Slots)
	require.Equal(t, 3, rep.Owned)

	require.NoError(t, victim.Process.Kill())
	victim.Wait()
	rep, err = u.Reclaim(ProcessAlive)
	require.NoError(t, err)
	require.Len(t, rep.Slots, 1)
	require.Equal(t, slots[victim.Process.Pid], rep.Slots[0].Index)
	require.Equal(t, []uint64{64 << 20}, rep.Slots[0].Freed)
	require.Equal(t, uint64(64<<20+1), u.DeviceUsed(0))
	_, owned := u.Slot(slots[survivor.Process.Pid])
	require.True(t, owned)
}

// isZombie reports whether pid has exited but is not reaped yet.
func isZombie(pid int) bool {
	var buf [procfs.StatBufSize]byte
	st, err := procfs.ReadStat(procfs.Root, pid, buf[:])
	return err == nil && st.State == 'Z'
}

func startSleeper(t *testing.T, name string) *exec.Cmd { return testproc.Sleeper(t, name) }
