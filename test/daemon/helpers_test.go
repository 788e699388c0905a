package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/internal/testproc"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

const (
	MiB = uint64(1) << 20
	GiB = uint64(1) << 30

	// lineTimeout bounds every wait for a process's next line or for vgpud to
	// be ready: generous for a loaded CI machine, finite so a hang fails.
	lineTimeout = 60 * time.Second
)

// repoRoot returns the repository root once `make build` made what these tests run.
func repoRoot(t *testing.T) string {
	t.Helper()
	root := testbuild.Root(t, "bin/vgpud", "bin/vgpuctl", "build/libvgpu.so",
		"build/simgpu/libcuda.so.1", "build/simgpu/libnvidia-ml.so.1", "build/test/alloc")
	testbuild.NoContainerSlice(t, "/run/vgpu/slice")
	return root
}

// node is a simulated GPU node and a place for one vgpud's state and socket.
type node struct {
	t      *testing.T
	root   string
	dir    string
	state  string // VGPU_SIM_STATE
	socket string
	data   string // vgpud's state dir
	client *api.Client
}

// newNode makes a simulated node of n GPUs of mem bytes each (context memory
// 256 MiB, as vgpud's default context overhead).
func newNode(t *testing.T, n int, mem uint64) *node {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	nd := &node{t: t, root: root, dir: dir, state: filepath.Join(dir, "node"),
		socket: filepath.Join(dir, "run", "vgpud.sock"), data: filepath.Join(dir, "state")}
	require.NoError(t, simgpu.Init(nd.state, simgpu.Config{Devices: n, Memory: mem, SMs: 132}))
	nd.client = api.NewClient(nd.socket)
	t.Cleanup(nd.client.Close)
	return nd
}

// env is the environment of a process on the simulated node: the test's own,
// minus anything that changes libvgpu's or the driver's behaviour.
func (nd *node) env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || k == "CUDA_VISIBLE_DEVICES" || strings.HasPrefix(k, "VGPU_") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "LD_LIBRARY_PATH="+filepath.Join(nd.root, "build/simgpu"), "VGPU_SIM_STATE="+nd.state,
		"VGPU_SOCKET="+nd.socket, "VGPU_LIBVGPU="+filepath.Join(nd.root, "build/libvgpu.so"))
	return append(out, extra...)
}

// vgpud is a running bin/vgpud.
type vgpud struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	metrics string // host:port
}

// start runs bin/vgpud on the node with JSON logs and waits until it is
// ready (its "vgpud ready" log line); extra flags are appended.
func (nd *node) start(extra ...string) *vgpud {
	nd.t.Helper()
	args := append([]string{"--state-dir", nd.data, "--socket", nd.socket, "--metrics-addr", "127.0.0.1:0",
		"--log-format", "json", "--log-level", "debug"}, extra...)
	cmd := exec.Command(filepath.Join(nd.root, "bin/vgpud"), args...)
	cmd.Env = nd.env()
	cmd.Dir = nd.root
	logPath := filepath.Join(nd.dir, "vgpud.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(nd.t, err)
	defer logf.Close()
	// A marker separates the runs of one test in the log.
	logf.WriteString("=== start\n")
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(nd.t, cmd.Start())
	d := &vgpud{t: nd.t, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	nd.t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			cmd.Process.Kill()
			<-d.done
		}
	})
	deadline := time.Now().Add(lineTimeout)
	for {
		if rec, ok := d.findLog("vgpud ready"); ok {
			d.metrics, _ = rec["metrics_addr"].(string)
			break
		}
		select {
		case <-d.done:
			nd.t.Fatalf("vgpud exited (%v) before it was ready; log:\n%s", cmd.ProcessState, d.log())
		default:
		}
		if time.Now().After(deadline) {
			nd.t.Fatalf("vgpud not ready after %v; log:\n%s", lineTimeout, d.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return d
}

// log is vgpud's log (this test's runs).
func (d *vgpud) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// logRecords returns the JSON log records of the current run with this msg.
func (d *vgpud) logRecords(msg string) []map[string]any {
	var out []map[string]any
	text := d.log()
	if i := strings.LastIndex(text, "=== start\n"); i >= 0 {
		text = text[i:]
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// awaitLog waits up to 5 s for records with msg: an event vgpud logs after
// acting (a kill's record says what the kill did) can trail what the test saw
// of the act itself on a loaded machine.
func (d *vgpud) awaitLog(msg string) []map[string]any {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if recs := d.logRecords(msg); len(recs) > 0 {
			return recs
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no log record %q after 5s; log:\n%s", msg, d.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (d *vgpud) findLog(msg string) (map[string]any, bool) {
	recs := d.logRecords(msg)
	if len(recs) == 0 {
		return nil, false
	}
	return recs[0], true
}

// stop sends SIGTERM and waits for a clean exit.
func (d *vgpud) stop() {
	d.t.Helper()
	require.NoError(d.t, d.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-d.done:
	case <-time.After(lineTimeout):
		d.t.Fatalf("vgpud still running %v after SIGTERM", lineTimeout)
	}
	require.True(d.t, d.cmd.ProcessState.Success(), "vgpud exit: %v; log:\n%s", d.cmd.ProcessState, d.log())
}

// kill9 SIGKILLs vgpud and waits until it is gone.
func (d *vgpud) kill9() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(lineTimeout):
		d.t.Fatalf("vgpud still running after SIGKILL")
	}
}

// ctl runs bin/vgpuctl with args on the node; it returns stdout, stderr and the exit code.
func (nd *node) ctl(args ...string) (stdout, stderr string, code int) {
	nd.t.Helper()
	cmd := exec.Command(filepath.Join(nd.root, "bin/vgpuctl"), args...)
	cmd.Env = nd.env()
	cmd.Dir = nd.root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		nd.t.Fatalf("vgpuctl %v: %v", args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// proc is a running process read line by line, stdin a pipe (internal/testproc),
// under the names these tests call it by.
type proc struct {
	*testproc.Proc
	t   *testing.T
	cmd *exec.Cmd
}

// startProc runs argv (relative paths from the repository root) on the node.
func (nd *node) startProc(env []string, argv ...string) *proc {
	nd.t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	if strings.Contains(argv[0], "/") && !filepath.IsAbs(argv[0]) {
		cmd.Path = filepath.Join(nd.root, argv[0])
	}
	cmd.Env, cmd.Dir = env, nd.root
	return &proc{Proc: testproc.Start(nd.t, cmd, strings.Join(argv, " "), lineTimeout), t: nd.t, cmd: cmd}
}

func (p *proc) pid() int       { return p.Pid() }
func (p *proc) stderr() string { return p.Stderr() }
func (p *proc) drain() bool    { return p.Drain() }
func (p *proc) exited() bool   { return p.Exited() }

// expect reads lines until one starts with prefix; it returns its key=value fields.
func (p *proc) expect(prefix string) map[string]string {
	p.t.Helper()
	return p.Expect(prefix)
}

// next lets a --step program go past its current phase.
func (p *proc) next() {
	p.t.Helper()
	p.Next()
}

// wait closes stdin, waits for the exit and returns the exit code (-1: signal).
func (p *proc) wait() int {
	p.t.Helper()
	return p.Wait()
}

// waitExit waits for the exit without closing stdin (a --step program goes on
// waiting at its phase) and returns the exit code (-1: signal).
func (p *proc) waitExit() int {
	p.t.Helper()
	return p.WaitExit()
}

// eventually polls cond until it holds or d passes; it returns how long it took.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func bg() context.Context { return context.Background() }
