package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeProc writes <root>/<pid>/stat with the given parent and a command name
// that contains the characters that trip naive parsers.
func fakeProc(t *testing.T, root string, pid, ppid int) {
	t.Helper()
	writeFile(t, filepath.Join(root, fmt.Sprint(pid), "stat"),
		fmt.Sprintf("%d (we ird) (name)) S %d %d 0 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0\n", pid, ppid, pid))
}

// TestAncestry: a process belongs to the slice of its nearest owning
// ancestor; answers are cached for the tick and forgotten by reset.
func TestAncestry(t *testing.T) {
	root := t.TempDir()
	// 1 -> 100 (owner of A) -> 200 -> 300 (owner of B) -> 400
	//   -> 500 -> 600 (nobody's)
	fakeProc(t, root, 100, 1)
	fakeProc(t, root, 200, 100)
	fakeProc(t, root, 300, 200)
	fakeProc(t, root, 400, 300)
	fakeProc(t, root, 500, 1)
	fakeProc(t, root, 600, 500)

	a := newAncestry(root)
	a.reset()
	a.setOwner(100, "A")
	a.setOwner(300, "B")
	for pid, want := range map[int]string{100: "A", 200: "A", 300: "B", 400: "B", 500: "", 600: "", 999: ""} {
		got, ok := a.SliceOf(pid)
		require.Equal(t, want, got, "pid %d", pid)
		require.Equal(t, want != "", ok, "pid %d", pid)
	}

	// Cached for the tick: a process that changed parent is seen next tick.
	fakeProc(t, root, 600, 200)
	got, _ := a.SliceOf(600)
	require.Equal(t, "", got, "cached within the tick")
	a.newTick()
	got, _ = a.SliceOf(600)
	require.Equal(t, "A", got, "next tick")
	a.newTick()
	got, _ = a.SliceOf(400)
	require.Equal(t, "B", got, "owners survive a new tick")

	// No owners at all: nothing is read.
	a.reset()
	_, ok := a.SliceOf(400)
	require.False(t, ok)

	// A cycle in what /proc says ends the walk.
	fakeProc(t, root, 700, 800)
	fakeProc(t, root, 800, 700)
	a.setOwner(100, "A")
	_, ok = a.SliceOf(700)
	require.False(t, ok)
}

// TestAncestryRealProc: a child of this process belongs to the slice this
// process owns, read from the real /proc.
func TestAncestryRealProc(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	a := newAncestry("/proc")
	a.setOwner(os.Getpid(), "mine")
	got, ok := a.SliceOf(cmd.Process.Pid)
	require.True(t, ok)
	require.Equal(t, "mine", got)
	_, ok = a.SliceOf(1)
	require.False(t, ok)
}

// TestOwnerPoller: dead owners are found through their pidfds (and the /proc
// fallback), live ones are not, nil watches are skipped.
func TestOwnerPoller(t *testing.T) {
	start := func() (*exec.Cmd, *ownerWatch) {
		cmd := exec.Command("sleep", "30")
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		o := ownerFor(t, cmd.Process.Pid)
		w, err := watchOwner(o.PID, o.StartTime)
		require.NoError(t, err)
		t.Cleanup(w.close)
		return cmd, w
	}
	a, wa := start()
	_, wb := start()
	c, wc := start()
	// wc without its pidfd: the /proc fallback.
	wc.close()

	var p ownerPoller
	watches := []*ownerWatch{wa, nil, wb, wc}
	require.Empty(t, p.dead(watches, nil))

	require.NoError(t, a.Process.Kill())
	a.Wait()
	require.NoError(t, c.Process.Kill())
	c.Wait()
	require.ElementsMatch(t, []int{0, 3}, p.dead(watches, nil))

	// Watching a pid that is gone fails.
	_, err := watchOwner(a.Process.Pid, wa.start)
	require.ErrorIs(t, err, errOwnerGone)
}
