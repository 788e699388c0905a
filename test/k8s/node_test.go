package k8s

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/internal/testimage"
	"github.com/vgpu-project/vgpu/test/k8s/cluster"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

const (
	GiB = uint64(1) << 30
	MiB = uint64(1) << 20
	// ctxMem is the simulated driver's per-context footprint, which vgpud
	// charges too (its default context_overhead).
	ctxMem = 256 * MiB
	// testImage holds the C test programs and busybox (sh, sleep).
	testImage = "docker.io/library/vgpu-k8s-test:latest"
	driver    = "vgpu.io"
)

// gpuNode is the simulated GPU node around the cluster: the simulated GPUs
// (state file and CDI spec), vgpud and the DRA plugin, as host processes.
type gpuNode struct {
	t         *testing.T
	root      string
	dir       string
	cdiDir    string
	sim       string
	vgpudSock string
	client    *api.Client
	vgpud     *cluster.Proc
	dra       *cluster.Proc
}

// repoRoot returns the repository root once `make build` made what this test runs.
func repoRoot(t *testing.T) string {
	t.Helper()
	return testbuild.Root(t, "bin/vgpud", "bin/vgpu-sim", "bin/vgpu-dra", "build/libvgpu.so",
		"build/simgpu/libcuda.so.1", "build/simgpu/libnvidia-ml.so.1", "build/test/alloc", "build/test/query")
}

// requireHost skips unless root (the cluster runs containers); it fails when
// a host program the cluster needs is missing (`make deps` installs them).
func requireHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the Kubernetes test starts a cluster and runs containers: it needs root (`make test` runs as root)")
	}
	for _, f := range []string{"/usr/sbin/runc", "/usr/lib/cni/loopback", "/bin/busybox", "/usr/bin/gcc"} {
		_, err := os.Stat(f)
		require.NoError(t, err, "`make deps` installs runc, containernetworking-plugins, busybox-static and gcc")
	}
}

// k8sBinaries runs test/k8s/build.sh (a no-op once built) and returns the
// directory of the cluster's binaries.
func k8sBinaries(t *testing.T, root string) string {
	t.Helper()
	t0 := time.Now()
	cmd := exec.Command("sh", filepath.Join(root, "test/k8s/build.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "test/k8s/build.sh: %s", stderr.String())
	if s := stderr.String(); s != "" {
		t.Logf("test/k8s/build.sh (%s):\n%s", time.Since(t0).Round(time.Second), s)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// images builds the pause image (pause.c, static) and the test image into dir.
func images(t *testing.T, root, dir string) []string {
	t.Helper()
	pause := filepath.Join(dir, "pause")
	out, err := exec.Command("gcc", "-static", "-O2", "-Wall", "-Werror", "-o", pause,
		filepath.Join(root, "test/k8s/testdata/pause.c")).CombinedOutput()
	require.NoError(t, err, "gcc -static pause.c: %s", out)
	pauseImg := testimage.Build(t, filepath.Join(dir, "pause.tar"), testimage.Image{Ref: cluster.PauseImage,
		Programs: []string{pause}, Entrypoint: []string{"/bin/pause"}})
	testImg := testimage.Build(t, filepath.Join(dir, "test.tar"), testimage.Image{Ref: testImage,
		Programs: []string{filepath.Join(root, "build/test/alloc"), filepath.Join(root, "build/test/query"), "/bin/busybox"},
		LibsOf:   []string{filepath.Join(root, "build/libvgpu.so")},
		Links:    map[string]string{"/bin/sh": "busybox", "/bin/sleep": "busybox"}})
	return []string{pauseImg, testImg}
}

// newGPUNode makes the simulated node (one 16 GiB GPU) and its CDI spec in
// cdiDir, the directory containerd reads.
func newGPUNode(t *testing.T, root, cdiDir string) *gpuNode {
	t.Helper()
	dir := t.TempDir()
	n := &gpuNode{t: t, root: root, dir: dir, cdiDir: cdiDir, sim: filepath.Join(dir, "node"),
		vgpudSock: filepath.Join(dir, "vgpud.sock")}
	require.NoError(t, os.MkdirAll(cdiDir, 0o755))
	require.NoError(t, simgpu.Init(n.sim, simgpu.Config{Devices: 1, Memory: 16 * GiB, SMs: 8}))
	out, err := exec.Command(filepath.Join(root, "bin/vgpu-sim"), "cdi-spec", "--state", n.sim,
		"--lib-dir", filepath.Join(root, "build/simgpu"), "--cdi-dir", cdiDir).CombinedOutput()
	require.NoError(t, err, "vgpu-sim cdi-spec: %s", out)
	n.client = api.NewClient(n.vgpudSock)
	t.Cleanup(n.client.Close)
	return n
}

// startVgpud starts vgpud (its state dir survives restarts) publishing slices
// as CDI devices in the node's CDI dir, and waits until it answers.
func (n *gpuNode) startVgpud() {
	t := n.t
	cfgPath := filepath.Join(n.dir, "vgpud.json")
	vcfg := fmt.Sprintf(`{"cdi_dir": %q, "cdi_spec_dirs": [%q], "libvgpu": %q}`,
		n.cdiDir, n.cdiDir, filepath.Join(n.root, "build/libvgpu.so"))
	require.NoError(t, os.WriteFile(cfgPath, []byte(vcfg), 0o644))
	env := []string{"LD_LIBRARY_PATH=" + filepath.Join(n.root, "build/simgpu"), "VGPU_SIM_STATE=" + n.sim}
	p, err := cluster.StartProc(n.dir, "vgpud", env, filepath.Join(n.root, "bin/vgpud"),
		"--config", cfgPath, "--state-dir", filepath.Join(n.dir, "vgpud-state"), "--socket", n.vgpudSock,
		"--metrics-addr", "", "--enforcer-mode", "report", "--log-format", "console")
	require.NoError(t, err)
	n.vgpud = p
	err = cluster.WaitFor("vgpud answering", cluster.CmdTimeout, p, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := n.client.Health(ctx)
		return err
	})
	if err != nil {
		t.Fatalf("%v\n--- vgpud log ---\n%s", err, p.Tail(8<<10))
	}
}

// stopVgpud stops vgpud cleanly (SIGTERM; its slices stay on disk).
func (n *gpuNode) stopVgpud() {
	if n.vgpud != nil && !n.vgpud.Stop(20*time.Second) {
		n.t.Errorf("vgpud did not stop within 20s of SIGTERM")
	}
	n.vgpud = nil
}

// startDRA starts the DRA kubelet plugin (bin/vgpu-dra) against the cluster,
// and waits until the kubelet registered it and it published the node's
// ResourceSlice.
func (n *gpuNode) startDRA(c *cluster.Cluster) {
	t := n.t
	for _, d := range []string{"plugins_registry", filepath.Join("plugins", driver)} {
		// The kubelet plugin helper does not create the driver's socket dir.
		require.NoError(t, os.MkdirAll(filepath.Join(c.KubeletRoot, d), 0o750))
	}
	p, err := cluster.StartProc(n.dir, "vgpu-dra", nil, filepath.Join(n.root, "bin/vgpu-dra"),
		"--node-name", cluster.NodeName, "--kubeconfig", c.Admin, "--vgpud-socket", n.vgpudSock,
		"--kubelet-registrar-dir", filepath.Join(c.KubeletRoot, "plugins_registry"),
		"--kubelet-plugins-dir", filepath.Join(c.KubeletRoot, "plugins"))
	require.NoError(t, err)
	n.dra = p
	err = cluster.WaitFor("the vgpu.io ResourceSlice of node "+cluster.NodeName, 2*time.Minute, p, func() error {
		_, err := nodeSlice(c)
		return err
	})
	if err != nil {
		t.Fatalf("%v\n--- vgpu-dra log ---\n%s", err, p.Tail(8<<10))
	}
}

// stopDRA stops the plugin (SIGTERM).
func (n *gpuNode) stopDRA() {
	if n.dra != nil && !n.dra.Stop(20*time.Second) {
		n.t.Errorf("vgpu-dra did not stop within 20s of SIGTERM")
	}
	n.dra = nil
}

// dumpLogs logs vgpud's and the plugin's log tails (on failure).
func (n *gpuNode) dumpLogs() {
	for _, name := range []string{"vgpud", "vgpu-dra"} {
		data, err := os.ReadFile(filepath.Join(n.dir, name+".log"))
		if err != nil {
			continue
		}
		if len(data) > 12<<10 {
			data = data[len(data)-12<<10:]
		}
		n.t.Logf("--- %s log (tail) ---\n%s", name, data)
	}
}

// slices lists vgpud's slices.
func (n *gpuNode) slices() []api.Slice {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := n.client.Slices(ctx)
	require.NoError(n.t, err)
	return s
}
