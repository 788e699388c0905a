package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// GoalRuntimeAddedMS is what vgpu-runtime may add to a container's creation
// (median). Reported, never asserted.
const GoalRuntimeAddedMS = 20.0

// RuntimeOptions configures RunRuntime. DefaultRuntimeOptions gives the values
// `vgpu-bench runtime` uses.
type RuntimeOptions struct {
	// Root is the repository root holding bin/ and build/ ("" = found from the
	// working directory or the executable).
	Root string
	// Creates is the number of timed creates per variant, after Warmup
	// untimed ones.
	Creates int
	Warmup  int
	// Runc is the runc binary ("runc": looked up in PATH).
	Runc         string
	StartTimeout time.Duration
	// TempDir holds the bundle, the node and vgpud's state ("" = the
	// system's temp dir); its filesystem decides what vgpud's fsyncs cost.
	TempDir  string
	KeepTemp bool
	Log      io.Writer
}

// DefaultRuntimeOptions returns the defaults of `vgpu-bench runtime`.
func DefaultRuntimeOptions() RuntimeOptions {
	return RuntimeOptions{Creates: 20, Warmup: 2, Runc: "runc", StartTimeout: 30 * time.Second}
}

// RuntimeConfig records how the figures were taken.
type RuntimeConfig struct {
	Creates     int    `json:"creates"`
	Warmup      int    `json:"warmup"`
	Runc        string `json:"runc"`
	RuncVersion string `json:"runc_version"`
	StateFS     string `json:"state_fs"`
	SampleNotes string `json:"sample_notes"`
}

// RuntimeReport is the result of `vgpu-bench runtime`: wall time of `create`
// (ms) through plain runc, through vgpu-runtime for a container without a
// request (pass-through) and with one (slice, spec edit, runc as a child).
type RuntimeReport struct {
	Benchmark   string        `json:"benchmark"` // "runtime"
	Machine     Machine       `json:"machine"`
	Config      RuntimeConfig `json:"config"`
	Runc        Summary       `json:"runc_create_ms"`
	Passthrough Summary       `json:"passthrough_create_ms"`
	VGPU        Summary       `json:"vgpu_create_ms"`
	// Added figures are differences of medians.
	AddedMS            float64  `json:"added_median_ms"`
	PassthroughAddedMS float64  `json:"passthrough_added_median_ms"`
	GoalMS             float64  `json:"goal_added_median_ms"`
	Met                bool     `json:"met"`
	AllMet             bool     `json:"all_met"`
	Notes              []string `json:"notes,omitempty"`
}

// Evaluate fills in the added figures, the goal and the verdict.
func (r *RuntimeReport) Evaluate() {
	r.AddedMS = r.VGPU.Median - r.Runc.Median
	r.PassthroughAddedMS = r.Passthrough.Median - r.Runc.Median
	r.GoalMS = GoalRuntimeAddedMS
	r.Met = r.VGPU.N > 0 && r.Runc.N > 0 && r.AddedMS <= GoalRuntimeAddedMS
	r.AllMet = r.Met
}

// Markdown renders the report.
func (r *RuntimeReport) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# vgpu runtime benchmark: container creation, driver %s\n\n", orDash(m.Driver))
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- %s, %s, commit %s; %s\n", m.GoVersion, m.Date, orDash(m.Commit), orDash(r.Config.RuncVersion))
	fmt.Fprintf(&b, "- %s\n\n", r.Config.SampleNotes)
	b.WriteString("| create through | n | median | p99 | min | max | added (median) | goal | result |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	row := func(name string, s Summary, added string, goal string, res string) {
		fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f | %.2f | %s | %s | %s |\n",
			name, s.N, s.Median, s.P99, s.Min, s.Max, added, goal, res)
	}
	row("runc", r.Runc, "—", "—", "—")
	row("vgpu-runtime, no request (pass-through)", r.Passthrough, fmt.Sprintf("%+.2f", r.PassthroughAddedMS), "—", "—")
	row("vgpu-runtime, vgpu.io/memory=1GiB", r.VGPU, fmt.Sprintf("%+.2f", r.AddedMS),
		fmt.Sprintf("≤ %.0f", r.GoalMS), yesNo(r.Met))
	b.WriteString("\n")
	writeVerdict(&b, r.AllMet, r.Notes)
	return b.String()
}

// RunRuntime times `runc create` of one prepared bundle through runc and
// through vgpu-runtime (needs root: runc creates real containers).
func RunRuntime(ctx context.Context, opts RuntimeOptions) (*RuntimeReport, error) {
	if opts.Creates < 1 || opts.Creates > 10000 || opts.Warmup < 0 {
		return nil, fmt.Errorf("runtime options: creates %d (1..10000), warmup %d (>= 0)", opts.Creates, opts.Warmup)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the runtime benchmark creates real containers with runc: run it as root")
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	root, err := repositoryRoot(opts.Root, findDaemonRoot)
	if err != nil {
		return nil, err
	}
	runc, err := exec.LookPath(opts.Runc)
	if err != nil {
		return nil, fmt.Errorf("runc: %w (Debian: apt-get install runc)", err)
	}
	art, err := runtimeArtifacts(root)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(opts.TempDir, "vgpu-bench-runtime-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	rep := newRuntimeReport(ctx, root, runc, tmp, opts)

	// The simulated node and vgpud.
	node := filepath.Join(tmp, "node")
	if err := simgpu.Init(node, simgpu.Config{Devices: 1, Memory: 80 << 30, SMs: 132}); err != nil {
		return nil, fmt.Errorf("creating the simulated node: %w", err)
	}
	sock := filepath.Join(tmp, "vgpud.sock")
	stopVgpud, client, err := startVgpud(ctx, art["bin/vgpud"], filepath.Join(root, "build/simgpu"), node, sock,
		filepath.Join(tmp, "vgpud-state"), opts.StartTimeout)
	if err != nil {
		return nil, err
	}
	defer stopVgpud()
	defer client.Close()

	// The bundle: rootfs with one program, the spec from `runc spec`.
	bundle, specs, err := prepareBundle(ctx, runc, tmp, art["build/test/dl_tamper"])
	if err != nil {
		return nil, err
	}
	cfgPath, err := writeRuntimeConfig(root, tmp, runc, sock, node, art)
	if err != nil {
		return nil, err
	}
	variants := []runtimeVariant{
		{"runc", runc, specs.plain},
		{"passthrough", art["bin/vgpu-runtime"], specs.plain},
		{"vgpu", art["bin/vgpu-runtime"], specs.request},
	}
	samples, err := timeCreates(ctx, opts, tmp, bundle, cfgPath, variants, log)
	if err != nil {
		return nil, err
	}
	if err := allReleased(ctx, client); err != nil {
		return nil, err
	}
	rep.Runc, rep.Passthrough, rep.VGPU = Summarize(samples["runc"]), Summarize(samples["passthrough"]), Summarize(samples["vgpu"])
	rep.Evaluate()
	if !rep.Met && rep.Config.StateFS != "tmpfs" {
		rep.Notes = append(rep.Notes, "the create through vgpu-runtime includes vgpud's fsyncs of the new slice on "+
			rep.Config.StateFS+"; `--tmp /dev/shm` measures it without the storage")
	}
	fmt.Fprintf(log, "bench: runtime: runc %.2f ms, vgpu-runtime %.2f ms (added %+.2f ms), pass-through %+.2f ms\n",
		rep.Runc.Median, rep.VGPU.Median, rep.AddedMS, rep.PassthroughAddedMS)
	return rep, nil
}

// newRuntimeReport is the report's machine and configuration, before any
// create.
func newRuntimeReport(ctx context.Context, root, runc, tmp string, opts RuntimeOptions) *RuntimeReport {
	rep := &RuntimeReport{Benchmark: "runtime", Machine: hostMachine(ctx, root, time.Now())}
	rep.Machine.Driver = "simgpu"
	rep.Config = RuntimeConfig{Creates: opts.Creates, Warmup: opts.Warmup, Runc: runc,
		RuncVersion: firstLine(ctx, runc, "--version"), StateFS: fsType(tmp),
		SampleNotes: "wall time of one `create --bundle B ID` (its process started to exited) of the same bundle " +
			"(a tiny rootfs, runc's default spec) through each binary, the three variants interleaved; every container " +
			"deleted (untimed) before the next create. vgpu-runtime with a request asks a real vgpud on a simulated " +
			"node for the slice (which fsyncs its records on state_fs), edits config.json and runs runc as a child; " +
			"without a request it exec()s runc."}
	return rep
}

// allReleased checks that vgpud holds no slice once every container is
// deleted: the poststop hook released each, or the figures timed a leak.
func allReleased(ctx context.Context, client *api.Client) error {
	left, err := client.Slices(ctx)
	if err != nil {
		return fmt.Errorf("vgpud slices: %w", err)
	}
	if len(left) != 0 {
		return fmt.Errorf("%d slices left after every container was deleted: the poststop hook did not release them", len(left))
	}
	return nil
}

// runtimeArtifacts are the built files the benchmark runs, by their path
// under root.
func runtimeArtifacts(root string) (map[string]string, error) {
	art := map[string]string{}
	for _, a := range []string{"bin/vgpud", "bin/vgpu-runtime", "bin/vgpu-sim", "build/libvgpu.so", "build/simgpu/libcuda.so.1",
		"build/simgpu/libnvidia-ml.so.1", "build/test/dl_tamper"} {
		p := filepath.Join(root, a)
		if !fileExists(p) {
			return nil, fmt.Errorf("%s is missing: run `make build` first", p)
		}
		art[a] = p
	}
	return art, nil
}

// writeRuntimeConfig writes vgpu-runtime's config (VGPU_RUNTIME_CONFIG): the
// real runc, vgpud's socket, libvgpu and the simulated node's CDI spec
// (written by vgpu-sim cdi-spec, as an operator runs nvidia-ctk cdi generate).
func writeRuntimeConfig(root, tmp, runc, sock, node string, art map[string]string) (string, error) {
	cfgPath := filepath.Join(tmp, "runtime.json")
	cdiDir := filepath.Join(tmp, "cdi")
	out, err := exec.Command(filepath.Join(root, "bin/vgpu-sim"), "cdi-spec", "--state", node,
		"--lib-dir", filepath.Join(root, "build/simgpu"), "--cdi-dir", cdiDir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("vgpu-sim cdi-spec: %w: %s", err, out)
	}
	rcfg, _ := json.Marshal(map[string]any{
		"runc": runc, "socket": sock, "libvgpu": art["build/libvgpu.so"],
		"state_dir": filepath.Join(tmp, "runtime-state"), "cdi_spec_dirs": []string{cdiDir},
	})
	if err := os.WriteFile(cfgPath, rcfg, 0o644); err != nil {
		return "", fmt.Errorf("runtime config: %w", err)
	}
	return cfgPath, nil
}

// runtimeVariant is one way of creating the container: the binary run as
// runc and the bundle's config.json.
type runtimeVariant struct {
	name string
	bin  string
	spec []byte
}

// timeCreates times Warmup+Creates creates of each variant (the warm-up ones
// dropped), the variants interleaved; every container is deleted, untimed,
// before the next create. It returns the samples (ms) by variant name.
func timeCreates(ctx context.Context, opts RuntimeOptions, tmp, bundle, cfgPath string, variants []runtimeVariant,
	log io.Writer) (map[string][]float64, error) {
	runcRoot := filepath.Join(tmp, "runc-root")
	env := append(cleanEnv(), "VGPU_RUNTIME_CONFIG="+cfgPath)
	errFile, err := os.Create(filepath.Join(tmp, "stderr"))
	if err != nil {
		return nil, fmt.Errorf("stderr file: %w", err)
	}
	defer errFile.Close()
	samples := map[string][]float64{}
	total := opts.Warmup + opts.Creates
	fmt.Fprintf(log, "bench: runtime: %d creates per variant (%d warm-up)\n", total, opts.Warmup)
	for i := 0; i < total; i++ {
		// Rotate the order so that no variant always runs right after another.
		for k := range variants {
			v := variants[(i+k)%len(variants)]
			id := fmt.Sprintf("bench-%s-%d", v.name, i)
			if err := os.WriteFile(filepath.Join(bundle, "config.json"), v.spec, 0o644); err != nil {
				return nil, fmt.Errorf("bundle: %w", err)
			}
			ms, err := timeCommand(ctx, env, errFile, v.bin, "--root", runcRoot, "create", "--bundle", bundle, id)
			if err != nil {
				return nil, fmt.Errorf("%s create: %w", v.name, err)
			}
			if _, err := timeCommand(ctx, env, errFile, v.bin, "--root", runcRoot, "delete", "--force", id); err != nil {
				return nil, fmt.Errorf("%s delete: %w", v.name, err)
			}
			if i >= opts.Warmup {
				samples[v.name] = append(samples[v.name], ms)
			}
		}
	}
	return samples, nil
}

type benchSpecs struct{ plain, request []byte }

// prepareBundle makes a bundle dir with a rootfs holding prog and the shared
// libraries it needs, and the two config.json variants (with and without the
// vGPU request annotation).
func prepareBundle(ctx context.Context, runc, tmp, prog string) (string, benchSpecs, error) {
	var sp benchSpecs
	bundle := filepath.Join(tmp, "bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	files := map[string]string{"/bin/" + filepath.Base(prog): prog}
	out, err := exec.CommandContext(ctx, "ldd", prog).Output()
	if err != nil {
		return "", sp, fmt.Errorf("ldd %s: %w", prog, err)
	}
	arrow := regexp.MustCompile(`=>\s+(/\S+)`)
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		p := ""
		if m := arrow.FindStringSubmatch(line); m != nil {
			p = m[1]
		} else if strings.HasPrefix(line, "/") {
			p = strings.Fields(line)[0]
		}
		if p != "" {
			files[p] = p
		}
	}
	for dst, src := range files {
		real, err := filepath.EvalSymlinks(src)
		if err != nil {
			return "", sp, fmt.Errorf("rootfs: %w", err)
		}
		data, err := os.ReadFile(real)
		if err != nil {
			return "", sp, fmt.Errorf("rootfs: %w", err)
		}
		p := filepath.Join(rootfs, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", sp, fmt.Errorf("rootfs: %w", err)
		}
		if err := os.WriteFile(p, data, 0o755); err != nil {
			return "", sp, fmt.Errorf("rootfs: %w", err)
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return "", sp, fmt.Errorf("rootfs: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, runc, "spec", "--bundle", bundle)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", sp, fmt.Errorf("runc spec: %w: %s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", sp, fmt.Errorf("runc spec: %w", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return "", sp, fmt.Errorf("runc spec: %w", err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"/bin/" + filepath.Base(prog), "sleep"}
	spec["root"] = map[string]any{"path": rootfs, "readonly": false}
	if sp.plain, err = json.Marshal(spec); err != nil {
		return "", sp, err
	}
	spec["annotations"] = map[string]string{"vgpu.io/memory": "1GiB"}
	if sp.request, err = json.Marshal(spec); err != nil {
		return "", sp, err
	}
	return bundle, sp, nil
}

// timeCommand runs a command to completion and returns its wall time in ms.
// stdin and stdout are /dev/null and stderr a file, never a pipe: runc create
// hands its stdio to the container, which would hold a pipe open (and the
// wait for its end) until the container is deleted.
func timeCommand(ctx context.Context, env []string, errFile *os.File, bin string, args ...string) (float64, error) {
	if err := errFile.Truncate(0); err != nil {
		return 0, err
	}
	if _, err := errFile.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stderr = errFile
	t0 := time.Now()
	err := cmd.Run()
	ms := float64(time.Since(t0)) / 1e6
	if err != nil {
		msg, _ := os.ReadFile(errFile.Name())
		return 0, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(msg)))
	}
	return ms, nil
}

// cleanEnv is this process's environment without what would change how the
// programs under test behave.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || k == "LD_LIBRARY_PATH" || strings.HasPrefix(k, "VGPU_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func firstLine(ctx context.Context, bin string, args ...string) string {
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		return ""
	}
	l, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(l)
}

// startVgpud starts bin/vgpud on a simulated node and waits until it answers.
func startVgpud(ctx context.Context, vgpud, simLibDir, node, sock, state string, timeout time.Duration) (func(), *api.Client, error) {
	var out bytes.Buffer
	cmd := exec.Command(vgpud, "--state-dir", state, "--socket", sock, "--metrics-addr", "",
		"--enforcer-mode", "report", "--log-level", "warn")
	cmd.Env = append(cleanEnv(), "LD_LIBRARY_PATH="+simLibDir, "VGPU_SIM_STATE="+node)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting vgpud: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	client := api.NewClient(sock)
	deadline := time.Now().Add(timeout)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := client.Health(hctx)
		cancel()
		if err == nil {
			return stop, client, nil
		}
		select {
		case <-exited:
			return nil, nil, fmt.Errorf("vgpud exited before answering: %s", strings.TrimSpace(out.String()))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return nil, nil, fmt.Errorf("vgpud did not answer on %s within %s: %w", sock, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
