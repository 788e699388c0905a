package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// allocRequest is the benchmark's request: a guaranteed slice with a 1%
// compute share, so that a batch of them fits on one GPU.
func allocRequest(opts DaemonOptions) api.AllocRequest {
	return api.AllocRequest{MemoryBytes: opts.AllocBytes, ComputePercent: 1, QoS: api.QoSGuaranteed}
}

// runAllocBench starts bin/vgpud on a simulated 2-GPU node and measures
// sequential allocations and releases through its unix socket.
func runAllocBench(ctx context.Context, opts DaemonOptions, root, dir string, log io.Writer) (*AllocResult, string, error) {
	vgpud := opts.Vgpud
	if vgpud == "" {
		vgpud = filepath.Join(root, "bin", "vgpud")
	}
	simLib := filepath.Join(root, "build", "simgpu", "libnvidia-ml.so.1")
	for _, f := range []string{vgpud, simLib} {
		if !fileExists(f) {
			return nil, "", fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("alloc bench dir: %w", err)
	}
	const devices = 2
	state := filepath.Join(dir, "node")
	if err := simgpu.Init(state, simgpu.Config{Devices: devices, Memory: 80 << 30, SMs: simSMs}); err != nil {
		return nil, "", fmt.Errorf("creating the simulated node: %w", err)
	}
	st, err := simgpu.Status(state)
	if err != nil {
		return nil, "", fmt.Errorf("simulated node: %w", err)
	}
	gpu := st.Devices[0].Name

	fmt.Fprintf(log, "bench: alloc: starting %s\n", vgpud)
	d, err := startBenchVgpud(ctx, opts, vgpud, simLib, state, dir)
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = d.stop() }() // the figures are in; a failed stop changes none
	defer d.client.Close()
	if err := d.awaitHealth(ctx, opts.StartTimeout); err != nil {
		return nil, "", err
	}
	devs, err := d.client.Devices(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("vgpud devices: %w", err)
	}
	res := &AllocResult{Devices: len(devs)}
	allocMS, releaseMS, err := d.timeAllocs(ctx, opts, log)
	if err != nil {
		return nil, "", err
	}
	// A vgpud that fails on the way out may not have kept what it acknowledged.
	if err := d.stop(); err != nil {
		return nil, "", fmt.Errorf("vgpud did not stop cleanly: %w: %s", err, strings.TrimSpace(d.out.String()))
	}
	res.Allocs, res.Releases = len(allocMS), len(releaseMS)
	res.Alloc, res.Release = Summarize(allocMS), Summarize(releaseMS)
	// Samples to the µs (round3): finer only lengthens the JSON.
	for _, v := range allocMS {
		res.AllocSamplesMS = append(res.AllocSamplesMS, round3(v))
	}
	for _, v := range releaseMS {
		res.ReleaseSamplesMS = append(res.ReleaseSamplesMS, round3(v))
	}
	fmt.Fprintf(log, "bench: alloc: median %.3f ms p99 %.3f ms\n", res.Alloc.Median, res.Alloc.P99)
	return res, gpu, nil
}

// benchVgpud is the alloc benchmark's running vgpud.
type benchVgpud struct {
	cmd     *exec.Cmd
	out     *strings.Builder // its stdout and stderr, for error messages
	sock    string
	exited  chan error
	stopped bool
	client  *api.Client
}

// startBenchVgpud starts vgpud in report mode on the simulated node state,
// its state dir, socket and CDI dirs under dir, with none of the caller's
// preloads; extra flags are appended.
func startBenchVgpud(ctx context.Context, opts DaemonOptions, vgpud, simLib, state, dir string,
	extra ...string,
) (*benchVgpud, error) {
	config, err := writeBenchVgpudConfig(simLib, state, dir)
	if err != nil {
		return nil, err
	}
	env := append(cleanEnv(), "LD_LIBRARY_PATH="+filepath.Dir(simLib), "VGPU_SIM_STATE="+state)
	return launchBenchVgpud(ctx, vgpud, config, simLib, env, dir, extra...)
}

// startRealBenchVgpud starts vgpud in report mode on the machine's NVML
// (nvmlLib, "" = through the loader), with the caller's driver environment
// (driverEnv) and its state dir, socket and CDI dirs under dir: slices are
// published into a private dir (never the host's /var/run/cdi, where a node's
// own vgpud keeps its specs), which holds no GPU spec, so publishing is
// skipped with a warning; `vgpuctl run` needs none.
func startRealBenchVgpud(ctx context.Context, vgpud, nvmlLib, libvgpu, dir string, extra ...string) (*benchVgpud, error) {
	cdiDir := filepath.Join(dir, benchCDIDir)
	if err := os.MkdirAll(cdiDir, 0o755); err != nil {
		return nil, fmt.Errorf("vgpud CDI dir: %w", err)
	}
	config, err := writeVgpudConfig(dir, map[string]any{"cdi_dir": cdiDir, "cdi_spec_dirs": []string{cdiDir},
		"libvgpu": libvgpu})
	if err != nil {
		return nil, err
	}
	return launchBenchVgpud(ctx, vgpud, config, nvmlLib, driverEnv(), dir, extra...)
}

// launchBenchVgpud starts vgpud with config and env in report mode, its state
// dir and socket under dir, on NVML library nvmlLib ("" = vgpud's default).
func launchBenchVgpud(ctx context.Context, vgpud, config, nvmlLib string, env []string, dir string,
	extra ...string,
) (*benchVgpud, error) {
	d := &benchVgpud{out: &strings.Builder{}, sock: filepath.Join(dir, "vgpud.sock"), exited: make(chan error, 1)}
	args := []string{"--config", config, "--state-dir", filepath.Join(dir, "state"),
		"--socket", d.sock, "--metrics-addr", "", "--enforcer-mode", "report", "--log-level", "warn"}
	if nvmlLib != "" {
		args = append(args, "--nvml-lib", nvmlLib)
	}
	cmd := exec.CommandContext(ctx, vgpud, append(args, extra...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting vgpud: %w", err)
	}
	d.cmd = cmd
	go func() { d.exited <- cmd.Wait() }()
	d.client = api.NewClient(d.sock)
	return d, nil
}

// benchCDIDir is where a benchmark's vgpud reads the node's CDI spec and
// publishes its slices, under its dir.
const benchCDIDir = "cdi"

// writeBenchVgpudConfig writes the config of a benchmark's vgpud into dir:
// the simulated node's CDI spec (build/simgpu's driver) in a private CDI dir,
// where vgpud also publishes every slice, as on a real node whose runtime
// reads /var/run/cdi — so an allocation costs what it costs there, and the
// benchmark never reads the host's CDI specs nor touches the host's
// /var/run/cdi (a vgpud removes the specs there it does not hold, which
// would be a node's own vgpud's). libvgpu is build/libvgpu.so beside
// build/simgpu.
func writeBenchVgpudConfig(simLib, state, dir string) (string, error) {
	libDir := filepath.Dir(simLib)
	cdiDir := filepath.Join(dir, benchCDIDir)
	if _, _, err := simgpu.WriteCDISpec(state, libDir, cdiDir); err != nil {
		return "", fmt.Errorf("the simulated node's CDI spec: %w", err)
	}
	return writeVgpudConfig(dir, map[string]any{"cdi_dir": cdiDir, "cdi_spec_dirs": []string{cdiDir},
		"libvgpu": filepath.Join(filepath.Dir(libDir), "libvgpu.so")})
}

// writeVgpudConfig writes cfg as dir/vgpud.json and returns its path.
func writeVgpudConfig(dir string, cfg map[string]any) (string, error) {
	data, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "vgpud.json")
	if err := atomicfile.Write(path, data, 0o644, atomicfile.Volatile); err != nil {
		return "", fmt.Errorf("vgpud config: %w", err)
	}
	return path, nil
}

// stop ends vgpud with SIGTERM (SIGKILL after 10 s) and returns how it
// exited; once stopped it does nothing.
func (d *benchVgpud) stop() error {
	if d.stopped {
		return nil
	}
	d.stopped = true
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		return err
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		return fmt.Errorf("vgpud did not stop on SIGTERM within 10s: %w", <-d.exited)
	}
}

// awaitHealth polls vgpud's health endpoint until it answers, vgpud exits or
// timeout passes.
func (d *benchVgpud) awaitHealth(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, herr := d.client.Health(hctx)
		cancel()
		if herr == nil {
			return nil
		}
		select {
		case err := <-d.exited:
			d.stopped = true
			return fmt.Errorf("vgpud exited before answering (%w): %s", err, strings.TrimSpace(d.out.String()))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("vgpud did not answer on %s within %s: %w: %s", d.sock, timeout,
				herr, strings.TrimSpace(d.out.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// timeAllocs times opts.Allocs sequential allocations, releasing them in
// batches of AllocBatch (each release timed too), after a few untimed
// requests (connection set-up, first-use paths). It returns the samples, ms.
func (d *benchVgpud) timeAllocs(ctx context.Context, opts DaemonOptions, log io.Writer) (allocMS, releaseMS []float64, err error) {
	var held []string
	release := func() error {
		for _, id := range held {
			t0 := time.Now()
			if err := d.client.Release(ctx, id); err != nil {
				return fmt.Errorf("release %s: %w", id, err)
			}
			releaseMS = append(releaseMS, float64(time.Since(t0))/1e6)
		}
		held = held[:0]
		return nil
	}
	for i := 0; i < 3; i++ {
		s, err := d.client.Alloc(ctx, allocRequest(opts))
		if err != nil {
			return nil, nil, fmt.Errorf("warm-up alloc: %w: %s", err, strings.TrimSpace(d.out.String()))
		}
		if err := d.client.Release(ctx, s.ID); err != nil {
			return nil, nil, fmt.Errorf("warm-up release: %w", err)
		}
	}
	fmt.Fprintf(log, "bench: alloc: %d allocations\n", opts.Allocs)
	for i := 0; i < opts.Allocs; i++ {
		t0 := time.Now()
		s, err := d.client.Alloc(ctx, allocRequest(opts))
		if err != nil {
			return nil, nil, fmt.Errorf("alloc %d/%d: %w", i+1, opts.Allocs, err)
		}
		allocMS = append(allocMS, float64(time.Since(t0))/1e6)
		held = append(held, s.ID)
		if len(held) == opts.AllocBatch {
			if err := release(); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := release(); err != nil {
		return nil, nil, err
	}
	return allocMS, releaseMS, nil
}
