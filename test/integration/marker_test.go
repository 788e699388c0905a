package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// Completion markers (libvgpu/src/marker.c): token_done, the sampled device time
// per token, the in-flight bound and daemonless costing, on simulated nodes whose
// wave time differs from libvgpu's nominal VGPU_TOKEN_WAVE_NS (10 us). Each test
// runs build/test/throttle_load under libvgpu and reads the simulator's truth.

const (
	mkSMs  = 4
	mkGrid = "400" // 100 waves per kernel
)

type mkNode struct {
	t     *testing.T
	root  string
	node  string
	slice string
	usage *shm.UsageRegion
}

// newMkNode makes a node with nsPerBlock per wave and a 2 s device queue.
func newMkNode(t *testing.T, nsPerBlock uint64) *mkNode {
	t.Helper()
	r := root(t)
	dir := t.TempDir()
	n := &mkNode{t: t, root: r, node: filepath.Join(dir, "node"), slice: filepath.Join(dir, "slice")}
	ctxMem := uint64(0)
	require.NoError(t, simgpu.Init(n.node, simgpu.Config{Devices: 1, Memory: 8 * GiB, SMs: mkSMs,
		NsPerBlock: nsPerBlock, ContextMemory: &ctxMem, MaxBacklog: 2 * time.Second}))
	return n
}

// vgpuctlSlice makes the slice as an operator without vgpud does.
func (n *mkNode) vgpuctlSlice(computePct string) {
	n.t.Helper()
	bin := filepath.Join(n.root, "bin/vgpuctl")
	if _, err := os.Stat(bin); err != nil {
		n.t.Fatalf("bin/vgpuctl is missing: run `make build` (%v)", err)
	}
	out, err := exec.Command(bin, "slice", "create", "--dir", n.slice, "--memory", "4GiB",
		"--compute", computePct).CombinedOutput()
	require.NoError(n.t, err, "vgpuctl slice create: %s", out)
	n.open()
}

// managedSlice makes a slice as vgpud would: F_MANAGED, nominal costs, a static
// rate for shareBP.
func (n *mkNode) managedSlice(shareBP uint32) {
	n.t.Helper()
	rate, burst := shm.StaticTokenBucket(shareBP)
	require.NoError(n.t, shm.CreateSlice(n.slice, shm.SliceSpec{ID: "mk", Slots: 16,
		Flags: shm.BudgetFlagManaged, Devices: []shm.DeviceBudget{{MemoryLimit: 4 * GiB,
			ComputeShareBP: shareBP, TokenRate: rate, TokenBurst: burst}}}))
	n.open()
}

func (n *mkNode) open() {
	u, err := shm.OpenUsage(filepath.Join(n.slice, shm.UsageFile))
	require.NoError(n.t, err)
	n.t.Cleanup(func() { _ = u.Close() })
	n.usage = u
}

func (n *mkNode) env(extra ...string) env {
	return env{root: n.root, node: n.node, slice: n.slice, preload: true,
		extra: append([]string{"VGPU_FAIL_MODE=refuse"}, extra...)}
}

func (n *mkNode) status() simgpu.DeviceStatus {
	st, err := simgpu.Status(n.node)
	require.NoError(n.t, err)
	return st.Devices[0]
}

// procBusy is the device time the simulator ran for pid.
func (n *mkNode) procBusy(pid int) uint64 {
	for _, p := range n.status().Processes {
		if p.PID == pid {
			return p.BusyNs
		}
	}
	return 0
}

// Daemonless accuracy: a slice made by `vgpuctl slice create --compute 30` (no
// vgpud) gets 30% of the device whatever a wave really costs — 5x cheaper or 8x
// dearer than the nominal 10 us — because libvgpu charges the device-ns it
// measured with its markers. (Charging the nominal cost, it measured 6% and 100%.)
func TestMarkersDaemonlessShare(t *testing.T) {
	if testbuild.Custom() {
		t.Skip("timing bounds: not under the sanitizer build")
	}
	const warm, window = 1500 * time.Millisecond, 5 * time.Second
	for _, nspb := range []uint64{2000, 80000} {
		for _, mode := range []string{"flood", "sync"} {
			name := fmt.Sprintf("%dns-per-wave/%s", nspb, mode)
			nspb, mode := nspb, mode
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				n := newMkNode(t, nspb)
				n.vgpuctlSlice("30")
				secs := (warm + window + 500*time.Millisecond).Seconds()
				p := start(t, n.env(), "throttle_load", mode, strconv.FormatFloat(secs, 'f', 1, 64),
					"--grid", mkGrid)
				p.expect("READY")
				time.Sleep(warm)
				b0, t0 := n.procBusy(p.pid()), time.Now()
				time.Sleep(window)
				b1, t1 := n.procBusy(p.pid()), time.Now()
				p.expect("DONE")
				got := float64(b1-b0) / float64(t1.Sub(t0).Nanoseconds()) * 100
				c := n.usage.Throttle(0)
				t.Logf("%s: %.1f%% of the device over %v (target 30%%); %d launches; sampled "+
					"%.2f device-ns per token charged (tokens are device-ns once learnt); in-flight waits %v",
					name, got, t1.Sub(t0).Round(time.Millisecond), c.Launches,
					float64(c.SampledNs)/float64(c.SampledTokens),
					time.Duration(c.InflightWaitedNs).Round(time.Millisecond))
				require.InDelta(t, 30, got, 5, "%s: share %.1f%%, want 30±5", name, got)
			})
		}
	}
}

// token_done advances and never passes token_spent; the sampled device time per
// token is the node's (ns per wave / VGPU_TOKEN_WAVE_NS) on a managed slice,
// where tokens stay nominal. Kernel launches, graph launches (their begin / end
// events bracket the whole graph) and the per-thread default stream alike.
func TestMarkersCounters(t *testing.T) {
	const nspb = 40000 // 4 device-ns per nominal token
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"cuLaunchKernel", []string{"flood", "2.5", "--grid", mkGrid}},
		{"cuGraphLaunch", []string{"graph", "2.5", "--grid", "1600", "--nodes", "4"}},
		{"cuLaunchKernelEx_ptsz", []string{"ex", "2.5", "--grid", mkGrid, "--ptsz"}},
	} {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newMkNode(t, nspb)
			n.managedSlice(2000) // 20% of nominal tokens: 80% of this device
			p := start(t, n.env(), "throttle_load", tc.args...)
			p.expect("READY")
			var last uint64
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				c := n.usage.Throttle(0)
				require.LessOrEqual(t, c.Done, c.Spent, "token_done passed token_spent")
				require.GreaterOrEqual(t, c.Done, last, "token_done went back")
				last = c.Done
				time.Sleep(20 * time.Millisecond)
			}
			p.expect("DONE")
			c := n.usage.Throttle(0)
			require.NotZero(t, c.Done, "markers completed")
			require.LessOrEqual(t, c.Done, c.Spent)
			require.NotZero(t, c.SampledTokens)
			perToken := float64(c.SampledNs) / float64(c.SampledTokens)
			want := float64(nspb) / 1e4
			t.Logf("%s: token_done %d of %d spent; sampled %.3f ns per token over %d tokens (node: %.3f)",
				tc.name, c.Done, c.Spent, perToken, c.SampledTokens, want)
			require.InEpsilon(t, want, perToken, 0.10, "sampled ns per token")
		})
	}
}

// The in-flight bound: a tenant whose rate lets it launch 4x what the device runs
// (a managed slice before vgpud has corrected its rate) keeps at most about the
// bound (50 ms) plus a marker stride of device time queued; without the bound
// (VGPU_INFLIGHT_MS=0) its queue grows to the device's 2 s.
func TestMarkersInflightBound(t *testing.T) {
	if testbuild.Custom() {
		t.Skip("timing bounds: not under the sanitizer build")
	}
	const nspb = 40000
	stride := time.Duration(shm.MarkerStride * nspb / 1e4)
	depth := map[string]time.Duration{}
	var mu sync.Mutex
	for _, tc := range []struct {
		name  string
		extra []string
	}{{"bound 50ms", nil}, {"no bound", []string{"VGPU_INFLIGHT_MS=0"}}} {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newMkNode(t, nspb)
			n.managedSlice(9900)
			p := start(t, n.env(tc.extra...), "throttle_load", "flood", "3.5", "--grid", mkGrid)
			p.expect("READY")
			time.Sleep(time.Second)
			var max uint64
			for i := 0; i < 20; i++ {
				if b := n.status().BacklogNs; b > max {
					max = b
				}
				time.Sleep(100 * time.Millisecond)
			}
			c := n.usage.Throttle(0)
			t.Logf("%s: deepest queue %v (stride %v); launchers waited %v for in-flight work",
				tc.name, time.Duration(max).Round(time.Millisecond), stride,
				time.Duration(c.InflightWaitedNs).Round(time.Millisecond))
			mu.Lock()
			depth[tc.name] = time.Duration(max)
			mu.Unlock()
			if tc.extra == nil {
				require.LessOrEqual(t, time.Duration(max), 50*time.Millisecond+3*stride+20*time.Millisecond,
					"queue deeper than the in-flight bound")
				require.NotZero(t, c.InflightWaitedNs, "launchers waited for the bound")
			} else {
				require.GreaterOrEqual(t, time.Duration(max), time.Second, "without the bound the queue fills")
			}
			p.kill()
		})
	}
}

// Markers across contexts: a launch in another context than the ring's, a context
// destroyed with markers pending, the primary context released and retained
// again (marker_ctx.c). Runs sanitized under `make sanitize`: a marker event used
// after its context went away would show there.
func TestMarkersAcrossContexts(t *testing.T) {
	n := newMkNode(t, 10000)
	n.managedSlice(5000)
	lines, stderr, code := run(t, n.env(), "marker_ctx")
	require.Equal(t, 0, code, "marker_ctx: %s", stderr)
	lineWith(t, lines, "DONE")
	c := n.usage.Throttle(0)
	require.NotZero(t, c.Done, "markers completed")
	require.LessOrEqual(t, c.Done, c.Spent)
	require.NotZero(t, c.SampledTokens)
	perToken := float64(c.SampledNs) / float64(c.SampledTokens)
	t.Logf("token_done %d of %d spent; sampled %.3f ns per token", c.Done, c.Spent, perToken)
	require.InEpsilon(t, 1.0, perToken, 0.10, "sampled ns per token on a nominal-speed node")
	require.Empty(t, vgpuLines(stderr), "libvgpu said nothing")
}
