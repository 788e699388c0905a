package bench

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// builtRoot is the repository root (the tests run in bench/), whose files
// (relative to it) the test needs built: it fails naming the first missing.
func builtRoot(t *testing.T, files ...string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	for _, f := range files {
		require.FileExists(t, filepath.Join(root, f), "the test needs `make build`")
	}
	return root
}
