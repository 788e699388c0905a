package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/internal/testdev"
	"github.com/vgpu-project/vgpu/internal/testimage"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

const (
	MiB = uint64(1) << 20
	GiB = uint64(1) << 30

	namespace = "vgpu-e2e"
	imageRef  = "docker.io/library/vgpu-e2e:latest"
	// ctxMem is the simulated driver's per-context footprint, which vgpud
	// charges too (its default context_overhead), so a 1 GiB slice holds
	// 1 GiB - 256 MiB of allocations.
	ctxMem = 256 * MiB
	// cmdTimeout bounds every ctr command and every wait: generous for a loaded
	// CI machine, finite so a hang fails the test instead of the whole run.
	cmdTimeout = 90 * time.Second
)

// repoRoot returns the repository root once `make build` made what these tests run.
func repoRoot(t *testing.T) string {
	t.Helper()
	return testbuild.Root(t, "bin/vgpud", "bin/vgpu-runtime", "build/libvgpu.so", "build/simgpu/libcuda.so.1",
		"build/simgpu/libnvidia-ml.so.1", "build/test/alloc", "build/test/query", "build/test/dl_tamper",
		"build/test/dl_forge", "build/test/sim_hold", "build/test/throttle_load", "build/test/dl_outlive", "build/test/torchlike")
}

// requireHost fails unless this machine can run the end-to-end tests: root,
// and containerd, ctr, runc and the runc v2 shim installed (`make deps`).
func requireHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the end-to-end tests start containerd and run containers: they need root (`make test` runs as root)")
	}
	for _, b := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2", "ldd"} {
		_, err := exec.LookPath(b)
		require.NoError(t, err, "%s is needed: `make deps` installs Debian's containerd and runc", b)
	}
}

// node is one test's world: a simulated GPU node, vgpud on it, a private
// containerd and the test image imported into it.
type node struct {
	t         *testing.T
	root      string
	dir       string
	sock      string // containerd
	state     string // containerd's state dir
	vgpudSock string
	sim       string // simulated node state file
	runtime   string // bin/vgpu-runtime
	client    *api.Client
	opts      nodeOpts
	vgpud     *exec.Cmd
	vgpudLog  *os.File
}

type nodeOpts struct {
	devices int
	memory  uint64
	// vgpudArgs are added to vgpud's command line; with events, vgpud
	// follows this node's containerd (--containerd-socket).
	vgpudArgs []string
	events    bool
	// maxBacklog is the simulated device queue's depth (0: the default).
	maxBacklog time.Duration
	// cdiDir is where vgpud publishes the slices' CDI specs (default: the
	// node's CDI dir, n.cdiDir()).
	cdiDir string
	// trackDevice gives the node a stand-in character device node (the
	// simulated driver opens it per context, containers get it as a device)
	// and has vgpud's process tracker follow its major.
	trackDevice bool
}

func newNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	requireHost(t)
	root := repoRoot(t)
	n := &node{t: t, root: root, dir: t.TempDir(), runtime: filepath.Join(root, "bin", "vgpu-runtime"), opts: o}
	n.sock = filepath.Join(n.dir, "containerd.sock")
	n.state = filepath.Join(n.dir, "state")
	n.vgpudSock = filepath.Join(n.dir, "vgpud.sock")
	n.sim = filepath.Join(n.dir, "node")
	t.Cleanup(n.unmountLeftovers) // runs last: after containerd is gone

	cfg := simgpu.Config{Devices: o.devices, Memory: o.memory, SMs: 8, MaxBacklog: o.maxBacklog}
	if o.trackDevice {
		_, major, _, err := testdev.StandIn(n.dir, "vgpusim0")
		require.NoError(t, err)
		require.Equal(t, 1, o.devices, "one stand-in device node")
		cfg.DeviceNodes = filepath.Join(n.dir, "vgpusim%d")
		n.opts.vgpudArgs = append(n.opts.vgpudArgs, "--tracker-majors", strconv.FormatUint(uint64(major), 10))
	}
	require.NoError(t, simgpu.Init(n.sim, cfg))
	n.startContainerd()
	n.client = api.NewClient(n.vgpudSock)
	t.Cleanup(n.client.Close)
	n.startVgpud()
	t.Cleanup(n.stopVgpud)
	img := buildTestImage(t, n.dir, root)
	out, code := n.ctr("images", "import", img)
	require.Equal(t, 0, code, "ctr images import: %s", out)
	return n
}

// buildTestImage is the test image (imageRef): the test programs and what
// they and libvgpu need.
func buildTestImage(t *testing.T, dir, root string) string {
	t.Helper()
	var progs []string
	for _, p := range []string{"alloc", "query", "dl_tamper", "dl_forge", "throttle_load", "dl_outlive", "torchlike"} {
		progs = append(progs, filepath.Join(root, "build/test", p))
	}
	return testimage.Build(t, filepath.Join(dir, "image.tar"), testimage.Image{Ref: imageRef, Programs: progs,
		LibsOf: []string{filepath.Join(root, "build/libvgpu.so")}})
}

// startVgpud starts vgpud on the node (its state dir survives restarts) and
// waits until it answers.
func (n *node) startVgpud() {
	t := n.t
	logf, err := os.OpenFile(filepath.Join(n.dir, "vgpud.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	// Every slice is published as a CDI device in the node's CDI dir, its GPU
	// edits from the simulated node's spec there (cdi.go in daemon/).
	cfgPath := filepath.Join(n.dir, "vgpud.json")
	publish := n.cdiDir()
	if n.opts.cdiDir != "" {
		publish = n.opts.cdiDir
	}
	vcfg := fmt.Sprintf(`{"cdi_dir": %q, "cdi_spec_dirs": [%q], "libvgpu": %q}`,
		publish, n.cdiDir(), filepath.Join(n.root, "build/libvgpu.so"))
	require.NoError(t, os.WriteFile(cfgPath, []byte(vcfg), 0o644))
	args := []string{"--config", cfgPath, "--state-dir", filepath.Join(n.dir, "vgpud-state"), "--socket", n.vgpudSock,
		"--metrics-addr", "", "--enforcer-mode", "report", "--log-format", "console"}
	if n.opts.events {
		args = append(args, "--containerd-socket", n.sock)
	}
	cmd := exec.Command(filepath.Join(n.root, "bin/vgpud"), append(args, n.opts.vgpudArgs...)...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(n.root, "build/simgpu"), "VGPU_SIM_STATE="+n.sim)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	n.vgpud, n.vgpudLog = cmd, logf
	deadline := time.Now().Add(cmdTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.client.Health(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			dumpFile(t, logf.Name())
			t.Fatalf("vgpud did not answer on %s: %v", n.vgpudSock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopVgpud stops vgpud (SIGTERM: a clean stop; the slices stay on disk).
func (n *node) stopVgpud() {
	if n.vgpud == nil {
		return
	}
	_ = n.vgpud.Process.Signal(syscall.SIGTERM)
	waitOrKill(n.vgpud, 10*time.Second)
	n.vgpudLog.Close()
	n.vgpud = nil
	if n.t.Failed() {
		dumpFile(n.t, n.vgpudLog.Name())
	}
}

// waitLog waits until vgpud's log has a line containing s.
func (n *node) waitLog(s string) {
	n.t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for {
		data, _ := os.ReadFile(filepath.Join(n.dir, "vgpud.log"))
		if bytes.Contains(data, []byte(s)) {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("vgpud never logged %q:\n%s", s, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cdiDir is the node's CDI spec directory (its /etc/cdi and /var/run/cdi):
// the simulated GPUs' spec, and the slices vgpud publishes.
func (n *node) cdiDir() string { return filepath.Join(n.dir, "cdi") }

func (n *node) startContainerd() {
	t := n.t
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(n.dir, "root"), n.state, n.sock, n.sock+".ttrpc", filepath.Join(n.dir, "opt"))
	cfgPath := filepath.Join(n.dir, "containerd.toml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))

	// The runtime's config: this node's vgpud, libvgpu from build/, and the
	// node's GPUs described by a CDI spec, as nvidia-ctk describes a real
	// node's (vgpu-sim cdi-spec): the runtime applies it for the slice's
	// devices. containerd's environment reaches vgpu-runtime through the shim.
	out, err := exec.Command(filepath.Join(n.root, "bin/vgpu-sim"), "cdi-spec", "--state", n.sim,
		"--lib-dir", filepath.Join(n.root, "build/simgpu"), "--cdi-dir", n.cdiDir()).CombinedOutput()
	require.NoError(t, err, "vgpu-sim cdi-spec: %s", out)
	rcfg := fmt.Sprintf(`{"socket": %q, "libvgpu": %q, "state_dir": %q, "cdi_spec_dirs": [%q]}`,
		n.vgpudSock, filepath.Join(n.root, "build/libvgpu.so"), filepath.Join(n.dir, "runtime-state"), n.cdiDir())
	rcfgPath := filepath.Join(n.dir, "runtime.json")
	require.NoError(t, os.WriteFile(rcfgPath, []byte(rcfg), 0o644))

	logf, err := os.Create(filepath.Join(n.dir, "containerd.log"))
	require.NoError(t, err)
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "VGPU_RUNTIME_CONFIG="+rcfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		waitOrKill(cmd, 15*time.Second)
		logf.Close()
		if t.Failed() {
			dumpFile(t, logf.Name())
		}
	})
	deadline := time.Now().Add(cmdTimeout)
	for {
		c, err := net.Dial("unix", n.sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			dumpFile(t, logf.Name())
			t.Fatalf("containerd did not listen on %s: %v", n.sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Registered after containerd's stop, so it runs before it.
	t.Cleanup(n.removeAllContainers)
}

func waitOrKill(cmd *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
	}
}

// dumpFile logs the interesting lines of a log file (containerd's info
// lines about loading plugins are noise).
func dumpFile(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "level=info") {
			keep = append(keep, l)
		}
	}
	out := strings.Join(keep, "\n")
	if len(out) > 16<<10 {
		out = out[len(out)-16<<10:]
	}
	t.Logf("--- %s (tail, no info lines) ---\n%s", filepath.Base(path), out)
}

// ctr runs ctr against this node's containerd; it returns the combined output
// and the exit status.
func (n *node) ctr(args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", n.sock, "-n", namespace}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("ctr %v: %v", args, err)
	}
	if ctx.Err() != nil {
		n.t.Fatalf("ctr %v: timed out after %s; output:\n%s", args, cmdTimeout, out.String())
	}
	return out.String(), code
}

// spec of one container run.
type run struct {
	id          string
	vgpu        bool // through vgpu-runtime (else plain runc)
	annotations []string
	env         []string
	detach      bool
	hostPID     bool // share the host's pid namespace (ctr --with-ns)
	args        []string
}

// result of a container run: what it printed (stdout and stderr, through
// containerd's log), what ctr said, and ctr's exit status (the container's,
// or ctr's own failure).
type result struct {
	output string
	ctr    string
	code   int
	log    string
}

// run starts a container from the test image. Without detach it waits for it
// and removes it; with detach it returns once the container is running (wait
// for its output with waitOutput).
func (n *node) run(r run) result {
	n.t.Helper()
	logPath := filepath.Join(n.dir, "out-"+r.id+".log")
	args := []string{"run", "--log-uri", "file://" + logPath}
	if r.detach {
		args = append(args, "-d")
	} else {
		args = append(args, "--rm")
	}
	if r.vgpu {
		args = append(args, "--runc-binary", n.runtime)
	}
	for _, a := range r.annotations {
		args = append(args, "--annotation", a)
	}
	for _, e := range r.env {
		args = append(args, "--env", e)
	}
	if r.hostPID {
		// This test process's namespace: the host's (pid 1 may be out of reach in a sandbox).
		args = append(args, "--with-ns", "pid:/proc/"+strconv.Itoa(os.Getpid())+"/ns/pid")
	}
	args = append(args, imageRef, r.id)
	args = append(args, r.args...)
	out, code := n.ctr(args...)
	res := result{ctr: out, code: code, log: logPath}
	if !r.detach {
		data, _ := os.ReadFile(logPath)
		res.output = string(data)
	}
	return res
}

// waitOutput waits until the detached container's output has a line starting
// with prefix, and returns that line.
func (n *node) waitOutput(res result, prefix string) string {
	n.t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for {
		data, _ := os.ReadFile(res.log)
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), prefix) {
				return sc.Text()
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("no %q line from the container within %s; output:\n%s", prefix, cmdTimeout, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills a detached container and deletes it (its task, which runs the
// poststop hooks, then the container and its snapshot).
func (n *node) stop(id string) {
	n.t.Helper()
	_, _ = n.ctr("task", "kill", "-s", "SIGKILL", id)
	deadline := time.Now().Add(cmdTimeout)
	for {
		out, code := n.ctr("task", "delete", id)
		if code == 0 || strings.Contains(out, "not found") {
			break
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("ctr task delete %s: %s", id, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, code := n.ctr("containers", "rm", id)
	require.Equal(n.t, 0, code, "ctr containers rm %s: %s", id, out)
}

// removeAllContainers is the cleanup: no container may outlive the test.
func (n *node) removeAllContainers() {
	out, _ := n.ctr("containers", "ls", "-q")
	for _, id := range strings.Fields(out) {
		_, _ = n.ctr("task", "kill", "-s", "SIGKILL", id)
		for i := 0; i < 100; i++ {
			o, code := n.ctr("task", "delete", id)
			if code == 0 || strings.Contains(o, "not found") {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		_, _ = n.ctr("containers", "rm", id)
	}
}

// unmountLeftovers detaches any mount still under the test's dir (a container
// that could not be removed), so the temp dir can go.
func (n *node) unmountLeftovers() {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], n.dir) {
			mps = append(mps, f[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		_ = unix.Unmount(mps[i], unix.MNT_DETACH)
	}
}

// slices lists vgpud's slices.
func (n *node) slices() []api.Slice {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := n.client.Slices(ctx)
	require.NoError(n.t, err)
	return s
}

// requireDeviceFree checks that vgpud has nothing allocated on device d any
// more. (The simulated driver's own figure cannot be checked after a SIGKILL:
// it reclaims a dead process only from the process's own pid namespace, and
// the container's is gone. Processes that exit normally free their memory, as
// TestContainerGetsItsSlice checks.)
func (n *node) requireDeviceFree(d int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	devs, err := n.client.Devices(ctx)
	require.NoError(n.t, err)
	require.Equal(n.t, 0, devs[d].Slices)
	require.Equal(n.t, uint64(0), devs[d].AllocatedBytes)
	require.Equal(n.t, uint64(0), devs[d].GuaranteedBytes)
}

// deviceUsed is what the simulated driver says device d holds (dead
// processes reclaimed first, as the real driver frees their memory).
func (n *node) deviceUsed(d int) uint64 {
	n.t.Helper()
	st, err := simgpu.Status(n.sim)
	require.NoError(n.t, err)
	return st.Devices[d].Used
}
