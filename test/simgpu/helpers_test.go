package simgpu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
)

// The C side of the simulator and its test programs, built by the Makefile.
var simTargets = []string{
	"build/simgpu/libcuda.so.1",
	"build/simgpu/libnvidia-ml.so.1",
	"build/test/sim_layout",
	"build/test/sim_api",
	"build/test/sim_launch",
	"build/test/sim_procaddr",
	"build/test/sim_nvml",
	"build/test/sim_nvsample",
	"build/test/sim_hold",
	"build/test/sim_fill",
	"build/test/sim_zombie",
	"build/test/sim_nvwatch",
}

var (
	buildOnce sync.Once
	buildErr  error
	buildOut  string
)

// repoRoot returns the repository root.
func repoRoot(t *testing.T) string {
	t.Helper()
	return testbuild.Root(t)
}

// ensureBuilt brings the simulated libraries and the sim_* programs up to date with
// make (a no-op when `make build` already ran) and fails with the way out if it
// cannot. The test programs do not include testutil.h, so it is marked old (-o)
// and its absence cannot block them. With VGPU_BUILD_DIR set (testbuild: `make
// sanitize`) the artifacts come from that directory, built by whoever set it.
func ensureBuilt(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	if !testbuild.Custom() {
		buildOnce.Do(func() {
			args := append([]string{"-C", root, "-o", "test/cprog/testutil.h"}, simTargets...)
			out, err := exec.Command("make", args...).CombinedOutput()
			buildOut, buildErr = string(out), err
		})
	}
	if buildErr != nil {
		t.Fatalf("building the simulated node failed (run `make build` and see its errors): %v\n%s", buildErr, buildOut)
	}
	for _, tgt := range simTargets {
		_, err := os.Stat(testbuild.Path(root, strings.TrimPrefix(tgt, "build/")))
		require.NoError(t, err, "missing %s in %s: run `make build`", tgt, testbuild.Dir())
	}
	return root
}

type simEnv struct {
	root  string
	state string
}

func u64(v uint64) *uint64 { return &v }

// newNode builds the C side and creates a node in a per-test temp dir.
func newNode(t *testing.T, cfg Config) simEnv {
	t.Helper()
	root := ensureBuilt(t)
	state := filepath.Join(t.TempDir(), "node")
	require.NoError(t, Init(state, cfg))
	return simEnv{root: root, state: state}
}

func (e simEnv) cmd(prog string, args ...string) *exec.Cmd {
	c := exec.Command(testbuild.Path(e.root, "test", prog), args...)
	c.Env = append(os.Environ(),
		"LD_LIBRARY_PATH="+testbuild.Path(e.root, "simgpu"),
		"VGPU_SIM_STATE="+e.state)
	return c
}

// run runs a sim_* program to completion and returns its stdout; failure shows stderr.
func (e simEnv) run(t *testing.T, prog string, args ...string) string {
	t.Helper()
	c := e.cmd(prog, args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	require.NoError(t, err, "%s %v failed:\nstdout: %s\nstderr: %s", prog, args, out, stderr.String())
	return string(out)
}

// holder is a sim_hold / sim_fill process that keeps its resources until released.
type holder struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	fields []string // the READY / FILLED line
	done   chan error
}

// start runs prog and waits for its first line (READY/FILLED). The process is
// released at test end if the test did not do it.
func (e simEnv) start(t *testing.T, prog string, args ...string) *holder {
	t.Helper()
	return startCmd(t, e.cmd(prog, args...))
}

// startCmd is start for a prepared command (extra environment).
func startCmd(t *testing.T, c *exec.Cmd) *holder {
	t.Helper()
	prog, args := filepath.Base(c.Path), c.Args[1:]
	stdin, err := c.StdinPipe()
	require.NoError(t, err)
	stdout, err := c.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	c.Stderr = &stderr
	require.NoError(t, c.Start())
	h := &holder{cmd: c, stdin: stdin, done: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
		h.done <- c.Wait()
	}()
	t.Cleanup(func() { h.release() })
	select {
	case line, ok := <-lines:
		if !ok {
			err := <-h.done
			t.Fatalf("%s %v exited before it was ready: %v\nstderr: %s", prog, args, err, stderr.String())
		}
		h.fields = strings.Fields(line)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s %v did not become ready; stderr: %s", prog, args, stderr.String())
	}
	return h
}

func (h *holder) pid() int { return h.cmd.Process.Pid }

// release lets the holder exit normally and waits for it.
func (h *holder) release() {
	if h.stdin != nil {
		_ = h.stdin.Close()
		h.stdin = nil
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			_ = h.cmd.Process.Kill()
			<-h.done
		}
	}
}

// kill SIGKILLs the holder: no destructor runs, its slot stays behind.
func (h *holder) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Kill())
	<-h.done
	_ = h.stdin.Close()
	h.stdin = nil
}

func procOf(t *testing.T, d DeviceStatus, pid int) ProcessStatus {
	t.Helper()
	for _, p := range d.Processes {
		if p.PID == pid {
			return p
		}
	}
	t.Fatalf("pid %d not among device %d's processes %+v", pid, d.Index, d.Processes)
	return ProcessStatus{}
}

func fieldU64(t *testing.T, s string) uint64 {
	t.Helper()
	var v uint64
	_, err := fmt.Sscan(s, &v)
	require.NoError(t, err, "not a number: %q", s)
	return v
}

func exactOutput(path string, args ...string) (string, error) {
	out, err := exec.Command(path, args...).Output()
	return string(out), err
}
