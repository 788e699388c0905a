package tracker

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A process in its own pid namespace (pid 1 there) that opens the device is
// found by the identity libvgpu reports from inside it: its pid namespace's
// inode, its pid there and its start time. Once killed, it is no longer
// found, and its exit is remembered. Both trackers.
func TestFindInNamespaceAndSawExit(t *testing.T) {
	for _, procfs := range []bool{false, true} {
		name := map[bool]string{false: "ebpf", true: "procfs"}[procfs]
		t.Run(name, func(t *testing.T) {
			if !procfs {
				requireBPF(t)
			} else if os.Geteuid() != 0 {
				t.Fatal("a new pid namespace needs root")
			}
			node, dev := standIn(t, t.TempDir(), "vgpusim0")
			cg, cgID := freshCgroup(t)
			tr := newTracker(t, Config{Majors: []uint32{dev.Major}, ForceProcfs: procfs,
				ProcfsInterval: 20 * time.Millisecond})
			require.Equal(t, name, tr.Kind())
			events, cancel := tr.Subscribe(1024)
			defer cancel()

			attr := cgroupAttr(t, cg)
			attr.Cloneflags = syscall.CLONE_NEWPID
			h := startHolderAttr(t, node, attr)
			ns := pidNamespaceOf(t, h.pid)
			require.NotEqual(t, pidNamespaceOf(t, os.Getpid()), ns, "the holder has its own pid namespace")
			ev, _ := waitEvent(t, events, 2*time.Second, is(EventOpen, h.pid))
			assert.Equal(t, 1, ev.NSPID, "the first process of a pid namespace is its pid 1")
			assert.Equal(t, ns, ev.PIDNamespace)

			p, ok := tr.FindInNamespace(ns, 1, h.startTime)
			require.True(t, ok, "found by its in-namespace identity")
			want := h.want(t, cg, cgID, dev)
			want.NSPID, want.PIDNamespace = 1, ns
			assert.Equal(t, want, p)
			for _, miss := range []struct {
				ns    uint64
				nspid int
				start uint64
			}{{ns, 1, h.startTime + 1}, {ns, 2, h.startTime}, {ns + 1, 1, h.startTime}, {0, 1, h.startTime}, {ns, 1, 0}} {
				_, ok := tr.FindInNamespace(miss.ns, miss.nspid, miss.start)
				assert.False(t, ok, "%+v", miss)
			}
			assert.False(t, tr.SawExit(ns, 1, h.startTime), "alive")

			require.NoError(t, h.cmd.Process.Kill())
			_ = h.cmd.Wait()
			exit, _ := waitEvent(t, events, 2*time.Second, is(EventExit, h.pid))
			assert.Equal(t, 1, exit.NSPID, "an exit carries the process's identity too")
			assert.Equal(t, ns, exit.PIDNamespace)
			assert.True(t, tr.SawExit(ns, 1, h.startTime), "its exit is remembered")
			assert.False(t, tr.SawExit(ns, 1, h.startTime+1), "another process's is not")
			_, ok = tr.FindInNamespace(ns, 1, h.startTime)
			assert.False(t, ok, "an exited process is not found")
		})
	}
}

// SawExit remembers the last maxExits exits, forgetting the oldest first.
func TestSawExitBounded(t *testing.T) {
	s := newState()
	exit := func(pid int) {
		s.mu.Lock()
		s.putLocked(&Process{PID: pid, NSPID: pid, PIDNamespace: 7, StartTime: 100})
		s.exitedLocked(pid)
		s.mu.Unlock()
	}
	for pid := 1; pid <= maxExits+10; pid++ {
		exit(pid)
	}
	for pid := 1; pid <= 10; pid++ {
		assert.False(t, s.sawExit(7, pid, 100), "pid %d evicted", pid)
	}
	for pid := 11; pid <= maxExits+10; pid++ {
		require.True(t, s.sawExit(7, pid, 100), "pid %d remembered", pid)
	}
	assert.Len(t, s.exits, maxExits)
	assert.Empty(t, s.procs)
	assert.Empty(t, s.byNS)
}
