// Package rehearsal runs the real-GPU check (test/gpu/run.sh) on the simulated
// node: GPU machines are rare, so the script is run on every `make test` against
// build/simgpu with stand-ins for nvidia-smi (this test binary) and for the few torch
// calls torch_check.py makes (faketorch/, ctypes over the driver API), and every one
// of its checks must pass there. What only a GPU can show (PyTorch's own allocators,
// real timings) is left to the real run. One check cannot be judged here and must
// say why it was skipped: nvidia-smi inside a slice (the stand-in reads the
// simulated node, not NVML). The container check runs through containerd and vgpu-runtime
// with the simulated node's CDI spec (vgpu-sim cdi-spec) where this machine can (root,
// containerd, ctr, runc and the shim), and is skipped otherwise.
package rehearsal

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/test/simgpu"
)

// TestMain doubles as the stand-in nvidia-smi: run.sh finds a symlink named
// nvidia-smi to this test binary first on its PATH.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "nvidia-smi" {
		os.Exit(fakeNvidiaSMI(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeNvidiaSMI answers the nvidia-smi queries run.sh makes from the simulated
// node's truth (VGPU_SIM_STATE).
func fakeNvidiaSMI(args []string) int {
	st, err := simgpu.Status(os.Getenv("VGPU_SIM_STATE"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "nvidia-smi (simulated): %v\n", err)
		return 9
	}
	const driver = "999.99.99"
	mib := func(b uint64) string { return fmt.Sprint(b >> 20) }
	var query, format string
	index := -1
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-L":
			for _, d := range st.Devices {
				fmt.Printf("GPU %d: %s (UUID: %s)\n", d.Index, d.Name, d.UUID)
			}
			return 0
		case strings.HasPrefix(a, "--query-gpu=") || strings.HasPrefix(a, "--query-compute-apps="):
			query = a
		case strings.HasPrefix(a, "--format="):
			format = strings.TrimPrefix(a, "--format=")
		case a == "-i" && i+1 < len(args):
			i++
			fmt.Sscan(args[i], &index)
		default:
			fmt.Fprintf(os.Stderr, "nvidia-smi (simulated): unsupported argument %q\n", a)
			return 2
		}
	}
	if query == "" {
		fmt.Printf("| NVIDIA-SMI %s    Driver Version: %s    CUDA Version: 12.4 |\n", driver, driver)
		return 0
	}
	units := !strings.Contains(format, "nounits")
	unit := func(s string) string {
		if units {
			return s + " MiB"
		}
		return s
	}
	kind, fieldList, _ := strings.Cut(strings.TrimPrefix(query, "--query-"), "=")
	fields := strings.Split(fieldList, ",")
	if !strings.Contains(format, "noheader") {
		fmt.Println(strings.Join(fields, ", "))
	}
	for _, d := range st.Devices {
		if index >= 0 && d.Index != index {
			continue
		}
		var rows [][]string
		if kind == "gpu" {
			var row []string
			for _, f := range fields {
				switch f {
				case "index":
					row = append(row, fmt.Sprint(d.Index))
				case "name":
					row = append(row, d.Name)
				case "uuid":
					row = append(row, d.UUID)
				case "driver_version":
					row = append(row, driver)
				case "memory.total":
					row = append(row, unit(mib(d.Total)))
				case "memory.used":
					row = append(row, unit(mib(d.Used)))
				case "compute_cap":
					row = append(row, "9.0")
				default:
					row = append(row, "[N/A]")
				}
			}
			rows = append(rows, row)
		} else {
			for _, p := range d.Processes {
				var row []string
				for _, f := range fields {
					switch f {
					case "pid":
						row = append(row, fmt.Sprint(p.PID))
					case "used_memory":
						row = append(row, unit(mib(p.UsedBytes)))
					default:
						row = append(row, "[N/A]")
					}
				}
				rows = append(rows, row)
			}
		}
		for _, r := range rows {
			fmt.Println(strings.Join(r, ", "))
		}
	}
	return 0
}

// summaryRows reads the check table of summary.md: check name -> PASS/FAIL/SKIP.
func summaryRows(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rows := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 4 {
			continue
		}
		status := strings.TrimSpace(cells[2])
		if status == "PASS" || status == "FAIL" || status == "SKIP" {
			rows[strings.TrimSpace(cells[1])] = status
		}
	}
	require.NoError(t, sc.Err())
	return rows
}

func TestRunScriptOnTheSimulatedNode(t *testing.T) {
	root, err := filepath.Abs("../../..")
	require.NoError(t, err)
	for _, f := range []string{"build/libvgpu.so", "build/simgpu/libcuda.so.1", "build/test/bench_overhead",
		"bin/vgpuctl", "bin/vgpu-bench"} {
		require.FileExists(t, filepath.Join(root, f), "run `make build` first")
	}

	tmp := t.TempDir()
	state := filepath.Join(tmp, "node")
	ctxMem := uint64(256 << 20)
	// 100 µs per wave of blocks: the throttle step's kernels (20 waves: 2 ms) take
	// real time, 10x libvgpu's nominal wave time, so the controller has to learn the
	// scale as on a real GPU; the overhead step's 1-block launches are synchronized
	// every batch, so their queue stays short.
	require.NoError(t, simgpu.Init(state, simgpu.Config{Devices: 1, Memory: 80 << 30, SMs: 132,
		NsPerBlock: 100_000, ContextMemory: &ctxMem}))
	fakeBin := filepath.Join(tmp, "fakebin")
	require.NoError(t, os.MkdirAll(fakeBin, 0o755))
	self, err := os.Executable()
	require.NoError(t, err)
	require.NoError(t, os.Symlink(self, filepath.Join(fakeBin, "nvidia-smi")))
	out := filepath.Join(tmp, "out")

	env := runEnv(root, state, fakeBin, out)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "test", "gpu", "run.sh"))
	cmd.Dir = root
	cmd.Env = env
	output, runErr := cmd.CombinedOutput()
	logText, _ := os.ReadFile(filepath.Join(out, "run.log"))
	failMsg := fmt.Sprintf("run.sh output:\n%s\nrun.log:\n%s", output, logText)

	checkSummary(t, out, failMsg)
	require.NoError(t, runErr, "every check passed, so the script must exit 0\n%s", failMsg)
}

// containersHere reports whether run.sh's container step can run on this machine:
// root, and containerd, ctr, runc and the runc v2 shim (`make deps`).
func containersHere() bool {
	if os.Geteuid() != 0 {
		return false
	}
	for _, b := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(b); err != nil {
			return false
		}
	}
	return true
}

// runEnv is run.sh's environment for the rehearsal: the caller's without
// anything that would steer run.sh or leak a make jobserver into it, then the
// simulated node (state), the stand-in nvidia-smi in fakeBin, results in out,
// and short settings for the benchmarks.
func runEnv(root, state, fakeBin, out string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "LD_PRELOAD", k == "LD_LIBRARY_PATH", k == "OUT", k == "BENCH_ARGS", k == "THROTTLE_ARGS",
			k == "THROTTLE_VGPUD_ARGS",
			k == "PYTHONPATH", k == "PYTORCH_CUDA_ALLOC_CONF",
			strings.HasPrefix(k, "VGPU_"), strings.HasPrefix(k, "GPU_RUN_"), strings.HasPrefix(k, "MAKE"), k == "MFLAGS":
			continue // a make jobserver of `make test` must not leak into run.sh's make
		}
		env = append(env, kv)
	}
	sim := filepath.Join(root, "build", "simgpu")
	env = append(env,
		"PATH="+fakeBin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"LD_LIBRARY_PATH="+sim,
		"VGPU_SIM_STATE="+state,
		"OUT="+out,
		"GPU_RUN_LIBCUDA="+filepath.Join(sim, "libcuda.so.1"),
		"GPU_RUN_LIBNVML="+filepath.Join(sim, "libnvidia-ml.so.1"),
		"BENCH_ARGS=--iters 20 --batch 10 --warmup 2 --rounds 1 --init-rounds 1 --procs 1,2",
		// 2 ms kernels on this node (see above); short cells.
		"THROTTLE_ARGS=--waves 20 --warmup 2s --window 2s",
		// The vgpud-mode cells at a fifth of their length (about 12 s in all).
		"THROTTLE_VGPUD_ARGS=--scale 0.2",
		"PYTHONPATH="+filepath.Join(root, "test", "gpu", "rehearsal", "faketorch"),
		// Other packages' tests run build/ programs meanwhile: never rebuild under them.
		"GPU_RUN_FORCE_BUILD=0",
		// The stand-in nvidia-smi does not go through NVML: recorded, not judged.
		"GPU_RUN_SMI_STANDIN=1",
		// The suite has its own tests (bench, cmd/vgpu-bench) and takes minutes.
		"GPU_RUN_SUITE=0",
		// The node's GPU CDI spec, as nvidia-ctk cdi generate writes a real node's.
		"GPU_RUN_CDI_GENERATE="+filepath.Join(root, "bin", "vgpu-sim")+" cdi-spec --state "+state+
			" --lib-dir "+sim+" --cdi-dir",
	)
	return env
}

// checkSummary checks run.sh's summary and files in out: every check that can
// pass here passed, the others were skipped saying why, the tables included.
func checkSummary(t *testing.T, out, failMsg string) {
	t.Helper()
	summary := filepath.Join(out, "summary.md")
	require.FileExists(t, summary, failMsg)
	rows := summaryRows(t, summary)
	for _, name := range []string{"environment", "build", "build-driver-check", "context-footprint",
		"driver-linked", "driver-dlsym", "driver-procaddr", "driver-vmm", "driver-async",
		"cprog-linked-alloc", "cprog-gpa-alloc", "hooks-gpaself", "four-processes", "overhead",
		"throttle-real", "throttle-vgpud-real"} {
		require.Equal(t, "PASS", rows[name], "check %s\n%s", name, failMsg)
	}
	for _, label := range []string{"default", "expandable_segments", "backend"} {
		require.Equal(t, "PASS", rows["torch-"+label], "torch check %s\n%s", label, failMsg)
	}
	// The daemon path: a real vgpud on the (simulated) NVML, torch under vgpuctl run,
	// elastic memory granted with --memory-max and refused without.
	for _, name := range []string{"vgpud", "vgpud-torch", "elastic-grant", "elastic-no-max"} {
		require.Equal(t, "PASS", rows[name], "check %s\n%s", name, failMsg)
	}
	// Skipped here, each for its reason (in the summary's detail).
	skips := map[string]string{
		"nvidia-smi-slice": "stand-in",
		"suite":            "GPU_RUN_SUITE=0",
	}
	if containersHere() {
		require.Equal(t, "PASS", rows["container"], "container check (this machine has what it needs)\n%s", failMsg)
	} else {
		skips["container"] = "no container runtime"
	}
	sum, err := os.ReadFile(summary)
	require.NoError(t, err)
	for name, why := range skips {
		require.Equal(t, "SKIP", rows[name], "check %s\n%s", name, failMsg)
		require.Regexp(t, `\| `+name+` \| SKIP \| [^\n]*`+why, string(sum), "check %s says why it was skipped", name)
	}
	for name, status := range rows {
		if _, skipped := skips[name]; !skipped {
			require.Equal(t, "PASS", status, "check %s\n%s", name, failMsg)
		}
	}
	require.Contains(t, string(sum), "simulated", "the summary names the card")
	require.Contains(t, string(sum), "| 60-vgpud |", "the summary gives each step's time")
	require.Contains(t, string(sum), "256 MiB", "the context footprint is the sim's")
	require.Contains(t, string(sum), "## vgpu overhead benchmark", "the overhead table is included")
	require.Contains(t, string(sum), "## vgpu throttle benchmark: real GPU", "the throttle table is included")
	require.Contains(t, string(sum), "| pairs | graph | 30.00 / 70.00 |", "every throttle cell ran")
	require.Contains(t, string(sum), "## vgpu throttle benchmark: NVIDIA H100 80GB HBM3 (simulated), through vgpud",
		"the vgpud-mode throttle table is included")
	require.Contains(t, string(sum), "| churn | c50 | 50 |", "every vgpud-mode throttle cell ran")
	require.Contains(t, string(sum), "achieved from nvml",
		"NVML names the tenants' pids on the simulated node, so the controller steps on NVML as vgpud does")
	for _, f := range []string{"env.txt", "overhead-real.json", "overhead-real.md", "driver_check-linked.json",
		"hooks-gpaself.txt", "throttle-real.json", "throttle-real.md", "throttle-vgpud-real.json",
		"throttle-vgpud-real.md", "nvidia-smi-query.txt", "nvidia-smi-bindings.txt",
		"nvidia-smi-libs.txt", "nvidia-smi-elf.txt", "vgpud.log", "torch-vgpuctl.json", "elastic-grant.txt", "elastic-no-max.txt"} {
		require.FileExists(t, filepath.Join(out, f))
	}
}
