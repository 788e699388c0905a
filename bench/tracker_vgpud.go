package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// whatOpenVgpud is the latency row from a device open to vgpud listing the
// process: the tracker, its poll, and vgpud's API together.
const whatOpenVgpud = "open → vgpud"

// vgpudPoll is how often the benchmark asks vgpud for its processes: fine
// enough that it adds little to a latency measured in milliseconds.
const vgpudPoll = 200 * time.Microsecond

// vgpudLatency starts bin/vgpud (report mode, eBPF tracker following the
// stand-in's major) on a fresh simulated node and measures, n times, from a
// child's stamp just before it opens the stand-in node to the first
// GET /v1/processes that lists the child.
func (e *benchEnv) vgpudLatency(ctx context.Context, n int) (TrackerLatencyRow, error) {
	row := TrackerLatencyRow{What: whatOpenVgpud, Tracker: trackerEBPF}
	root, err := repositoryRoot(e.opts.Root, findDaemonRoot)
	if err != nil {
		return row, err
	}
	vgpud := filepath.Join(root, "bin", "vgpud")
	simLib := filepath.Join(root, "build", "simgpu", "libnvidia-ml.so.1")
	for _, f := range []string{vgpud, simLib} {
		if !fileExists(f) {
			return row, fmt.Errorf("%s is missing: run `make build` first", f)
		}
	}
	dir := filepath.Join(filepath.Dir(e.node), "vgpud")
	node := filepath.Join(dir, "node")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row, fmt.Errorf("vgpud dir: %w", err)
	}
	if err := simgpu.Init(node, simgpu.Config{Devices: 1, Memory: 16 << 30, SMs: 4}); err != nil {
		return row, fmt.Errorf("simulated node: %w", err)
	}
	d, err := startBenchVgpud(ctx, DaemonOptions{}, vgpud, simLib, node, dir,
		"--tracker", trackerEBPF, "--tracker-majors", strconv.FormatUint(uint64(e.dev.Major), 10))
	if err != nil {
		return row, err
	}
	defer func() { _ = d.stop() }()
	defer d.client.Close()
	if err := d.awaitHealth(ctx, 30*time.Second); err != nil {
		return row, err
	}
	fmt.Fprintf(e.log, "bench: ebpf open -> vgpud latency, %d samples\n", n)
	var ms []float64
	for i := 0; i < n; i++ {
		v, ok, err := e.vgpudSample(ctx, d.client)
		if err != nil {
			return row, err
		}
		if !ok {
			row.Missed++
			continue
		}
		ms = append(ms, v)
	}
	row.MS = Summarize(ms)
	return row, nil
}

// vgpudSample: one child opens the node; ms from its stamp to the first
// answer of vgpud that lists it (false: not within 2 s).
func (e *benchEnv) vgpudSample(ctx context.Context, c *api.Client) (float64, bool, error) {
	ch, err := startChild("bash", openScript, e.node)
	if err != nil {
		return 0, false, err
	}
	defer ch.end(false)
	pid := ch.cmd.Process.Pid
	line, err := ch.out.ReadString('\n')
	if err != nil {
		return 0, false, fmt.Errorf("open child %d said nothing (could it open %s?): %w", pid, e.node, err)
	}
	stamp, err := parseEpochRealtime(line)
	if err != nil {
		return 0, false, err
	}
	listed := func(p api.TrackedProcess) bool { return p.PID == pid }
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		ps, err := c.Processes(ctx)
		if err != nil {
			return 0, false, fmt.Errorf("GET /v1/processes: %w", err)
		}
		if slices.ContainsFunc(ps.Processes, listed) {
			return float64(time.Now().UnixNano()-stamp) / 1e6, true, nil
		}
		if err := sleepCtx(ctx, vgpudPoll); err != nil {
			return 0, false, err
		}
	}
	return 0, false, nil
}
