// Package integration holds the end-to-end tests of libvgpu: C programs
// (test/cprog, built by `make build` into build/test/) run on the simulated GPU
// node with libvgpu preloaded, while the tests watch the slice's usage region
// (package enforcer) and the simulated driver's own per-process figures (package
// test/simgpu) and check that the two agree and that the slice is never exceeded.
//
// The package has no non-test code; this file only documents it.
package integration
