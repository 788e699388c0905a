package testproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Sleeper starts a child that sleeps until the test kills it or ends: a live
// process to judge, attribute or kill. With a name, it runs as a copy of sleep
// under that name, so /proc/<pid>/stat shows it (names with spaces and
// parentheses test the stat parsers).
func Sleeper(t testing.TB, name string) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)
	if name != "" {
		data, err := os.ReadFile(sleep)
		require.NoError(t, err)
		sleep = filepath.Join(t.TempDir(), name)
		require.NoError(t, os.WriteFile(sleep, data, 0o755))
	}
	cmd := exec.Command(sleep, "600")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // it may be dead already: that is what some tests do
		_ = cmd.Wait()
	})
	return cmd
}
