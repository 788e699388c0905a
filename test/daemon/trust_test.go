package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// The attacks of a tenant on vgpud, run against the real bin/vgpud on the
// simulated node: the tenant writes its usage region (it may write any byte of
// it), vgpud must decide from kernel and driver truth.

// alive reports whether pid still runs (a zombie counts as gone).
func alive(pid int) bool {
	var buf [procfs.StatBufSize]byte
	st, err := procfs.ReadStat(procfs.Root, pid, buf[:])
	return err == nil && !st.Dead()
}

// Row 2: a tenant zeroes its device counter (dev[0].used_bytes) between
// allocations and keeps its own slots honest, so libvgpu admits far past the
// budget. vgpud judges the slice by the driver's figures for the processes the
// kernel places in it: one tick after it goes over, its largest process is
// killed; another slice's process is untouched; vgpud stays up.
func TestAttackZeroedCounterIsCaught(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	// The forger's slice is owned by this test: its children are its processes.
	sl, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "forger", MemoryBytes: 2 * GiB,
		Owner: api.Owner{Kind: api.OwnerPID, PID: os.Getpid()}})
	require.NoError(t, err)
	neighbour := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "4GiB", "--id", "neighbour", "--",
		"build/test/sim_hold", strconv.FormatUint(GiB, 10))
	neighbour.expect("READY")

	u, err := shm.OpenUsage(filepath.Join(sl.Dir, shm.UsageFile))
	require.NoError(t, err)
	defer u.Close()
	// Each holder alone fits the 2 GiB budget (1.5 GiB + its 256 MiB context).
	first := nd.holder(sl.Dir, "512MiB", 3)
	atomic.StoreUint64(&u.Raw().Dev[0].UsedBytes, 0) // the forgery
	second := nd.startProc(nd.env("LD_PRELOAD="+filepath.Join(nd.root, "build/libvgpu.so"), "VGPU_SLICE_DIR="+sl.Dir),
		"build/test/alloc", "--api", "alloc", "--chunk", "512MiB", "--count", "3", "--step")
	second.expect("PHASE ready")
	second.next()
	res := second.expect("RESULT")
	over := time.Now()
	require.Equal(t, strconv.FormatUint(1536*MiB, 10), res["admitted"], "the forged counter let it in")
	// Over from here: the backstop kills members until the rest fits.
	eventually(t, 10*time.Second, "a member of the slice killed", func() bool {
		return !alive(first.pid()) || !alive(second.pid())
	})
	t.Logf("the slice was over its budget for %v (enforcer tick 50ms)", time.Since(over))
	require.True(t, alive(first.pid()) != alive(second.pid()), "one kill was enough: the rest fits")
	recs := d.awaitLog("enforcer backstop: process over its slice")
	for _, r := range recs {
		require.Equal(t, "forger", r["slice"])
		require.Equal(t, enforcer.ActionKilled, r["action"])
	}
	require.True(t, alive(neighbour.pid()), "a process of another slice is never touched")
	_, err = nd.client.Health(bg())
	require.NoError(t, err, "vgpud is up")
	require.Equal(t, 0, neighbour.wait(), neighbour.stderr()) // stdin closed: it exits
}

// Row 3: a tenant plants 1,000 LIVE slots naming processes that are not its
// own — another slice's process, a process in no slice, the test itself,
// vgpud — with their real start times, in a slice whose budget their memory
// would overflow. Nobody is signalled: membership is the kernel's word.
func TestAttackPlantedSlotsSignalNobody(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	attacker, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "attacker", MemoryBytes: 512 * MiB})
	require.NoError(t, err)
	victim := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "4GiB", "--id", "victim", "--",
		"build/test/sim_hold", strconv.FormatUint(2*GiB, 10))
	victim.expect("READY")
	victimPID := childOf(t, victim.pid())                                                  // sim_hold, below vgpuctl
	outsider := nd.startProc(nd.env(), "build/test/sim_hold", strconv.FormatUint(GiB, 10)) // in no slice
	outsider.expect("READY")

	targets := []int{victimPID, outsider.pid(), os.Getpid(), d.cmd.Process.Pid}
	u, err := shm.OpenUsage(filepath.Join(attacker.Dir, shm.UsageFile))
	require.NoError(t, err)
	defer u.Close()
	planted := 0
	for planted < 1000 {
		for _, pid := range targets {
			id, err := enforcer.ProcessIdentity(pid)
			require.NoError(t, err)
			if _, err := u.ClaimSlot(id); err != nil {
				break
			}
			planted++
		}
	}
	time.Sleep(40 * 50 * time.Millisecond) // 40 ticks
	for _, pid := range targets {
		require.True(t, alive(pid), "pid %d signalled; log:\n%s", pid, d.log())
	}
	require.Empty(t, d.logRecords("enforcer backstop: process over its slice"), "log:\n%s", d.log())
	require.NoError(t, d.cmd.Process.Signal(syscall.Signal(0)), "vgpud is up")
	require.Equal(t, 0, victim.wait(), victim.stderr()) // stdin closed: it exits
	require.Equal(t, 0, outsider.wait(), outsider.stderr())

}

// childOf is the only child of pid (the children files of all its threads:
// a Go program forks from whichever thread runs).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	files, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	require.NoError(t, err)
	var f []string
	for _, file := range files {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		f = append(f, strings.Fields(string(b))...)
	}
	require.Len(t, f, 1, "children of %d: %q", pid, f)
	child, err := strconv.Atoi(f[0])
	require.NoError(t, err)
	return child
}

// Row 4: a tenant with a 10% compute share keeps its bucket's token_refilled
// far ahead of token_spent, so libvgpu never holds its launches back. vgpud's
// controller measures the slice through the driver: in report mode the
// overrun is logged (and the forgery is shown to work: the tenant takes most
// of the device); in enforce mode the slice's processes are stopped from
// outside in a duty cycle, and its share of the device over ten seconds stays
// within its target + 5 points.
func TestAttackForgedBucketIsHeldFromOutside(t *testing.T) {
	for _, mode := range []string{"enforce", "report"} {
		t.Run(mode, func(t *testing.T) {
			nd := newNode(t, 1, 16*GiB)
			// A device queue 100 ms deep: a stopped launcher idles the device
			// once its queue drains (daemon/computeguard.go says why it matters).
			require.NoError(t, simgpu.Init(nd.state, simgpu.Config{Devices: 1, Memory: 16 * GiB, SMs: 132,
				MaxBacklog: 100 * time.Millisecond, Force: true}))
			d := nd.start("--enforcer-mode", mode, "--enforcer-interval", "50ms")
			p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--compute", "10", "--id", "forger",
				"--", "build/test/throttle_load", "flood", "120")
			p.expect("READY")
			workload := childOf(t, p.pid())
			t.Cleanup(func() {
				_ = syscall.Kill(workload, syscall.SIGKILL) // stopped or not
				p.drain()
			})
			sl, err := nd.client.Get(bg(), "forger")
			require.NoError(t, err)
			u, err := shm.OpenUsage(filepath.Join(sl.Dir, shm.UsageFile))
			require.NoError(t, err)
			defer u.Close()
			stop := make(chan struct{})
			forged := make(chan struct{})
			go func() { // the forgery: the bucket always has credit
				defer close(forged)
				ud := &u.Raw().Dev[0]
				for {
					select {
					case <-stop:
						return
					default:
					}
					atomic.StoreUint64(&ud.TokenRefilled, atomic.LoadUint64(&ud.TokenSpent)+1<<40)
					time.Sleep(100 * time.Microsecond)
				}
			}()
			defer func() { close(stop); <-forged }()

			time.Sleep(8 * time.Second) // the controller and the backstop settle
			share, _ := deviceShares(t, nd, 10*time.Second)
			t.Logf("%s mode: the forger's share of the device over 10 s: %.1f%% (target 10%%)", mode, share*100)
			recs := d.logRecords("compute backstop: slice runs above its share (its token bucket does not hold it)")
			require.NotEmpty(t, recs, "the overrun is reported; log:\n%s", d.log())
			require.Equal(t, "forger", recs[0]["slice"])
			if mode == "enforce" {
				require.LessOrEqual(t, share, 0.15)
			} else {
				require.Greater(t, share, 0.5, "the forged bucket lets it take most of the device")
			}
			require.NoError(t, d.cmd.Process.Signal(syscall.Signal(0)), "vgpud is up")
			d.stop() // continues whatever it stopped
			require.True(t, alive(workload), "throttled, never killed")
		})
	}
}

// deviceShares is the share of device 0's time used over d, in all and by each
// of pids, from the simulated device's busy time.
func deviceShares(t *testing.T, nd *node, d time.Duration, pids ...int) (device float64, each []float64) {
	t.Helper()
	busy := func() (uint64, map[int]uint64) {
		st, err := simgpu.Status(nd.state)
		require.NoError(t, err)
		byPID := map[int]uint64{}
		for _, p := range st.Devices[0].Processes {
			byPID[p.PID] += p.BusyNs
		}
		return st.Devices[0].BusyNs, byPID
	}
	d0, p0 := busy()
	t0 := time.Now()
	time.Sleep(d)
	d1, p1 := busy()
	span := float64(time.Since(t0).Nanoseconds())
	for _, pid := range pids {
		require.Contains(t, p1, pid, "pid %d on the device", pid)
		each = append(each, float64(p1[pid]-p0[pid])/span)
	}
	return float64(d1-d0) / span, each
}
