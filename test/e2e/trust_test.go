package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// The attacks of a tenant from inside a real container (containerd, runc,
// vgpu-runtime): it writes its usage region, mounted read-write at
// /run/vgpu/slice/usage; vgpud decides from the kernel (the container's
// cgroup) and the driver.

// taskRunning reports whether the container's task is RUNNING, and its host pid.
func (n *node) taskRunning(id string) (bool, int) {
	n.t.Helper()
	out, _ := n.ctr("task", "ls")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == id {
			pid, _ := strconv.Atoi(f[1])
			return f[2] == "RUNNING", pid
		}
	}
	return false, 0
}

// Row 2 from a container: it zeroes its device counter before each allocation
// and keeps its slot honest, taking 3 GiB in a 2 GiB slice. The backstop kills
// it (it is in the slice's cgroup) on the driver's figures; a neighbouring
// container holding memory runs on.
func TestContainerZeroedCounterIsCaught(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB,
		vgpudArgs: []string{"--enforcer-mode", "enforce", "--enforcer-interval", "50ms"}})
	nb := n.run(run{id: "neighbour", vgpu: true, detach: true,
		annotations: []string{"vgpu.io/memory=4GiB"}, args: []string{"/bin/dl_tamper", "hold", "1GiB", "1"}})
	require.Equal(t, 0, nb.code, "ctr: %s", nb.ctr)
	n.waitOutput(nb, "HELD")
	res := n.run(run{id: "forger", vgpu: true, detach: true,
		annotations: []string{"vgpu.io/memory=2GiB"}, args: []string{"/bin/dl_forge", "overfill", "768MiB", "4"}})
	require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
	line := testproc.Fields(n.waitOutput(res, "OVERFILLED"))
	seen := time.Now()
	require.Equal(t, strconv.FormatUint(3*GiB, 10), line["admitted"], "the forged counter let it in")
	deadline := seen.Add(cmdTimeout)
	for {
		if running, _ := n.taskRunning("forger"); !running {
			break
		}
		require.True(t, time.Now().Before(deadline), "the forger still runs")
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("killed %s after its over-budget allocations were seen", time.Since(seen).Round(time.Millisecond))
	n.waitLog(`enforcer backstop: process over its slice	{"slice": "forger"`)
	running, _ := n.taskRunning("neighbour")
	require.True(t, running, "the neighbouring container runs on")
	n.stop("forger")
	n.stop("neighbour")
}

// Row 3 from a container sharing the host's pid namespace: it plants 1,000
// LIVE slots naming host processes that are not its own — another container's
// process and a host process in no slice — with their real start times, in a
// slice their memory would overflow. Nobody is signalled.
func TestContainerPlantedSlotsSignalNobody(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB,
		vgpudArgs: []string{"--enforcer-mode", "enforce", "--enforcer-interval", "50ms"}})
	vic := n.run(run{id: "victim", vgpu: true, detach: true,
		annotations: []string{"vgpu.io/memory=4GiB"}, args: []string{"/bin/dl_tamper", "hold", "1GiB", "2"}})
	require.Equal(t, 0, vic.code, "ctr: %s", vic.ctr)
	n.waitOutput(vic, "HELD")
	_, victim := n.taskRunning("victim")
	require.NotZero(t, victim)

	root := repoRoot(t)
	outsider := exec.Command(filepath.Join(root, "build/test/sim_hold"), strconv.FormatUint(GiB, 10))
	outsider.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(root, "build/simgpu"), "VGPU_SIM_STATE="+n.sim)
	stdin, err := outsider.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, outsider.Start())
	t.Cleanup(func() { _ = stdin.Close(); _ = outsider.Wait() })
	time.Sleep(500 * time.Millisecond) // it has allocated (the driver lists it) by now

	var ids []string
	for _, pid := range []int{victim, outsider.Process.Pid} {
		ids = append(ids, identity(t, pid))
	}
	res := n.run(run{id: "attacker", vgpu: true, detach: true, hostPID: true,
		annotations: []string{"vgpu.io/memory=512MiB"}, args: append([]string{"/bin/dl_forge", "plant", "1000"}, ids...)})
	require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
	require.Equal(t, "1000", testproc.Fields(n.waitOutput(res, "PLANTED"))["n"])
	time.Sleep(40 * 50 * time.Millisecond) // 40 ticks
	running, _ := n.taskRunning("victim")
	require.True(t, running, "the other container's process was signalled")
	require.NoError(t, outsider.Process.Signal(syscall.Signal(0)), "the host process was signalled")
	data, _ := os.ReadFile(filepath.Join(n.dir, "vgpud.log"))
	require.NotContains(t, string(data), "enforcer backstop: process over its slice")
	n.stop("attacker")
	n.stop("victim")
}

// identity is PID:PIDNS_INO:START_TIME of a host process, as a slot records it.
func identity(t *testing.T, pid int) string {
	t.Helper()
	id, err := procfs.IdentityOf(pid)
	require.NoError(t, err)
	return fmt.Sprintf("%d:%d:%d", id.PID, id.PIDNamespace, id.StartTime)
}

// Row 4 from a container: its workload floods launches under a 10% share while
// the container's other process forges what libvgpu's throttle reads from the
// usage region — the bucket (token_refilled far ahead of token_spent, so
// libvgpu never holds a launch back), or libvgpu's completion markers
// (token_done far ahead of what ran, launch timings that say a token costs
// nothing, so the controller lifts the rate). vgpud measures the slice through
// the driver and, in enforce mode, stops the container's GPU process from
// outside in a duty cycle: over ten seconds its share of the device stays
// within its target + 5 points, and the overrun is reported.
func TestContainerForgedThrottleIsHeldFromOutside(t *testing.T) {
	for _, forgery := range []string{"refill", "markers"} {
		t.Run(forgery, func(t *testing.T) {
			n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB, maxBacklog: 100 * time.Millisecond,
				vgpudArgs: []string{"--enforcer-mode", "enforce", "--enforcer-interval", "50ms"}})
			res := n.run(run{id: "forger", vgpu: true, detach: true,
				annotations: []string{"vgpu.io/memory=2GiB", "vgpu.io/cores=10"},
				args:        []string{"/bin/dl_forge", forgery, "/bin/throttle_load", "flood", "120"}})
			require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
			n.waitOutput(res, "FORGING")
			n.waitOutput(res, "READY")
			time.Sleep(8 * time.Second) // the controller and the backstop settle
			share := deviceShareOver(t, n.sim, 10*time.Second)
			t.Logf("the container forging (%s): %.1f%% of the device over 10 s (target 10%%)", forgery, share*100)
			require.LessOrEqual(t, share, 0.15)
			n.waitLog(`compute backstop: slice runs above its share (its token bucket does not hold it)	{"slice": "forger"`)
			running, _ := n.taskRunning("forger")
			require.True(t, running, "throttled, never killed")
			n.stop("forger")
		})
	}
}

// deviceShareOver is the share of device 0's time used over d, from the
// simulated node's busy time.
func deviceShareOver(t *testing.T, sim string, d time.Duration) float64 {
	t.Helper()
	busy := func() uint64 {
		st, err := simgpu.Status(sim)
		require.NoError(t, err)
		return st.Devices[0].BusyNs
	}
	b0, t0 := busy(), time.Now()
	time.Sleep(d)
	return float64(busy()-b0) / float64(time.Since(t0).Nanoseconds())
}
