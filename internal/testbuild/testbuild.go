// Package testbuild finds the repository and the artifacts `make build`
// produces, for the tests of every package that run built programs (libvgpu,
// the simulated driver, the C test programs, the Go binaries).
package testbuild

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// BuildDirEnv names the environment variable that points the tests at another
// build directory than build/, with the same layout (libvgpu.so, simgpu/,
// test/): relative to the repository root, or absolute. `make sanitize` sets it
// to build/san, where everything C is built with ASan and UBSan. Libraries the
// test process loads into itself (go-nvml's dlopen of libnvidia-ml) stay on
// build/: an ASan-instrumented library cannot be loaded into a Go binary that
// was not linked with the sanitizer runtime.
const BuildDirEnv = "VGPU_BUILD_DIR"

// Dir returns the build directory the tests run C artifacts from:
// $VGPU_BUILD_DIR, default "build".
func Dir() string {
	if d := os.Getenv(BuildDirEnv); d != "" {
		return filepath.Clean(d)
	}
	return "build"
}

// Custom reports whether VGPU_BUILD_DIR names another directory than build/:
// whoever set it built it, so tests must not run make for it.
func Custom() bool { return Dir() != "build" }

// Path returns an artifact of the build directory under root, e.g.
// Path(root, "test", "alloc") is root/build/test/alloc (or under
// $VGPU_BUILD_DIR).
func Path(root string, elem ...string) string {
	d := Dir()
	if !filepath.IsAbs(d) {
		d = filepath.Join(root, d)
	}
	return filepath.Join(append([]string{d}, elem...)...)
}

// artifact resolves a root-relative artifact path; "build/..." goes through Dir.
func artifact(root, a string) string {
	if rest, ok := strings.CutPrefix(a, "build/"); ok {
		return Path(root, rest)
	}
	return filepath.Join(root, a)
}

// Root returns the repository root, found from this file's location so tests
// may run from any working directory, and fails t unless every artifact (a
// path relative to the root; "build/..." is looked up in Dir) exists, telling
// to run `make build`.
func Root(t testing.TB, artifacts ...string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testbuild: cannot locate the repository from the test binary")
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	for _, a := range artifacts {
		if _, err := os.Stat(artifact(root, a)); err != nil {
			t.Fatalf("%s is missing: run `make build` in %s first (%v)", artifact(root, a), root, err)
		}
	}
	return root
}

// NoContainerSlice fails t when dir (the container slice directory,
// shm.ContainerSliceDir) exists on this machine: libvgpu would then use it
// instead of the VGPU_SLICE_DIR the tests set.
func NoContainerSlice(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists on this machine: libvgpu would use it instead of VGPU_SLICE_DIR; "+
			"remove it to run these tests", dir)
	}
}
