package testimage

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The layout of a built image: layout file, index and three blobs, and the
// layer holds the program, its libraries and the links.
func TestImageLayout(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	path := Build(t, filepath.Join(t.TempDir(), "image.tar"), Image{Ref: "docker.io/library/x:latest",
		Programs: []string{self}, Links: map[string]string{"/bin/sh": "busybox"}, Entrypoint: []string{"/bin/x"}})
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		names[h.Name] = true
	}
	require.True(t, names["oci-layout"] && names["index.json"], "%v", names)
	require.Len(t, names, 5, "layout, index and three blobs")
}

// A static program needs no library: ldd's refusal is no error.
func TestStaticProgramHasNoLibs(t *testing.T) {
	require.FileExists(t, "/bin/busybox", "a static program: make deps installs busybox-static")
	require.Empty(t, sharedLibs(t, "/bin/busybox"))
}
