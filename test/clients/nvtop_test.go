package clients

// Debian 12's real, unmodified nvtop (3.0.1, bookworm contrib) on the simulated
// node, bare and under libvgpu. nvtop is an ncurses program with no batch mode in
// this version, so the test runs it in a detached tmux session of a fixed size on a
// private socket and reads the screen with `tmux capture-pane`.
//
// nvtop dlopens libnvidia-ml.so.1 and resolves every NVML function it uses with
// dlsym; a missing one makes it report "No GPU to monitor." LD_LIBRARY_PATH=build/simgpu
// points it at the simulated NVML. Under libvgpu (LD_PRELOAD) its dlsym of
// nvmlDeviceGetMemoryInfo returns libvgpu's hook, so the memory bar shows the slice.
//
// nvtop is fetched by test/clients/fetch_nvtop.sh (make test runs it; the test runs
// it too when build/clients/nvtop is missing: it needs root and the Debian mirror).

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

const (
	nvtopMiB = uint64(1) << 20
	nvtopGiB = uint64(1) << 30
	// How long nvtop gets to draw what a test waits for (it refreshes every second).
	nvtopScreenTimeout = 30 * time.Second
	nvtopDeviceName    = "NVIDIA H100 80GB HBM3 (simulated)"
)

// nvtopEnv is one simulated node with nvtop and the programs the tests run.
type nvtopEnv struct {
	root  string
	nvtop string
	node  string
	dir   string
}

// nvtopSetup fetches nvtop when it is missing and makes a two-device node of
// 16 GiB each. It runs uninstrumented build/ artifacts only: an ASan libvgpu
// (VGPU_BUILD_DIR=build/san) cannot be preloaded into the uninstrumented nvtop.
func nvtopSetup(t *testing.T) nvtopEnv {
	t.Helper()
	root := testbuild.Root(t, "bin/vgpuctl")
	for _, a := range []string{"build/libvgpu.so", "build/simgpu/libnvidia-ml.so.1",
		"build/simgpu/libcuda.so.1", "build/test/sim_hold"} {
		_, err := os.Stat(filepath.Join(root, a))
		require.NoError(t, err, "%s is missing: run `make build` in %s first", a, root)
	}
	testbuild.NoContainerSlice(t, shm.ContainerSliceDir)
	nvtop := filepath.Join(root, "build", "clients", "nvtop", "usr", "bin", "nvtop")
	_, errNvtop := os.Stat(nvtop)
	_, errTmux := exec.LookPath("tmux")
	if errNvtop != nil || errTmux != nil {
		cmd := exec.Command("sh", filepath.Join(root, "test", "clients", "fetch_nvtop.sh"), "build")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		t.Logf("fetch_nvtop.sh:\n%s", out)
		require.NoError(t, err, "fetching nvtop (needs root and the Debian mirror)")
	}
	dir := t.TempDir()
	e := nvtopEnv{root: root, nvtop: nvtop, node: filepath.Join(dir, "node"), dir: dir}
	require.NoError(t, simgpu.Init(e.node, simgpu.Config{Devices: 2, Memory: 16 * nvtopGiB, SMs: 132}))
	return e
}

// hold runs build/test/sim_hold BYTES on device 0 (with extra environment) until the
// test ends, and returns its pid once it holds the memory.
func (e nvtopEnv) hold(t *testing.T, bytes uint64, extra ...string) int {
	t.Helper()
	cmd := exec.Command(filepath.Join(e.root, "build", "test", "sim_hold"), fmt.Sprint(bytes), "0")
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(e.root, "build", "simgpu"),
		"VGPU_SIM_STATE="+e.node)
	cmd.Env = append(cmd.Env, extra...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		var pid int
		var got uint64
		_, err := fmt.Sscanf(s, "READY %d %d", &pid, &got)
		require.NoError(t, err, "sim_hold said %q", s)
		return pid
	case <-time.After(60 * time.Second):
		t.Fatal("sim_hold did not get ready")
	}
	return 0
}

// nvtopScreen runs nvtop with extra environment in a 160x50 tmux pane and returns a
// function that captures the pane as text. nvtop's stderr goes to a file whose
// contents are logged; when nvtop exits, the pane shows its exit status.
func (e nvtopEnv) start(t *testing.T, name string, extra ...string) func() string {
	t.Helper()
	sock := filepath.Join(e.dir, name+".tmux")
	errFile := filepath.Join(e.dir, name+".stderr")
	home := filepath.Join(e.dir, name+".home")
	require.NoError(t, os.MkdirAll(home, 0o755))
	vars := append([]string{
		"LD_LIBRARY_PATH=" + filepath.Join(e.root, "build", "simgpu"),
		"VGPU_SIM_STATE=" + e.node,
		"HOME=" + home, "XDG_CONFIG_HOME=" + home, // nvtop saves its settings there
		"LANG=C.UTF-8", "TERM=xterm-256color",
	}, extra...)
	// -p: no plot (one line per device and the process list fit any pane).
	script := fmt.Sprintf(`env %s %s -p 2>%s; echo "nvtop exited with status $?"; sleep 600`,
		nvtopShellQuote(vars...), nvtopShellQuote(e.nvtop), nvtopShellQuote(errFile))
	tmux := func(args ...string) *exec.Cmd {
		c := exec.Command("tmux", append([]string{"-S", sock, "-f", "/dev/null"}, args...)...)
		c.Env = append(os.Environ(), "TERM=xterm-256color")
		return c
	}
	out, err := tmux("new-session", "-d", "-x", "160", "-y", "50", "sh", "-c", script).CombinedOutput()
	require.NoError(t, err, "tmux new-session: %s", out)
	t.Cleanup(func() {
		_ = tmux("kill-server").Run()
		if b, err := os.ReadFile(errFile); err == nil && len(b) > 0 {
			t.Logf("nvtop (%s) stderr:\n%s", name, b)
		}
	})
	return func() string {
		out, err := tmux("capture-pane", "-p", "-t", "0").Output()
		require.NoError(t, err, "tmux capture-pane")
		return string(out)
	}
}

// nvtopWaitScreen captures the pane until every pattern matches it and returns the
// last screen; it fails with that screen after nvtopScreenTimeout.
func nvtopWaitScreen(t *testing.T, capture func() string, patterns ...*regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(nvtopScreenTimeout)
	for {
		screen := capture()
		ok := true
		for _, p := range patterns {
			if !p.MatchString(screen) {
				ok = false
				break
			}
		}
		if ok {
			return screen
		}
		if time.Now().After(deadline) || strings.Contains(screen, "nvtop exited with status") {
			var want []string
			for _, p := range patterns {
				if !p.MatchString(screen) {
					want = append(want, p.String())
				}
			}
			t.Fatalf("nvtop's screen lacks %q:\n%s", want, screen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nvtopMemBar matches device d's line of nvtop's memory bar: "Device d [name] ..." then,
// two lines below, "MEM[ ... used/total]".
func nvtopMemBar(d int, used, total string) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`Device %d \[%s\][^\n]*\n[^\n]*\n[^\n]*MEM\[[^\]]*%s/%s\]`, d,
		regexp.QuoteMeta(nvtopDeviceName), regexp.QuoteMeta(used), regexp.QuoteMeta(total)))
}

// nvtopProcessRow matches nvtop's process list row of pid on device d.
func nvtopProcessRow(pid, d int) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(?m)^\s*%d\s+\S+\s+%d\s+Compute\b`, pid, d))
}

// Bare: both simulated devices are listed with their names, PCIe link, memory
// (device-wide: a 1 GiB allocation plus its 256 MiB context on device 0) and the
// process holding it.
func TestNvtopListsSimulatedGPUs(t *testing.T) {
	e := nvtopSetup(t)
	pid := e.hold(t, nvtopGiB)
	capture := e.start(t, "bare")
	screen := nvtopWaitScreen(t, capture,
		nvtopMemBar(0, "1.250Gi", "16.000Gi"),
		nvtopMemBar(1, "0.000Gi", "16.000Gi"),
		regexp.MustCompile(`PCIe GEN 5@16x`),
		regexp.MustCompile(`POW +\d+ / 700 W`),
		nvtopProcessRow(pid, 0))
	t.Logf("nvtop on the simulated node:\n%s", screen)
}

// Under libvgpu with a 1 GiB slice on device 0: device 0's memory total is the
// slice's and its used bytes the slice's usage (a 256 MiB allocation plus the
// 256 MiB context overhead of a process of the slice); device 1, outside the
// slice, is untouched.
func TestNvtopUnderLibvgpuShowsSlice(t *testing.T) {
	e := nvtopSetup(t)
	slice := filepath.Join(e.dir, "slice")
	out, err := exec.Command(filepath.Join(e.root, "bin", "vgpuctl"), "slice", "create", "--dir", slice,
		"--memory", "1GiB").CombinedOutput()
	require.NoError(t, err, "vgpuctl slice create: %s", out)
	preload := []string{"LD_PRELOAD=" + filepath.Join(e.root, "build", "libvgpu.so"), "VGPU_SLICE_DIR=" + slice}
	pid := e.hold(t, 256*nvtopMiB, preload...)
	capture := e.start(t, "libvgpu", preload...)
	screen := nvtopWaitScreen(t, capture,
		nvtopMemBar(0, "0.500Gi", "1.000Gi"),
		nvtopMemBar(1, "0.000Gi", "16.000Gi"),
		nvtopProcessRow(pid, 0))
	require.NotRegexp(t, nvtopMemBar(0, "", "16.000Gi"), screen)
	t.Logf("nvtop under libvgpu (1 GiB slice on device 0):\n%s", screen)
}

// nvtopShellQuote quotes each word for sh and joins them with spaces.
func nvtopShellQuote(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
