package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteReplacesWithPerm(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for _, mode := range []Mode{Volatile, Durable} {
		require.NoError(t, os.WriteFile(p, []byte("old"), 0o600))
		require.NoError(t, Write(p, []byte("new"), 0o640, mode))
		got, err := os.ReadFile(p)
		require.NoError(t, err)
		require.Equal(t, "new", string(got))
		st, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o640), st.Mode().Perm())
		require.Equal(t, []string{"f.json"}, entries(t, dir), "no temporary file left")
	}
}

func TestNoReplace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	require.NoError(t, Write(p, []byte("one"), 0o666, Durable|NoReplace))
	err := Write(p, []byte("two"), 0o666, NoReplace)
	require.ErrorIs(t, err, os.ErrExist)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "one", string(got))
	require.Equal(t, []string{"state"}, entries(t, dir))
}

func TestWriteFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644, Durable)
	require.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
	// A directory in the way: rename fails, nothing is left behind.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "d", "x"), nil, 0o644))
	require.Error(t, Write(filepath.Join(dir, "d"), []byte("x"), 0o644, Volatile))
	require.Equal(t, []string{"d"}, entries(t, dir))
}
