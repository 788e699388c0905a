package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// The launch throttle on every launch path. Each case runs
// build/test/throttle_load on its own simulated node (4 SMs, 10 us per wave of
// blocks: libvgpu's nominal wave time, so a static rate is exact) in a slice
// whose budget grants 10% of the device, and reads the device time the
// simulated driver recorded. A launch path that escaped the throttle would run
// at the device's full speed (the unthrottled baseline is checked too). Bounds
// are generous: a loaded CI machine may run a program late, never make the
// simulated device faster.

const (
	thrSMs     = 4
	thrSeconds = 1.5
	// thrShareBP: 10% of the device.
	thrShareBP = 1000
	// At most this fraction of the device with a 10% rate (10% plus the bucket's
	// initial burst, plus room for timing noise), at least this much (the program
	// did run).
	thrMax = 0.25
	thrMin = 0.03
	// An unthrottled baseline keeps the device at least this busy.
	thrBaseline = 0.6
)

type thrNode struct {
	t      *testing.T
	root   string
	node   string
	slice  string
	budget *shm.BudgetRegion
	usage  *shm.UsageRegion
}

// newThrNode makes a node and a slice whose device 0 runs at rate (tokens/s,
// 0 = not throttled).
func newThrNode(t *testing.T, shareBP uint32) *thrNode {
	t.Helper()
	r := root(t)
	if _, err := os.Stat(filepath.Join(r, "build/test/throttle_load")); err != nil {
		t.Fatalf("build/test/throttle_load is missing: run `make build` (%v)", err)
	}
	dir := t.TempDir()
	n := &thrNode{t: t, root: r, node: filepath.Join(dir, "node"), slice: filepath.Join(dir, "slice")}
	ctxMem := uint64(0)
	require.NoError(t, simgpu.Init(n.node, simgpu.Config{Devices: 1, Memory: 8 * GiB, SMs: thrSMs,
		ContextMemory: &ctxMem}))
	rate, burst := shm.StaticTokenBucket(shareBP)
	require.NoError(t, shm.CreateSlice(n.slice, shm.SliceSpec{ID: "thr", Slots: 16,
		Devices: []shm.DeviceBudget{{MemoryLimit: 4 * GiB, ComputeShareBP: shareBP,
			TokenRate: rate, TokenBurst: burst}}}))
	b, err := shm.OpenBudget(filepath.Join(n.slice, shm.BudgetFile), true)
	require.NoError(t, err)
	u, err := shm.OpenUsage(filepath.Join(n.slice, shm.UsageFile))
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close(); _ = u.Close() })
	n.budget, n.usage = b, u
	return n
}

func (n *thrNode) env() env {
	return env{root: n.root, node: n.node, slice: n.slice, preload: true, extra: []string{"VGPU_FAIL_MODE=refuse"}}
}

// busy is the device time the node's device has run so far (every process,
// exited ones included).
func (n *thrNode) busy() uint64 {
	st, err := simgpu.Status(n.node)
	require.NoError(n.t, err)
	return st.Devices[0].BusyNs
}

// load runs throttle_load MODE for thrSeconds and returns the fraction of the
// device it used over its launch loop.
func (n *thrNode) load(args ...string) float64 {
	n.t.Helper()
	b0 := n.busy()
	lines, stderr, code := run(n.t, n.env(), "throttle_load", append([]string{args[0],
		strconv.FormatFloat(thrSeconds, 'f', -1, 64)}, args[1:]...)...)
	require.Equal(n.t, 0, code, "throttle_load %v: %s", args, stderr)
	lineWith(n.t, lines, "DONE")
	return float64(n.busy()-b0) / (thrSeconds * 1e9)
}

// The grids: 100 waves per kernel (1 ms on this node); graphs of 4 nodes of 100
// waves each, so a graph costs 4 ms — more than the cost libvgpu charges a graph
// it failed to learn (100 waves), which would therefore show up as too much work.
var thrPaths = []struct {
	name string
	args []string
}{
	{"cuLaunchKernel", []string{"flood", "--grid", "400"}},
	{"cuLaunchKernel_ptsz", []string{"flood", "--grid", "400", "--ptsz"}},
	{"cuLaunchKernel+sync", []string{"sync", "--grid", "400"}},
	{"cuLaunchKernelEx", []string{"ex", "--grid", "400"}},
	{"cuLaunchKernelEx_ptsz", []string{"ex", "--grid", "400", "--ptsz"}},
	{"cuLaunchCooperativeKernel", []string{"coop", "--grid", "128"}},
	{"cuLaunchCooperativeKernel_ptsz", []string{"coop", "--grid", "128", "--ptsz"}},
	{"cuGraphLaunch", []string{"graph", "--grid", "1600", "--nodes", "4"}},
	{"cuGraphLaunch_ptsz", []string{"graph", "--grid", "1600", "--nodes", "4", "--ptsz"}},
	{"cuGraphLaunch+sync", []string{"graphsync", "--grid", "1600", "--nodes", "4"}},
	{"mixed paths, 2 threads", []string{"mix", "--grid", "400", "--threads", "2"}},
	// The pre-4.0 launches (cuLaunch: one block, so one wave per launch) and the
	// deprecated multi-device cooperative launch.
	{"cuLaunch", []string{"legacy"}},
	{"cuLaunchGrid", []string{"grid", "--grid", "400"}},
	{"cuLaunchGridAsync", []string{"gridasync", "--grid", "400"}},
	{"cuLaunchCooperativeKernelMultiDevice", []string{"multidev", "--grid", "128"}},
}

// Every launch path is held to the slice's rate.
func TestThrottleEveryLaunchPath(t *testing.T) {
	for _, p := range thrPaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			n := newThrNode(t, thrShareBP)
			got := n.load(p.args...)
			require.LessOrEqual(t, got, thrMax, "%s escaped the throttle: %.1f%% of the device with a 10%% rate",
				p.name, got*100)
			require.GreaterOrEqual(t, got, thrMin, "%s hardly ran: %.1f%% of the device", p.name, got*100)
			c := n.usage.Throttle(0)
			require.NotZero(t, c.Spent, "the bucket was charged")
			require.NotZero(t, c.ThrottledNs, "launchers waited for tokens")
		})
	}
}

// Without a rate the same programs keep the device busy: the bound above means
// something.
func TestThrottleBaselineUnthrottled(t *testing.T) {
	for _, i := range []int{0, 3, 5, 7, 11, 12, 13, 14} {
		p := thrPaths[i]
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			n := newThrNode(t, shm.MaxShareBP) // the whole device: rate 0
			got := n.load(p.args...)
			require.GreaterOrEqual(t, got, thrBaseline, "%s unthrottled ran only %.1f%%", p.name, got*100)
			require.Zero(t, n.usage.Throttle(0).Spent, "no rate: the bucket is not touched")
		})
	}
}

// One bucket per slice: two processes of the slice share the rate.
func TestThrottleSharedByTheSlicesProcesses(t *testing.T) {
	n := newThrNode(t, thrShareBP)
	b0 := n.busy()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lines, stderr, code := run(t, n.env(), "throttle_load", "flood", fmt.Sprint(thrSeconds), "--grid", "400")
			if code != 0 {
				t.Errorf("throttle_load: exit %d: %s", code, stderr)
				return
			}
			lineWith(t, lines, "DONE")
		}()
	}
	wg.Wait()
	got := float64(n.busy()-b0) / (thrSeconds * 1e9)
	require.LessOrEqual(t, got, thrMax, "two processes together: %.1f%%", got*100)
}

// vgpud changes the rate of running processes through the budget: a process
// started unthrottled is throttled once a rate is set, and freed when it is
// lifted again (the gate re-reads the budget when its generation moves).
func TestThrottleRateChangeReachesRunningProcess(t *testing.T) {
	n := newThrNode(t, shm.MaxShareBP)
	p := start(t, n.env(), "throttle_load", "flood", "6", "--grid", "400")
	p.expect("READY")
	time.Sleep(300 * time.Millisecond)

	rate, burst := shm.StaticTokenBucket(thrShareBP)
	require.NoError(t, n.budget.SetTokenBucket(0, rate, burst))
	// What was queued before the change drains first (the simulated device's
	// queue runs up to a second ahead); then the rate holds.
	time.Sleep(1500 * time.Millisecond)
	b0, t0 := n.busy(), time.Now()
	time.Sleep(1500 * time.Millisecond)
	got := float64(n.busy()-b0) / float64(time.Since(t0).Nanoseconds())
	require.LessOrEqual(t, got, thrMax, "after the rate was set: %.1f%%", got*100)

	require.NoError(t, n.budget.SetTokenBucket(0, 0, 0))
	time.Sleep(200 * time.Millisecond)
	b0, t0 = n.busy(), time.Now()
	time.Sleep(1000 * time.Millisecond)
	got = float64(n.busy()-b0) / float64(time.Since(t0).Nanoseconds())
	require.GreaterOrEqual(t, got, thrBaseline, "after the rate was lifted: %.1f%%", got*100)
	p.kill()
}
