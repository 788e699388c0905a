package clients

// Debian 12's real, unmodified python3-pycuda (2022.2.2, bookworm contrib) on the
// simulated node, bare and under libvgpu. It links ~160 driver entry points of
// libcuda.so.1; LD_LIBRARY_PATH=build/simgpu resolves them to the simulated driver.
//
// The package is fetched into build/clients/pycuda by test/clients/fetch_pycuda.sh
// (make test runs it; the test runs it too when the package is missing: it needs
// root and the Debian mirror) without installing it or any NVIDIA package.
//
// The Python snippets are test/clients/pycuda_*.py; each prints KEY=VALUE lines
// that the tests assert on.

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
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
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

const (
	MiB = uint64(1) << 20
	GiB = uint64(1) << 30

	// python is Debian's interpreter, the one python3-pycuda is built for (a
	// python3 earlier in PATH, such as a pyenv shim, would not see Debian's numpy).
	python = "/usr/bin/python3"
	// runTimeout bounds one Python process (a few seconds normally).
	runTimeout = 2 * time.Minute
)

// setup returns the repository root once the C build and the fetched package are
// there. The simulated driver and libvgpu come from testbuild's directory (build/,
// or build/san under `make sanitize`, where python3, which is not instrumented,
// gets the sanitizer runtimes preloaded ahead of them: sanitizerPreload).
func setup(t *testing.T) string {
	t.Helper()
	root := testbuild.Root(t, "build/libvgpu.so", "build/simgpu/libcuda.so.1")
	if _, err := os.Stat(filepath.Join(root, "build/clients/pycuda/.fetched")); err != nil {
		fetch := exec.Command("sh", filepath.Join(root, "test/clients/fetch_pycuda.sh"), "build") //nolint:gosec // our script
		fetch.Dir = root
		out, ferr := fetch.CombinedOutput()
		require.NoError(t, ferr, "python3-pycuda is not fetched and test/clients/fetch_pycuda.sh "+
			"(make pycuda-dep) failed:\n%s", out)
		t.Logf("fetched python3-pycuda:\n%s", out)
	}
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing: run `make pycuda-dep` (%v)", python, err)
	}
	testbuild.NoContainerSlice(t, shm.ContainerSliceDir)
	return root
}

// run is one Python process.
type run struct {
	root    string
	node    string // VGPU_SIM_STATE
	slice   string // VGPU_SLICE_DIR and LD_PRELOAD=build/libvgpu.so; "" = bare
	script  string // test/clients/<script>
	args    []string
	stdout  string
	stderr  string
	outputs map[string]string
}

// environ is the test's environment without anything that could change what the
// driver, libvgpu or Python do, plus the run's settings.
func (r *run) environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || k == "CUDA_VISIBLE_DEVICES" ||
			strings.HasPrefix(k, "VGPU_") || strings.HasPrefix(k, "PYTHON") || strings.HasPrefix(k, "PYCUDA_") {
			continue
		}
		out = append(out, kv)
	}
	prefix := filepath.Join(r.root, "build/clients/pycuda")
	out = append(out,
		"PYTHONPATH="+filepath.Join(prefix, "usr/lib/python3/dist-packages"),
		"PYTHONDONTWRITEBYTECODE=1",
		// The simulated libcuda.so.1 first; libcurand.so.10, which pycuda's
		// _driver links, from the private prefix.
		"LD_LIBRARY_PATH="+testbuild.Path(r.root, "simgpu")+":"+
			filepath.Join(prefix, "usr/lib/x86_64-linux-gnu"),
		"VGPU_SIM_STATE="+r.node)
	preload := sanitizerPreload()
	if r.slice != "" {
		out = append(out, "VGPU_SLICE_DIR="+r.slice)
		preload = append(preload, testbuild.Path(r.root, "libvgpu.so"))
	}
	if len(preload) > 0 {
		out = append(out, "LD_PRELOAD="+strings.Join(preload, " "))
	}
	return out
}

// sanitizerPreload is, for a sanitizer build (testbuild.Custom: make sanitize's
// build/san), gcc's ASan and UBSan runtimes: an instrumented libcuda.so.1 or
// libvgpu.so needs them loaded first, and python3 does not link them. ASAN_OPTIONS
// and UBSAN_OPTIONS come from make sanitize's environment.
func sanitizerPreload() []string {
	if !testbuild.Custom() {
		return nil
	}
	var libs []string
	for _, name := range []string{"libasan.so", "libubsan.so"} {
		out, err := exec.Command("gcc", "-print-file-name="+name).Output()
		if p := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(p) {
			libs = append(libs, p)
		}
	}
	return libs
}

// exec runs the script to completion and parses its KEY=VALUE lines; it fails t
// unless the process exits 0 having printed DONE=1.
func (r *run) exec(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	args := append([]string{"-X", "faulthandler", filepath.Join(r.root, "test/clients", r.script)}, r.args...)
	cmd := exec.CommandContext(ctx, python, args...) //nolint:gosec // the test's own script
	cmd.Env = r.environ()
	cmd.Dir = t.TempDir()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r.stdout, r.stderr = so.String(), se.String()
	r.outputs = map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			r.outputs[k] = v
		}
	}
	require.NoError(t, err, "%s %v\nstdout:\n%s\nstderr:\n%s", r.script, r.args, r.stdout, r.stderr)
	require.Equal(t, "1", r.outputs["DONE"], "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
}

func (r *run) str(t *testing.T, key string) string {
	t.Helper()
	v, ok := r.outputs[key]
	require.True(t, ok, "%s not printed\nstdout:\n%s\nstderr:\n%s", key, r.stdout, r.stderr)
	return v
}

func (r *run) num(t *testing.T, key string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(r.str(t, key), 10, 64)
	require.NoError(t, err, key)
	return n
}

// expect checks KEY=VALUE pairs that must hold exactly.
func (r *run) expect(t *testing.T, want map[string]string) {
	t.Helper()
	for k, v := range want {
		require.Equal(t, v, r.str(t, k), "%s\nstdout:\n%s\nstderr:\n%s", k, r.stdout, r.stderr)
	}
}

func newNode(t *testing.T, memory, ctxMem uint64) string {
	t.Helper()
	node := filepath.Join(t.TempDir(), "node")
	require.NoError(t, simgpu.Init(node, simgpu.Config{Devices: 1, Memory: memory, SMs: 132,
		ContextMemory: &ctxMem}))
	return node
}

// TestPycudaBare: pycuda.autoinit, the device as pycuda reports it, mem_get_info,
// a 12 GiB allocation on a 16 GiB device whose last page round-trips (device
// memory costs nothing until touched), and mem_alloc until the card is full.
func TestPycudaBare(t *testing.T) {
	root := setup(t)
	const ctxMem = 256 * MiB
	node := newNode(t, 16*GiB, ctxMem)
	r := &run{root: root, node: node, script: "pycuda_bare.py", args: []string{fmt.Sprint(12 * GiB)}}
	r.exec(t)
	r.expect(t, map[string]string{
		"PYCUDA_VERSION":        "2022.2.2",
		"DRIVER_VERSION":        "12040",
		"DEVICE_COUNT":          "1",
		"CC":                    "9.0",
		"TOTAL_MEM":             fmt.Sprint(16 * GiB),
		"MEM_TOTAL":             fmt.Sprint(16 * GiB),
		"MEM_FREE":              fmt.Sprint(16*GiB - ctxMem),
		"SMS":                   "132",
		"WARP_SIZE":             "32",
		"MAX_THREADS_PER_BLOCK": "1024",
		"PCI_BUS_ID":            "0000:01:00.0",
		"API_VERSION":           "3020",
		"BIG_TAIL_OK":           "1",
		"OOM_ERROR":             "pycuda._driver.MemoryError",
		"OOM_ALLOCS":            fmt.Sprint((16*GiB - ctxMem) / (256 * MiB)),
	})
	require.Contains(t, r.str(t, "NAME"), "H100")
	require.GreaterOrEqual(t, r.num(t, "ATTRS"), uint64(90), "pycuda's Device.get_attributes()")
	st, err := simgpu.Status(node)
	require.NoError(t, err)
	require.Zero(t, st.Devices[0].Used, "everything returned to the device at exit")
}

// sliceNode is a 16 GiB simulated device and a 1 GiB slice of it, whose context
// footprint is the simulator's.
func sliceNode(t *testing.T) (node, slice string, sl *shm.Slice, ovh uint64) {
	t.Helper()
	ovh = 64 * MiB
	node = newNode(t, 16*GiB, ovh)
	slice = filepath.Join(t.TempDir(), "slice")
	require.NoError(t, shm.CreateSlice(slice, shm.SliceSpec{ID: "pycuda", Slots: 64,
		Devices: []shm.DeviceBudget{{Index: 0, MemoryLimit: 1 * GiB, MemoryGuaranteed: 1 * GiB,
			ContextOverhead: ovh, ComputeShareBP: 10000}}}))
	sl, err := shm.OpenSlice(slice)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sl.Close() })
	return node, slice, sl, ovh
}

// sliceScriptChecks are what pycuda_slice.py must see whatever the memory it
// runs in: data, streams, events, modules and contexts.
var sliceScriptChecks = map[string]string{
	"HTOD_DTOH_EQUAL":    "1",
	"DTOD_EQUAL":         "1",
	"MEMSET_D8_OK":       "1",
	"MEMSET_D32_OK":      "1",
	"OFFSET_EQUAL":       "1",
	"ASYNC_EQUAL":        "1",
	"EVENT_QUERY":        "1",
	"STREAM_DONE":        "1",
	"ELAPSED_OK":         "1",
	"FUNC_REGS":          "32",
	"KERNEL_MS_POSITIVE": "1",
	"CTX_SYNC":           "1",
	"OOM_ERROR":          "pycuda._driver.MemoryError",
	"CTX2_CURRENT":       "1",
	"CTX1_CURRENT":       "1",
	"CTX2_PUSHED":        "1",
	"NO_CONTEXT":         "1",
	"GL_CTX_ERROR":       "LogicError",
	"PEER_ERROR":         "LogicError",
}

// TestPycudaInSlice: under libvgpu, pycuda sees the slice (mem_get_info,
// Device.total_memory), mem_alloc stops at the slice with pycuda's MemoryError,
// bytes round-trip, events and streams work, a second context costs its
// footprint and detach (pycuda never destroys) gives it back.
func TestPycudaInSlice(t *testing.T) {
	root := setup(t)
	node, slice, sl, ovh := sliceNode(t)
	chunk := 64 * MiB
	r := &run{root: root, node: node, slice: slice, script: "pycuda_slice.py",
		args: []string{fmt.Sprint(chunk)}}
	r.exec(t)
	r.expect(t, sliceScriptChecks)
	r.expect(t, map[string]string{
		"MEM_TOTAL":         fmt.Sprint(1 * GiB),
		"TOTAL_MEM":         fmt.Sprint(1 * GiB),
		"MEM_FREE":          fmt.Sprint(1*GiB - ovh),
		"OOM_ALLOCS":        fmt.Sprint((1*GiB - ovh) / chunk),
		"MEM_FREE_FULL":     "0",
		"MEM_FREE_AFTER":    fmt.Sprint(1*GiB - ovh),
		"MEM_FREE_CTX2":     fmt.Sprint(1*GiB - 2*ovh),
		"MEM_FREE_DETACHED": fmt.Sprint(1*GiB - ovh),
		"MEM_FREE_GL":       fmt.Sprint(1*GiB - ovh),
	})
	d := sl.Usage.Device(0)
	require.Zero(t, d.UsedBytes, "the slice is empty after the process exited")
	require.Equal(t, 1*GiB, d.PeakBytes, "the slice was filled exactly")
	require.NotZero(t, d.RefusedAllocs, "libvgpu refused the allocation past the slice")
	st, err := simgpu.Status(node)
	require.NoError(t, err)
	require.Zero(t, st.Devices[0].Used)
	require.LessOrEqual(t, st.Devices[0].UsedHigh, 1*GiB, "the card never held more than the slice")
	require.GreaterOrEqual(t, st.Devices[0].Launches, uint64(10), "the kernel launches reached the device")
}

// TestPycudaSliceScriptBare: the same script without libvgpu runs into the
// card instead (so the figures above are the slice's doing).
func TestPycudaSliceScriptBare(t *testing.T) {
	root := setup(t)
	node, _, _, ovh := sliceNode(t)
	chunk := 256 * MiB
	r := &run{root: root, node: node, script: "pycuda_slice.py", args: []string{fmt.Sprint(chunk)}}
	r.exec(t)
	r.expect(t, sliceScriptChecks)
	r.expect(t, map[string]string{
		"MEM_TOTAL":         fmt.Sprint(16 * GiB),
		"MEM_FREE":          fmt.Sprint(16*GiB - ovh),
		"OOM_ALLOCS":        fmt.Sprint((16*GiB - ovh) / chunk),
		"MEM_FREE_FULL":     fmt.Sprint((16*GiB - ovh) % chunk),
		"MEM_FREE_DETACHED": fmt.Sprint(16*GiB - ovh),
		"MEM_FREE_GL":       fmt.Sprint(16*GiB - ovh),
	})
}

// TestPycudaDriverSymbols: every driver entry point pycuda's extension links
// (nm -D --undefined-only _driver*.so) is defined by the simulated libcuda.so.1,
// so the import binds (Python loads extensions RTLD_NOW); on failure the list
// says what is missing.
func TestPycudaDriverSymbols(t *testing.T) {
	root := setup(t)
	exts, err := filepath.Glob(filepath.Join(root,
		"build/clients/pycuda/usr/lib/python3/dist-packages/pycuda/_driver*.so"))
	require.NoError(t, err)
	require.Len(t, exts, 1, "pycuda's _driver extension")
	ext, err := elf.Open(exts[0])
	require.NoError(t, err)
	defer ext.Close()
	imported, err := ext.DynamicSymbols()
	require.NoError(t, err)
	lib, err := elf.Open(testbuild.Path(root, "simgpu", "libcuda.so.1"))
	require.NoError(t, err)
	defer lib.Close()
	exported, err := lib.DynamicSymbols()
	require.NoError(t, err)
	defined := map[string]bool{}
	for _, s := range exported {
		if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			defined[s.Name] = true
		}
	}
	var needed, missing []string
	for _, s := range imported {
		// cuXxx: the driver API (curandXxx come from libcurand.so.10).
		if s.Section == elf.SHN_UNDEF && len(s.Name) > 2 && strings.HasPrefix(s.Name, "cu") &&
			s.Name[2] >= 'A' && s.Name[2] <= 'Z' {
			needed = append(needed, s.Name)
			if !defined[s.Name] {
				missing = append(missing, s.Name)
			}
		}
	}
	require.Greater(t, len(needed), 100, "pycuda links the driver directly")
	require.Empty(t, missing, "driver entry points pycuda links that the simulated libcuda lacks")
}
