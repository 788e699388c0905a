// Package testbuild finds the repository and the artifacts `make build`
// produces, for the tests of every package that run built programs (libvgpu,
// the simulated driver, the C test programs, the Go binaries).
package testbuild

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Root returns the repository root, found from this file's location so tests
// may run from any working directory, and fails t unless every artifact (a
// path relative to the root) exists, telling to run `make build`.
func Root(t testing.TB, artifacts ...string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testbuild: cannot locate the repository from the test binary")
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	for _, a := range artifacts {
		if _, err := os.Stat(filepath.Join(root, a)); err != nil {
			t.Fatalf("%s is missing: run `make build` in %s first (%v)", a, root, err)
		}
	}
	return root
}

// NoContainerSlice fails t when dir (the container slice directory,
// enforcer.ContainerSliceDir) exists on this machine: libvgpu would then use it
// instead of the VGPU_SLICE_DIR the tests set.
func NoContainerSlice(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists on this machine: libvgpu would use it instead of VGPU_SLICE_DIR; "+
			"remove it to run these tests", dir)
	}
}
