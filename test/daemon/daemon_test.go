// Package daemon holds the end-to-end tests of vgpud: the real bin/vgpud and
// bin/vgpuctl (built by `make build`) on a simulated GPU node (test/simgpu),
// with libvgpu-preloaded test programs (test/cprog) as tenants.
package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// TestAllocListRelease: through bin/vgpuctl, a slice is allocated (printed
// as "<id> <dir>", its regions and record on disk), listed, shown by devices
// and top, and released (files gone, device free again).
func TestAllocListRelease(t *testing.T) {
	nd := newNode(t, 2, 16*GiB)
	d := nd.start()

	out, errs, code := nd.ctl("devices")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "(simulated)")
	require.Equal(t, 3, strings.Count(out, "\n"), out)

	out, errs, code = nd.ctl("alloc", "--memory", "3GiB", "--compute", "25", "--id", "job-1")
	require.Equal(t, 0, code, errs)
	f := strings.Fields(out)
	require.Len(t, f, 2, out)
	require.Equal(t, "job-1", f[0])
	dir := f[1]
	require.Equal(t, filepath.Join(nd.data, "slices", "job-1"), dir)
	for _, name := range []string{"budget", "usage", "slice.json"} {
		_, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
	}
	sl, err := shm.OpenSlice(dir)
	require.NoError(t, err)
	require.Equal(t, 3*GiB, sl.Budget.MemoryLimit(0))
	require.Equal(t, "job-1", sl.Budget.SliceID())
	sl.Close()

	out, errs, code = nd.ctl("slices")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "job-1")
	require.Contains(t, out, "0:3GiB")
	out, errs, code = nd.ctl("devices", "--json")
	require.Equal(t, 0, code, errs)
	var devs []api.Device
	require.NoError(t, json.Unmarshal([]byte(out), &devs))
	require.Equal(t, 3*GiB, devs[0].GuaranteedBytes)
	require.Equal(t, 1, devs[0].Slices)
	out, errs, code = nd.ctl("top")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "job-1")

	out, errs, code = nd.ctl("release", "job-1")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "released job-1\n", out)
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist)
	out, _, _ = nd.ctl("slices")
	require.Equal(t, "no slices\n", out)
	devs, err = nd.client.Devices(bg())
	require.NoError(t, err)
	require.Zero(t, devs[0].GuaranteedBytes)
	d.stop()
	_, err = os.Stat(nd.socket)
	require.ErrorIs(t, err, os.ErrNotExist, "socket removed by a clean stop")
}

// TestRefusalReasons: a request that cannot fit is refused (exit 1), naming
// each device and what it lacked.
func TestRefusalReasons(t *testing.T) {
	nd := newNode(t, 2, 16*GiB)
	nd.start()
	_, errs, code := nd.ctl("alloc", "--memory", "10GiB", "--compute", "60")
	require.Equal(t, 0, code, errs)

	_, errs, code = nd.ctl("alloc", "--memory", "12GiB", "--compute", "50", "--devices", "2")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "the slice does not fit:")
	devs, err := nd.client.Devices(bg())
	require.NoError(t, err)
	// The full device lacks memory and compute; the other has room, but one
	// device is not two.
	require.Contains(t, errs, devs[0].UUID+" (index 0): 6.0GiB guaranteed memory free, 12.0GiB asked")
	require.Contains(t, errs, devs[0].UUID+" (index 0): 40% compute free, 50% asked")
	require.Contains(t, errs, "needs 2 devices with room")

	_, errs, code = nd.ctl("alloc", "--memory", "20GiB", "--uuid", devs[1].UUID)
	require.Equal(t, 1, code)
	require.Contains(t, errs, devs[1].UUID+" (index 1): 16.0GiB guaranteed memory free, 20.0GiB asked")
	require.NotContains(t, errs, devs[0].UUID, "only the pinned device is considered")

	_, errs, code = nd.ctl("alloc", "--memory", "1GiB", "--devices", "3")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "needs 3 devices, node has 2")

	_, errs, code = nd.ctl("alloc", "--memory", "1GiB", "--uuid", "GPU-nope")
	require.Equal(t, 1, code)
	require.Contains(t, errs, `no device with uuid "GPU-nope"`)
}

// TestConcurrentAllocationsNeverOverbook: 64 clients allocate at once; the
// guaranteed memory on each device — as vgpud reports it and as the budgets on
// disk add up — never exceeds the device, and every answered slice is on disk.
func TestConcurrentAllocationsNeverOverbook(t *testing.T) {
	nd := newNode(t, 2, 16*GiB)
	nd.start()
	sizes := []uint64{1 * GiB, 2 * GiB, 3 * GiB, 5 * GiB}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := map[string]api.Slice{}
	refused := 0
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := api.NewClient(nd.socket) // a client each: 64 connections at once
			defer c.Close()
			s, err := c.Alloc(bg(), api.AllocRequest{ID: fmt.Sprintf("c%02d", i), MemoryBytes: sizes[i%len(sizes)],
				ComputePercent: 1})
			mu.Lock()
			defer mu.Unlock()
			var se *api.StatusError
			switch {
			case err == nil:
				granted[s.ID] = s
			case errorsAs(err, &se) && se.StatusCode == http.StatusUnprocessableEntity:
				refused++
			default:
				t.Errorf("alloc c%02d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	require.NotEmpty(t, granted)
	require.NotZero(t, refused, "64 requests of 1..5 GiB cannot all fit in 2 x 16 GiB")
	require.Equal(t, 64, len(granted)+refused)

	devs, err := nd.client.Devices(bg())
	require.NoError(t, err)
	onDisk := map[string]uint64{}
	entries, err := os.ReadDir(filepath.Join(nd.data, "slices"))
	require.NoError(t, err)
	require.Len(t, entries, len(granted), "one directory per granted slice")
	for _, e := range entries {
		_, ok := granted[e.Name()]
		require.True(t, ok, "unexpected slice dir %s", e.Name())
		sl, err := shm.OpenSlice(filepath.Join(nd.data, "slices", e.Name()))
		require.NoError(t, err)
		for i := 0; i < sl.Budget.DeviceCount(); i++ {
			onDisk[sl.Budget.Device(i).UUID] += sl.Budget.MemoryLimit(i)
		}
		sl.Close()
	}
	for _, d := range devs {
		require.LessOrEqual(t, d.GuaranteedBytes, d.MemoryBytes, "device %s overbooked", d.UUID)
		require.Equal(t, d.GuaranteedBytes, onDisk[d.UUID], "budgets on disk of device %s", d.UUID)
		t.Logf("device %d: %d slices, %d GiB of %d guaranteed", d.Index, d.Slices, d.GuaranteedBytes/GiB, d.MemoryBytes/GiB)
	}
}

func errorsAs(err error, target **api.StatusError) bool { return errors.As(err, target) }

// TestRunStopsAtSlice: `vgpuctl run --memory 2GiB -- <allocate until OOM>`
// stops at 2 GiB: the program's allocations plus its context footprint fill
// the slice exactly, and the slice is released when it exits.
func TestRunStopsAtSlice(t *testing.T) {
	nd := newNode(t, 2, 16*GiB)
	nd.start()
	p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--id", "oom", "--",
		"build/test/alloc", "--api", "alloc", "--chunk", "64MiB", "--until-oom")
	res := p.expect("RESULT")
	require.Equal(t, 0, p.wait(), p.stderr())
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
	admitted, err := strconv.ParseUint(res["admitted"], 10, 64)
	require.NoError(t, err)
	require.Equal(t, 2*GiB, admitted+256*MiB, "allocations + the context's 256 MiB fill the 2 GiB slice")
	require.Contains(t, p.stderr(), "vgpuctl: slice oom (2GiB on GPU 0)")
	_, err = nd.client.Get(bg(), "oom")
	require.True(t, api.IsNotFound(err), "released after the run: %v", err)
}

// holder starts build/test/alloc under libvgpu in dir holding count chunks
// (stopped at its "allocated" phase until next()).
func (nd *node) holder(dir string, chunk string, count int) *proc {
	nd.t.Helper()
	p := nd.startProc(nd.env("LD_PRELOAD="+filepath.Join(nd.root, "build/libvgpu.so"), "VGPU_SLICE_DIR="+dir),
		"build/test/alloc", "--api", "alloc", "--chunk", chunk, "--count", strconv.Itoa(count), "--step")
	p.expect("PHASE ready")
	p.next()
	p.expect("RESULT")
	p.expect("PHASE allocated")
	return p
}

// TestDeadProcessChargeReturns: a SIGKILLed tenant's charge goes back to its
// slice within a tick or two of the enforcer loop, and top showed it before.
func TestDeadProcessChargeReturns(t *testing.T) {
	const interval = 250 * time.Millisecond
	nd := newNode(t, 1, 16*GiB)
	nd.start("--enforcer-interval", interval.String())
	s, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "r", MemoryBytes: 2 * GiB})
	require.NoError(t, err)
	sl, err := shm.OpenSlice(s.Dir)
	require.NoError(t, err)
	defer sl.Close()

	p := nd.holder(s.Dir, "256MiB", 2)
	require.Equal(t, 768*MiB, sl.Usage.DeviceUsed(0), "two chunks and the context")
	eventually(t, 10*interval, "top shows the process", func() bool {
		top, err := nd.client.Top(bg())
		require.NoError(t, err)
		return len(top) == 1 && len(top[0].Processes) == 1 && top[0].Processes[0].HostPID == p.pid() &&
			top[0].UsedBytes[0] == 768*MiB
	})

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	require.True(t, p.drain())
	took := eventually(t, 4*interval, "the killed process's 768 MiB returned within a few ticks", func() bool {
		return sl.Usage.DeviceUsed(0) == 0
	})
	t.Logf("charge returned %v after the process was reaped (enforcer interval %v)", took, interval)
	require.Empty(t, sl.Usage.Slots())
}

// TestBackstop: a process that drops libvgpu (unset LD_PRELOAD below
// `vgpuctl run`) and allocates past its 1 GiB slice is killed in enforce mode —
// it has no slot, it is attributed to the slice because vgpuctl, the slice's
// owner, is its ancestor — and only reported (log, metrics) in report mode.
func TestBackstop(t *testing.T) {
	for _, mode := range []string{"enforce", "report"} {
		t.Run(mode, func(t *testing.T) {
			nd := newNode(t, 1, 16*GiB)
			d := nd.start("--enforcer-mode", mode, "--enforcer-interval", "50ms")
			p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "1GiB", "--id", "bs", "--",
				"sh", "-c", "unset LD_PRELOAD; exec build/test/alloc --api alloc --chunk 256MiB --count 8 --step")
			p.expect("PHASE ready")
			p.next()
			res := p.expect("RESULT")
			require.Equal(t, strconv.FormatUint(2*GiB, 10), res["admitted"], "without libvgpu nothing caps it")

			if mode == "enforce" {
				// SIGKILLed by the backstop while it holds the memory (it waits at
				// its "allocated" phase): vgpuctl reports 128+9.
				require.Equal(t, 137, p.waitExit(), p.stderr())
				d.awaitLog("enforcer backstop: process over its slice")
				_, err := nd.client.Get(bg(), "bs")
				require.True(t, api.IsNotFound(err), "vgpuctl released the slice")
			} else {
				p.expect("PHASE allocated")
				var body string
				eventually(t, 10*time.Second, "the backstop event counted", func() bool {
					body = scrape(t, d)
					return metricValue(body, `vgpu_slice_backstop_events_total{qos="guaranteed",slice="bs"`) >= 1
				})
				require.Equal(t, 0.0, metricValue(body, "vgpu_enforcer_kills_total"))
				time.Sleep(300 * time.Millisecond) // several ticks: still alive
				require.False(t, p.exited(), "report mode kills nothing")
				top, err := nd.client.Top(bg())
				require.NoError(t, err)
				require.Len(t, top, 1)
				require.Len(t, top[0].Processes, 1)
				pu := top[0].Processes[0]
				require.Zero(t, pu.PID, "no slot: libvgpu is not loaded")
				require.NotZero(t, pu.HostPID)
				require.Equal(t, []uint64{2*GiB + 256*MiB}, pu.DriverBytes, "the driver's figure: chunks and context")
				require.Equal(t, 0, p.wait(), p.stderr()) // stdin closed: it exits
			}
		})
	}
}

// scrape GETs vgpud's /metrics.
func scrape(t *testing.T, d *vgpud) string {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// metricValue returns the value of the first sample whose line starts with
// prefix (-1 when there is none).
func metricValue(body, prefix string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// TestMetricsEndpoint: the metrics address serves the slice metrics (names
// per daemon/metrics/README.md) with a live tenant's usage, and /healthz.
func TestMetricsEndpoint(t *testing.T) {
	nd := newNode(t, 2, 16*GiB)
	d := nd.start()
	s, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "met", MemoryBytes: 2 * GiB, QoS: api.QoSBurstable})
	require.NoError(t, err)
	p := nd.holder(s.Dir, "512MiB", 1)
	defer p.wait()

	slice := `{qos="burstable",slice="met",uuid="` + s.Devices[0].UUID + `"}`
	var body string
	eventually(t, 10*time.Second, "the tenant's usage in the slice metrics", func() bool {
		body = scrape(t, d)
		return metricValue(body, "vgpu_slice_memory_used_bytes"+slice) == float64(768*MiB)
	})
	for name, want := range map[string]float64{
		"vgpu_slice_memory_limit_bytes" + slice:             float64(2 * GiB),
		"vgpu_slice_memory_peak_bytes" + slice:              float64(768 * MiB),
		"vgpu_slice_driver_used_bytes" + slice:              float64(768 * MiB),
		"vgpu_slice_allocations_refused_total" + slice:      0,
		"vgpu_slice_backstop_events_total" + slice:          0,
		`vgpu_slice_processes{qos="burstable",slice="met"}`: 1,
		`vgpu_slices{qos="burstable"}`:                      1,
		`vgpu_slices{qos="guaranteed"}`:                     0,
		"vgpu_daemon_up":                                    1,
	} {
		require.Equal(t, want, metricValue(body, name), "%s in:\n%s", name, grepVgpu(body))
	}
	for _, name := range []string{"vgpu_device_memory_total_bytes{", "vgpu_device_memory_allocated_bytes{",
		"vgpu_device_utilization_ratio{", "vgpu_enforcer_ticks_total", "vgpu_enforcer_tick_duration_seconds_bucket"} {
		require.Contains(t, body, name)
	}
	resp, err := http.Get("http://" + d.metrics + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func grepVgpu(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "vgpu_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestNoGPU: vgpud without an NVML library, or with the simulated one but no
// simulated node, exits 1 with a clear error (no panic).
func TestNoGPU(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	run := func(env []string, args ...string) (string, int) {
		p := nd.startProc(env, append([]string{"bin/vgpud", "--state-dir", nd.data, "--socket", nd.socket}, args...)...)
		code := p.wait()
		return p.stderr(), code
	}
	missing := filepath.Join(nd.dir, "nowhere", "libnvidia-ml.so.1")
	errs, code := run(nd.env(), "--nvml-lib", missing)
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "vgpud: no GPUs to manage: open NVML library "+missing)
	require.NotContains(t, errs, "panic")

	var noNode []string
	for _, kv := range nd.env() {
		if !strings.HasPrefix(kv, "VGPU_SIM_STATE=") {
			noNode = append(noNode, kv)
		}
	}
	errs, code = run(noNode)
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "vgpud: no GPUs to manage: ")
	require.NotContains(t, errs, "panic")
}

// TestKill9RestartKeepsAcknowledged: clients allocate and release while vgpud
// is SIGKILLed at random moments, several rounds. After each restart vgpud has
// every slice it acknowledged (with intact regions) and none it acknowledged
// releasing; a slice it did not answer for may or may not be there. A tenant
// running through it all keeps its charge and its usage file (same inode):
// live regions are re-adopted untouched.
func TestKill9RestartKeepsAcknowledged(t *testing.T) {
	nd := newNode(t, 2, 16*GiB)
	d := nd.start()
	live, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "live", MemoryBytes: 2 * GiB, ComputePercent: 1})
	require.NoError(t, err)
	tenant := nd.holder(live.Dir, "256MiB", 2)
	usagePath := filepath.Join(live.Dir, "usage")
	inode := func() uint64 {
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(usagePath, &st))
		return st.Ino
	}
	ino := inode()
	liveSl, err := shm.OpenSlice(live.Dir)
	require.NoError(t, err)
	defer liveSl.Close()
	require.Equal(t, 768*MiB, liveSl.Usage.DeviceUsed(0))

	// What the clients learned, across rounds: present = acknowledged and not
	// acknowledged-released; inFlight = asked without an answer (either way).
	var mu sync.Mutex
	present := map[string]bool{"live": true}
	gone := map[string]bool{}
	inFlight := map[string]bool{}
	seq, acked := 0, 0
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))

	const rounds = 6
	for round := 0; round < rounds; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := api.NewClient(nd.socket)
				defer c.Close()
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					var victim string
					for id := range present {
						if id != "live" && !inFlight[id] {
							victim = id
							break
						}
					}
					release := victim != "" && len(present) > 20
					id := victim
					if !release {
						seq++
						id = fmt.Sprintf("k%04d", seq)
					}
					inFlight[id] = true
					mu.Unlock()

					var err error
					if release {
						err = c.Release(bg(), id)
					} else {
						_, err = c.Alloc(bg(), api.AllocRequest{ID: id, MemoryBytes: 256*MiB + MiB, ComputePercent: 0.5})
					}
					mu.Lock()
					if err == nil {
						acked++
						delete(inFlight, id)
						if release {
							delete(present, id)
							gone[id] = true
						} else {
							present[id] = true
						}
					} else if se := (*api.StatusError)(nil); errors.As(err, &se) {
						// An answer: nothing happened (refused, or released already).
						delete(inFlight, id)
						if se.StatusCode == http.StatusNotFound && release {
							delete(present, id)
							gone[id] = true
						}
					}
					// Any other error: no answer; the id stays in flight.
					mu.Unlock()
					if err != nil {
						if se := (*api.StatusError)(nil); !errors.As(err, &se) {
							return // vgpud is gone
						}
					}
				}
			}()
		}
		time.Sleep(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		d.kill9()
		close(stop)
		wg.Wait()

		d = nd.start()
		list, err := nd.client.Slices(bg())
		require.NoError(t, err)
		have := map[string]api.Slice{}
		for _, s := range list {
			have[s.ID] = s
		}
		mu.Lock()
		for id := range present {
			if inFlight[id] {
				continue // its release was asked but not answered: either way
			}
			s, ok := have[id]
			require.True(t, ok, "round %d: acknowledged slice %s lost", round, id)
			sl, err := shm.OpenSlice(s.Dir)
			require.NoError(t, err, "round %d: slice %s regions", round, id)
			sl.Close()
		}
		for id := range gone {
			_, ok := have[id]
			require.False(t, ok && !inFlight[id], "round %d: released slice %s came back", round, id)
		}
		for id := range have {
			require.True(t, present[id] || inFlight[id], "round %d: slice %s was never acknowledged nor asked for", round, id)
		}
		// Settle the in-flight ones: they are whatever vgpud now says.
		for id := range inFlight {
			if _, ok := have[id]; ok {
				present[id] = true
				delete(gone, id)
			} else {
				delete(present, id)
			}
			delete(inFlight, id)
		}
		n := len(present)
		mu.Unlock()
		t.Logf("round %d: %d slices after restart", round, n)

		// The tenant's slice: same usage file, same charge, tenant alive.
		require.Equal(t, ino, inode(), "round %d: the live usage file was replaced", round)
		require.Equal(t, 768*MiB, liveSl.Usage.DeviceUsed(0), "round %d: the tenant's charge", round)
		require.False(t, tenant.exited(), "round %d: the tenant died", round)
	}
	// The tenant frees and exits normally; its slice is back at zero.
	tenant.next()
	tenant.next()
	require.Equal(t, 0, tenant.wait(), tenant.stderr())
	require.Equal(t, uint64(0), liveSl.Usage.DeviceUsed(0))
	d.stop()

	ids := []string{}
	for id := range present {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	require.Contains(t, ids, "live")
	t.Logf("%d allocations and releases acknowledged over %d rounds", acked, rounds)
	require.Greater(t, acked, rounds, "the clients got answers between the kills")
}
