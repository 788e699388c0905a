package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Paths are the built artifacts the benchmark runs.
type Paths struct {
	Root      string
	Prog      string // build/test/bench_overhead
	LibVGPU   string // build/libvgpu.so
	SimLibDir string // build/simgpu (holds libcuda.so.1)
}

func pathsAt(root string) Paths {
	return Paths{
		Root:      root,
		Prog:      filepath.Join(root, "build", "test", "bench_overhead"),
		LibVGPU:   filepath.Join(root, "build", "libvgpu.so"),
		SimLibDir: filepath.Join(root, "build", "simgpu"),
	}
}

// FindRoot returns the repository root: the first of the working directory, its
// parents, and the parent of the running executable's directory (bin/..) that holds
// build/test/bench_overhead.
func FindRoot() (string, error) {
	return findRootWhere(func(d string) bool { return fileExists(pathsAt(d).Prog) },
		"no build/test/bench_overhead under %s: run `make build` first or pass --root")
}

// findRootWhere returns the first of the working directory, its parents and
// bin/.. of the running executable for which ok holds; the error (format with
// one %s: the places tried) says where it looked.
func findRootWhere(ok func(dir string) bool, notFound string) (string, error) {
	var tried []string
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			tried = append(tried, d)
			if ok(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(filepath.Dir(exe))
		tried = append(tried, d)
		if ok(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf(notFound, strings.Join(tried, ", "))
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// check verifies that every artifact the driver needs is present.
func (p Paths) check(driver string) error {
	need := []string{p.Prog, p.LibVGPU}
	if driver == DriverSim {
		need = append(need, filepath.Join(p.SimLibDir, "libcuda.so.1"))
	}
	for _, f := range need {
		if !fileExists(f) {
			return fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	return nil
}
