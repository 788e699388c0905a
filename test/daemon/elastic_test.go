package daemon

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// Elastic memory through the real bin/vgpud, libvgpu and the simulated
// driver: tenants started by vgpuctl run, vgpud reading NVML.

// sliceDev0 is slice id's first device as vgpud lists it now.
func sliceDev0(t *testing.T, nd *node, id string) api.SliceDevice {
	t.Helper()
	sl, err := nd.client.Get(bg(), id)
	require.NoError(t, err)
	return sl.Devices[0]
}

// A PyTorch-like tenant (grows until OOM, empties its cache, retries) fails
// cleanly at its cap without a ceiling, and completes with one: vgpud grants
// it memory no slice reserved. The grant is recorded: it survives a vgpud
// crash and restart.
func TestElasticTorchlikeTenant(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	torch := []string{"build/test/torchlike", strconv.FormatUint(4*GiB, 10), strconv.FormatUint(256*MiB, 10)}

	capped := nd.startProc(nd.env(), append([]string{"bin/vgpuctl", "run", "--memory", "2GiB", "--qos", "burstable",
		"--id", "capped", "--"}, torch...)...)
	oom := capped.expect("OOM")
	require.Equal(t, 3, capped.wait(), capped.stderr())
	t.Logf("without a ceiling: %v", oom)

	grow := nd.startProc(nd.env(), append([]string{"bin/vgpuctl", "run", "--memory", "2GiB", "--memory-max", "8GiB",
		"--qos", "burstable", "--id", "grow", "--"}, append(torch, "hold")...)...)
	done := grow.expect("DONE")
	grow.expect("HOLDING")
	require.Equal(t, strconv.FormatUint(4*GiB, 10), done["live"])
	dev := sliceDev0(t, nd, "grow")
	require.Equal(t, 8*GiB, dev.MemoryMaxBytes)
	require.Greater(t, dev.LimitBytes(), 4*GiB, "granted past its 2 GiB base")
	require.LessOrEqual(t, dev.LimitBytes(), 8*GiB, "never past its ceiling")
	require.Empty(t, dev.Loans, "all of it unreserved memory")
	require.NotEmpty(t, d.logRecords("elastic: memory granted"))
	body := scrape(t, d)
	require.GreaterOrEqual(t, metricValue(body, "vgpu_elastic_grants_total"), 1.0)
	require.Equal(t, float64(dev.GrantedBytes), metricValue(body, `vgpu_slice_memory_granted_bytes{slice="grow"`))
	out, errs, code := nd.ctl("top")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "max 8GiB +")

	// A crash and restart: the grant is vgpud's record, the budget says it.
	d.kill9()
	nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	after := sliceDev0(t, nd, "grow")
	require.Equal(t, dev.GrantedBytes, after.GrantedBytes)
	b, err := shm.OpenBudget(filepath.Join(nd.data, "slices", "grow", shm.BudgetFile), false)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, after.LimitBytes(), b.MemoryLimit(0))
	require.Equal(t, 0, grow.wait(), grow.stderr())
}

// Two burstable tenants asking for the same free memory: whatever each is
// granted, the grants never exceed what no guaranteed slice reserved and the
// driver's figure of the device never exceeds its memory.
func TestElasticContendersStayWithinTheDevice(t *testing.T) {
	nd := newNode(t, 1, 8*GiB)
	nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	g := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--id", "g", "--",
		"build/test/sim_hold", strconv.FormatUint(GiB, 10))
	g.expect("READY")
	torch := []string{"build/test/torchlike", strconv.FormatUint(5*GiB, 10), strconv.FormatUint(256*MiB, 10), "hold"}
	var ps []*proc
	for _, id := range []string{"a", "b"} {
		ps = append(ps, nd.startProc(nd.env(), append([]string{"bin/vgpuctl", "run", "--memory", "1GiB",
			"--memory-max", "6GiB", "--qos", "burstable", "--id", id, "--"}, torch...)...))
	}
	outcomes := map[string]int{}
	var grew bool
	for _, p := range ps {
		kind, _ := p.ExpectEither("HOLDING", "OOM")
		outcomes[kind]++
		var granted uint64
		for _, id := range []string{"a", "b"} {
			if sl, err := nd.client.Get(bg(), id); err == nil {
				granted += sl.Devices[0].GrantedBytes
				grew = grew || sl.Devices[0].GrantedBytes > 0
			}
		}
		require.LessOrEqual(t, granted, 6*GiB, "grants within the 8 GiB less g's 2 GiB reservation")
		top, err := nd.client.Top(bg())
		require.NoError(t, err)
		var driver uint64
		for _, u := range top {
			for _, pu := range u.Processes {
				if len(pu.DriverBytes) > 0 {
					driver += pu.DriverBytes[0]
				}
			}
		}
		require.LessOrEqual(t, driver, 8*GiB, "the device holds what the driver says")
	}
	// Which completes depends on how their steps interleave (both may stop
	// halfway): what matters is that they grew and never overbooked.
	t.Logf("outcomes: %v", outcomes)
	require.True(t, grew, "the contenders were granted memory")
	start := time.Now()
	for _, p := range ps {
		p.wait()
	}
	require.Equal(t, 0, g.wait(), g.stderr())
	t.Logf("tenants exited in %v", time.Since(start))
}

// A borrower holds memory lent by an empty guaranteed slice; a process of
// the lender opens its device: the loan is called back at once, the borrower
// shrunk, and — the device being physically short of the lender's guarantee
// — evicted (enforce mode kills it). The lender then gets all its memory.
func TestElasticLenderWakes(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	lender, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "lender", MemoryBytes: 12 * GiB})
	require.NoError(t, err)
	borrower := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "2GiB", "--memory-max", "12GiB",
		"--qos", "burstable", "--id", "borrower", "--", "build/test/torchlike",
		strconv.FormatUint(9*GiB, 10), strconv.FormatUint(512*MiB, 10), "hold")
	borrower.expect("HOLDING")
	dev := sliceDev0(t, nd, "borrower")
	require.NotEmpty(t, dev.Loans, "past the 4 GiB no slice reserved, it borrowed: %+v", dev)
	require.Equal(t, "lender", dev.Loans[0].From)
	out, _, _ := nd.ctl("slices")
	require.Contains(t, out, "from lender")

	// The lender wakes: a process of its slice takes a context.
	wake := nd.startProc(nd.env("LD_PRELOAD="+filepath.Join(nd.root, "build/libvgpu.so"), "VGPU_SLICE_DIR="+lender.Dir),
		"build/test/alloc", "--api", "alloc", "--chunk", "1GiB", "--count", "10", "--step")
	wake.expect("PHASE ready")
	woke := time.Now()
	require.Equal(t, 137, borrower.waitExit(), "the borrower is evicted (SIGKILL): %s", borrower.stderr())
	t.Logf("borrower evicted %v after the lender's process took its context", time.Since(woke))
	require.NotEmpty(t, d.awaitLog("elastic: loan called back"))
	evict := d.awaitLog("elastic: evicting a borrower (the backstop acts on it by its limit from now)")
	require.Equal(t, "borrower", evict[0]["slice"])
	// The event log says who, why and how much.
	evs, err := nd.client.Events(bg())
	require.NoError(t, err)
	kinds := map[string]api.ElasticEvent{}
	for _, e := range evs {
		require.Equal(t, "borrower", e.Slice)
		kinds[e.Kind] = e
	}
	require.Equal(t, "lender", kinds[api.ElasticCallback].Lender)
	require.Equal(t, dev.Loans[0].Bytes, kinds[api.ElasticCallback].Bytes)
	require.NotEmpty(t, kinds[api.ElasticEvict].Why)
	require.Contains(t, kinds[api.ElasticGrant].Why, "lent by lender")
	out, _, _ = nd.ctl("events")
	require.Contains(t, out, "callback")
	wake.next()
	res := wake.expect("RESULT")
	require.Equal(t, strconv.FormatUint(10*GiB, 10), res["admitted"], "the lender has its guarantee")
	require.Equal(t, 0, wake.wait(), wake.stderr())
}

// What a tenant writes is only a request: a flood of requests above the
// ceiling is answered and refused; a slice without a ceiling is not even
// answered; nothing is granted and vgpud stays up. With vgpud down, a request times out cleanly.
func TestElasticForgedRequestsAndNoDaemon(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start("--enforcer-mode", "enforce", "--enforcer-interval", "50ms")
	el, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "el", MemoryBytes: GiB, MemoryMaxBytes: 2 * GiB, QoS: api.QoSBurstable})
	require.NoError(t, err)
	plain, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "plain", MemoryBytes: GiB, QoS: api.QoSBurstable})
	require.NoError(t, err)
	for _, sl := range []api.Slice{el, plain} {
		u, err := shm.OpenUsage(filepath.Join(sl.Dir, shm.UsageFile))
		require.NoError(t, err)
		var last uint64
		for range 2000 {
			last = u.PostElasticRequest(0, 1<<62)
		}
		b, err := shm.OpenBudget(filepath.Join(sl.Dir, shm.BudgetFile), false)
		require.NoError(t, err)
		if sl.ID == "el" {
			eventually(t, 5*time.Second, "the flood answered", func() bool { return b.ElasticGrantSeq(0) == last })
		} else {
			time.Sleep(10 * 50 * time.Millisecond) // 10 ticks: a slice that cannot grow is not even answered
			require.Zero(t, b.ElasticGrantSeq(0))
		}
		require.Equal(t, GiB, b.MemoryLimit(0), "slice %s: nothing granted", sl.ID)
		require.Zero(t, sliceDev0(t, nd, sl.ID).GrantedBytes)
		b.Close()
		u.Close()
	}
	require.NotEmpty(t, d.logRecords("elastic: request refused"))
	d.alive(t)

	// vgpud down: the allocation waits its bounded time and is refused.
	d.kill9()
	p := nd.startProc(nd.env("LD_PRELOAD="+filepath.Join(nd.root, "build/libvgpu.so"), "VGPU_SLICE_DIR="+el.Dir,
		"VGPU_ELASTIC_WAIT_MS=200"), "build/test/elastic", "--alloc", strconv.FormatUint(1536*MiB, 10))
	res := p.expect("RESULT")
	require.Equal(t, "2", res["err"], "CUDA_ERROR_OUT_OF_MEMORY")
	ns, err := strconv.ParseInt(res["ns"], 10, 64)
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Duration(ns), 200*time.Millisecond, "it waited for an answer")
	require.Less(t, time.Duration(ns), 5*time.Second, "and no longer than bounded")
	require.Equal(t, 0, p.wait(), p.stderr())
}
