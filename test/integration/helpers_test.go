package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/shm"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

const (
	MiB = uint64(1) << 20
	GiB = uint64(1) << 30

	// lineTimeout bounds every wait for a program's next line: generous, because a
	// loaded CI machine runs many processes at once, but finite so a hung program
	// fails the test instead of the whole run.
	lineTimeout = 60 * time.Second
)

// root returns the repository root once `make build` made everything the
// tests run.
func root(t *testing.T) string {
	t.Helper()
	dir := testbuild.Root(t, "build/libvgpu.so", "build/simgpu/libcuda.so.1",
		"build/simgpu/libnvidia-ml.so.1", "build/test/alloc", "build/test/dl_alloc", "build/test/hammer",
		"build/test/forker", "build/test/query", "build/test/badfree", "build/test/execer",
		"build/test/dlsym_handles")
	// libvgpu prefers the container path; on a machine where it exists the
	// bare-metal behaviour these tests check cannot be reached.
	testbuild.NoContainerSlice(t, shm.ContainerSliceDir)
	return dir
}

// env is the environment of one test program run.
type env struct {
	root    string
	node    string // VGPU_SIM_STATE
	slice   string // VGPU_SLICE_DIR; "" = unset
	preload bool   // LD_PRELOAD=build/libvgpu.so
	extra   []string
	// container, when set, runs the program in a private mount namespace where
	// /run/vgpu/slice exists — bind-mounted from this directory, or empty for
	// "-" — as the runtime sets up a container. Needs root (tests check).
	container string
}

// command builds the exec.Cmd of build/test/<prog> in e (testbuild.Dir: build/,
// or build/san under `make sanitize`).
func (e env) command(prog string, args ...string) *exec.Cmd {
	bin := testbuild.Path(e.root, "test", prog)
	var cmd *exec.Cmd
	if e.container == "" {
		cmd = exec.Command(bin, args...)
	} else {
		// unshare(1) without --fork execs in place: the program keeps this pid.
		// A tmpfs over /run in the private namespace lets us create
		// /run/vgpu/slice without touching the host's /run.
		script := `mount -t tmpfs vgpu-test /run && mkdir -p /run/vgpu/slice && ` +
			`{ [ "$1" = - ] || mount --bind "$1" /run/vgpu/slice; } && shift && exec "$@"`
		cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private",
			"sh", "-c", script, "sh", e.container, bin}, args...)...)
	}
	cmd.Env = e.vars()
	cmd.Dir = e.root
	return cmd
}

// vars builds the process environment: the test's own, minus anything that
// could change libvgpu's or the simulator's behaviour, plus the run's settings.
func (e env) vars() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || k == "CUDA_VISIBLE_DEVICES" ||
			strings.HasPrefix(k, "VGPU_") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out,
		"LD_LIBRARY_PATH="+testbuild.Path(e.root, "simgpu"),
		"VGPU_SIM_STATE="+e.node)
	if e.slice != "" {
		out = append(out, "VGPU_SLICE_DIR="+e.slice)
	}
	if e.preload {
		out = append(out, "LD_PRELOAD="+testbuild.Path(e.root, "libvgpu.so"))
	}
	return append(out, e.extra...)
}

// fixture is one simulated node and one slice on it.
type fixture struct {
	t     *testing.T
	root  string
	node  string
	slice string
	sl    *shm.Slice
	limit uint64
	ovh   uint64 // context overhead: the sim's context memory and the budget's alike
}

type fixtureOpts struct {
	devices  int
	physical uint64 // memory per simulated device
	limit    uint64 // slice limit on device 0
	ovh      uint64 // per-context footprint (sim and budget)
	uuid     bool   // name the slice's device by UUID instead of index
	sliceDev int    // the node device the slice uses
}

func newFixture(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	r := root(t)
	if o.devices == 0 {
		o.devices = 1
	}
	if o.physical == 0 {
		o.physical = 8 * GiB
	}
	if o.limit == 0 {
		o.limit = 2 * GiB
	}
	dir := t.TempDir()
	f := &fixture{t: t, root: r, node: filepath.Join(dir, "node"),
		slice: filepath.Join(dir, "slice"), limit: o.limit, ovh: o.ovh}
	ctxMem := o.ovh
	require.NoError(t, simgpu.Init(f.node, simgpu.Config{
		Devices: o.devices, Memory: o.physical, SMs: 4, ContextMemory: &ctxMem}))
	dev := shm.DeviceBudget{Index: uint32(o.sliceDev), MemoryLimit: o.limit,
		MemoryGuaranteed: o.limit, ContextOverhead: o.ovh, ComputeShareBP: 10000}
	if o.uuid {
		abs, err := filepath.Abs(f.node)
		require.NoError(t, err)
		dev.UUID = simgpu.DeviceUUID(abs, o.sliceDev)
		dev.Index = 0 // must not matter: the UUID decides
	}
	require.NoError(t, shm.CreateSlice(f.slice, shm.SliceSpec{
		ID: "test", Devices: []shm.DeviceBudget{dev}, Slots: 64}))
	sl, err := shm.OpenSlice(f.slice)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sl.Close() })
	f.sl = sl
	return f
}

// env returns the environment of a program confined to the fixture's slice.
func (f *fixture) env(extra ...string) env {
	return env{root: f.root, node: f.node, slice: f.slice, preload: true, extra: extra}
}

// bare returns the environment of a program outside any slice (no libvgpu).
func (f *fixture) bare() env {
	return env{root: f.root, node: f.node}
}

// used is the slice's admission counter on device 0.
func (f *fixture) used() uint64 { return f.sl.Usage.DeviceUsed(0) }

// slotOf returns the usage slot owned by pid.
func (f *fixture) slotOf(pid int) (shm.SlotInfo, bool) {
	for _, s := range f.sl.Usage.Slots() {
		if s.PID == pid {
			return s, true
		}
	}
	return shm.SlotInfo{}, false
}

// slotUsed is what pid's slot holds on device 0 (0 without a slot).
func (f *fixture) slotUsed(pid int) uint64 {
	s, ok := f.slotOf(pid)
	if !ok {
		return 0
	}
	return s.UsedBytes[0]
}

// simStatus is the simulated driver's view of the node.
func (f *fixture) simStatus() simgpu.NodeStatus {
	st, err := simgpu.Status(f.node)
	require.NoError(f.t, err)
	return st
}

// simProc is the simulated driver's per-process figure for pid on device d.
func (f *fixture) simProc(d, pid int) simgpu.ProcessStatus {
	st := f.simStatus()
	for _, p := range st.Devices[d].Processes {
		if p.PID == pid {
			return p
		}
	}
	return simgpu.ProcessStatus{PID: pid}
}

// requireAgree checks that libvgpu's charge of pid (its slot) equals the
// simulated driver's per-process figure and the expected value.
func (f *fixture) requireAgree(pid int, want uint64, what string) {
	f.t.Helper()
	require.Equal(f.t, want, f.slotUsed(pid), "%s: libvgpu's charge of pid %d", what, pid)
	require.Equal(f.t, want, f.simProc(0, pid).UsedBytes,
		"%s: the simulated driver's figure for pid %d", what, pid)
}

// proc is a running test program, read line by line (internal/testproc),
// under the names these tests call it by.
type proc struct {
	*testproc.Proc
	t    *testing.T
	name string
	cmd  *exec.Cmd
}

// start runs build/test/<prog> with args in e.
func start(t *testing.T, e env, prog string, args ...string) *proc {
	t.Helper()
	cmd := e.command(prog, args...)
	name := prog + " " + strings.Join(args, " ")
	return &proc{Proc: testproc.Start(t, cmd, name, lineTimeout), t: t, name: name, cmd: cmd}
}

func (p *proc) pid() int { return p.Pid() }

// expect reads lines until one starts with prefix and returns its key=value
// fields. Fails on EOF or timeout, showing the program's stderr.
func (p *proc) expect(prefix string) map[string]string {
	p.t.Helper()
	return p.Expect(prefix)
}

// expectEither reads lines until one starts with a or b and returns that prefix
// with the line's fields: expect, for a program that prints either one next.
func (p *proc) expectEither(a, b string) (string, map[string]string) {
	p.t.Helper()
	return p.ExpectEither(a, b)
}

// phase waits for "PHASE name".
func (p *proc) phase(name string) {
	p.t.Helper()
	p.Phase(name)
}

// next lets a stepping program continue past its current phase.
func (p *proc) next() {
	p.t.Helper()
	p.Next()
}

// waitOK waits for a clean exit.
func (p *proc) waitOK() {
	p.t.Helper()
	p.WaitOK()
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill() {
	p.t.Helper()
	p.Kill()
}

// run runs a program to completion, returning stdout lines, stderr and exit code.
func run(t *testing.T, e env, prog string, args ...string) (lines []string, stderr string, code int) {
	t.Helper()
	cmd := e.command(prog, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = nil
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", prog, err)
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n"), errb.String(),
		cmd.ProcessState.ExitCode()
}

// lineWith returns the fields of the first line starting with prefix.
func lineWith(t *testing.T, lines []string, prefix string) map[string]string {
	t.Helper()
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return fields(l)
		}
	}
	t.Fatalf("no %q line in output:\n%s", prefix, strings.Join(lines, "\n"))
	return nil
}

// fields parses "KEY a=1 b=x" into {a: 1, b: x}.
func fields(line string) map[string]string { return testproc.Fields(line) }

// num parses a numeric field.
func num(t *testing.T, m map[string]string, k string) uint64 {
	t.Helper()
	v, ok := m[k]
	require.True(t, ok, "field %s missing in %v", k, m)
	n, err := strconv.ParseUint(v, 10, 64)
	require.NoError(t, err, "field %s=%q", k, v)
	return n
}

// vgpuLines returns the lines libvgpu wrote on stderr.
func vgpuLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "vgpu: ") {
			out = append(out, l)
		}
	}
	return out
}

// mib formats a byte count for messages.
func mib(b uint64) string { return fmt.Sprintf("%.1fMiB", float64(b)/float64(MiB)) }

// patch overwrites bytes of a file at off.
func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer fh.Close()
	_, err = fh.WriteAt(b, off)
	require.NoError(t, err)
}

// truncate cuts a file to size bytes.
func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	require.NoError(t, os.Truncate(path, size))
}

// grow appends n zero bytes to a file.
func grow(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, st.Size()+n))
}

func removeFile(path string) error { return os.Remove(path) }
