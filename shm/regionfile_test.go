package shm

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Both region files are fully allocated when created: no page of them waits
// for space that a full filesystem could refuse (SIGBUS in whoever maps it).
func TestCreateAllocatesEveryByte(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, CreateSlice(dir, testSpec()))
	for _, name := range []string{BudgetFile, UsageFile} {
		var st unix.Stat_t
		require.NoError(t, unix.Stat(filepath.Join(dir, name), &st))
		require.GreaterOrEqual(t, st.Blocks*512, st.Size, "%s has holes: %d blocks for %d bytes", name, st.Blocks, st.Size)
	}
	// The content is what it was before: a valid, empty pair.
	sl, err := OpenSlice(dir)
	require.NoError(t, err)
	defer sl.Close()
	require.Empty(t, sl.Usage.Slots())
}

// CreateOptions gives the usage file to one user, with its mode; the budget
// stays root's 0644.
func TestCreateUsageOwner(t *testing.T) {
	dir := t.TempDir()
	opts := CreateOptions{UsageOwner: &FileOwner{UID: 4321, GID: 8765}, UsageMode: 0o600}
	require.NoError(t, CreateSliceWith(dir, testSpec(), opts))
	fi, err := os.Stat(filepath.Join(dir, UsageFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	st := fi.Sys().(*syscall.Stat_t)
	require.Equal(t, [2]uint32{4321, 8765}, [2]uint32{st.Uid, st.Gid})
	fi, err = os.Stat(filepath.Join(dir, BudgetFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	require.Equal(t, uint32(os.Getuid()), fi.Sys().(*syscall.Stat_t).Uid)
}

// CheckFile sees every change a tenant can make to its usage file, TrimFile
// undoes a growth, and the guarded readers survive a shrink.
func TestCheckFile(t *testing.T) {
	open := func(t *testing.T) (*UsageRegion, string) {
		dir := t.TempDir()
		require.NoError(t, CreateSlice(dir, testSpec()))
		u, err := OpenUsage(filepath.Join(dir, UsageFile))
		require.NoError(t, err)
		t.Cleanup(func() { u.Close() })
		c, err := u.CheckFile()
		require.NoError(t, err)
		require.False(t, c.Changed(), "fresh file: %s", c)
		require.Equal(t, "unchanged", c.String())
		return u, u.Path()
	}

	t.Run("grown", func(t *testing.T) {
		u, path := open(t)
		size := int64(len(u.data))
		require.NoError(t, os.Truncate(path, size+1<<20))
		c, err := u.CheckFile()
		require.NoError(t, err)
		require.True(t, c.Changed())
		require.True(t, c.Grown())
		require.Contains(t, c.String(), "grown")
		require.NoError(t, u.TrimFile())
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, size, fi.Size(), "cut back to its size")
		c, err = u.CheckFile()
		require.NoError(t, err)
		require.False(t, c.Changed(), "%s", c)
	})
	t.Run("shrunk", func(t *testing.T) {
		u, path := open(t)
		require.NoError(t, os.Truncate(path, 0))
		c, err := u.CheckFile()
		require.NoError(t, err)
		require.True(t, c.Changed())
		require.False(t, c.Grown())
		require.Contains(t, c.String(), "shrunk")
		require.NoError(t, u.TrimFile(), "nothing to trim")
		// Readers of the mapping do not crash: Guard and Reclaim turn the
		// fault into an error.
		require.ErrorIs(t, u.Guard(func() { _ = u.Throttle(0) }), ErrTruncated)
		require.ErrorIs(t, u.Guard(func() { _ = u.Raw().Dev[0].UsedBytes }), ErrTruncated)
		_, err = u.Reclaim(func(SlotIdentity) bool { return false })
		require.ErrorIs(t, err, ErrTruncated)
	})
	t.Run("unlinked", func(t *testing.T) {
		u, path := open(t)
		require.NoError(t, os.Remove(path))
		c, err := u.CheckFile()
		require.NoError(t, err)
		require.True(t, c.Changed())
		require.Equal(t, "unlinked or replaced", c.String())
	})
	t.Run("replaced", func(t *testing.T) {
		u, path := open(t)
		other := t.TempDir()
		require.NoError(t, CreateSlice(other, testSpec()))
		require.NoError(t, os.Rename(filepath.Join(other, UsageFile), path))
		c, err := u.CheckFile()
		require.NoError(t, err)
		require.True(t, c.Changed())
		require.Equal(t, uint64(0), c.Links)
	})
	t.Run("holes", func(t *testing.T) {
		u, path := open(t)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		require.NoError(t, err)
		defer f.Close()
		err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, int64(len(u.data)))
		if err != nil {
			t.Skipf("cannot punch holes here: %v", err)
		}
		c, err := u.CheckFile()
		require.NoError(t, err)
		require.True(t, c.Changed())
		require.True(t, c.Holes)
		require.Contains(t, c.String(), "holes")
	})
	t.Run("closed", func(t *testing.T) {
		u, _ := open(t)
		require.NoError(t, u.Close())
		_, err := u.CheckFile()
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorIs(t, u.TrimFile(), ErrClosed)
	})
	t.Run("budget", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, CreateSlice(dir, testSpec()))
		b, err := OpenBudget(filepath.Join(dir, BudgetFile), false)
		require.NoError(t, err)
		defer b.Close()
		require.NoError(t, os.Truncate(b.Path(), int64(BudgetSize)*2))
		c, err := b.CheckFile()
		require.NoError(t, err)
		require.True(t, c.Grown())
	})
}
