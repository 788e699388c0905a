// Package e2e runs vgpu end to end in real containers: containerd and runc from
// Debian (`make deps` installs them), started by the test itself with its own
// root, state and socket under a temp dir (a system containerd, if any, is not
// touched); vgpud on a simulated GPU node; a small OCI image the test builds
// from the test programs in build/test (an OCI layout tar written from Go and
// imported with `ctr images import`: no registry, no docker); and containers
// run by `ctr run --runc-binary bin/vgpu-runtime`.
//
// It needs root (mounts, namespaces, cgroups) and `make build`; `make test`
// runs as root. As another user the tests skip, saying why.
package e2e
