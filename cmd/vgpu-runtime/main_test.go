package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestRunChildStatus(t *testing.T) {
	code, err := runChild("/bin/sh", []string{"sh", "-c", "exit 3"}, os.Environ())
	require.NoError(t, err)
	require.Equal(t, 3, code)
	code, err = runChild("/bin/sh", []string{"sh", "-c", "kill -KILL $$"}, os.Environ())
	require.NoError(t, err)
	require.Equal(t, 128+9, code, "killed by a signal: 128+signal, as a shell reports it")
	_, err = runChild("/nonexistent", []string{"x"}, nil)
	require.Error(t, err)
}

// runc create --preserve-fds hands inherited descriptors to the container: the
// child must get every descriptor we inherited without close-on-exec, at its
// own number, and none of ours.
func TestRunChildPassesInheritedFDs(t *testing.T) {
	dir := t.TempDir()
	// An inherited descriptor (no O_CLOEXEC), as a caller of runc would pass it.
	fd, err := unix.Open(filepath.Join(dir, "in"), unix.O_CREAT|unix.O_RDWR, 0o644)
	require.NoError(t, err)
	defer unix.Close(fd)
	// One of our own: close-on-exec, must not be passed.
	own, err := os.Create(filepath.Join(dir, "own"))
	require.NoError(t, err)
	defer own.Close()

	files := inheritedFiles()
	require.Greater(t, len(files), fd-3)
	require.NotNil(t, files[fd-3], "fd %d is passed at its own number", fd)
	if int(own.Fd())-3 < len(files) {
		require.Nil(t, files[own.Fd()-3], "a close-on-exec descriptor is not passed")
	}

	out := filepath.Join(dir, "out")
	script := "ls /proc/self/fd > " + out + "; [ -e /proc/self/fd/" + strconv.Itoa(fd) + " ]"
	code, err := runChild("/bin/sh", []string{"sh", "-c", script}, os.Environ())
	require.NoError(t, err)
	require.Equal(t, 0, code, "the child has fd %d", fd)
}
