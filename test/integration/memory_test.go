package integration

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// Every interception path a program can take to the driver.
var paths = []string{
	"linked",     // linked symbols, resolved to libvgpu's exports by the preload
	"dlsym",      // dlsym on a dlopen("libcuda.so.1") handle, versioned names
	"gpa:11030",  // cuGetProcAddress (CUDA 11.3 form) at 11.3
	"gpa:12000",  // cuGetProcAddress at 12.0 (cuCtxCreate resolves to _v3)
	"gpa2:12000", // cuGetProcAddress_v2 (from dlsym)
	"gpaself",    // cuGetProcAddress asked for itself -> _v2, as libcudart does
}

// Every allocation API of the workload (testutil.h).
var apis = []string{"alloc", "pitch", "managed", "vmm", "array", "async", "pool", "pooltrim",
	"array3d", "mipmap", "graphmem"}

// capAPIs are the allocation APIs that allocate differently (pooltrim allocates
// like pool).
func capAPIs() []string {
	var out []string
	for _, a := range apis {
		if a != "pooltrim" {
			out = append(out, a)
		}
	}
	return out
}

// onPath says whether the workload can use api on path: graph memory nodes are
// CUDA 11.4, which cuGetProcAddress at 11.3 does not offer.
func onPath(api, path string) bool {
	return api != "graphmem" || path != "gpa:11030"
}

// streamOrdered APIs have per-thread default stream (_ptsz) variants.
func streamOrdered(api string) bool {
	return api == "async" || api == "pool" || api == "pooltrim"
}

const chunk = 64 * MiB

// hookOf is the libvgpu export each workload entry point must resolve to (the
// _ptsz variant for the per-thread ones when asked), on every path.
var hookOf = map[string]string{
	"init": "cuInit", "retain": "cuDevicePrimaryCtxRetain",
	"release": "cuDevicePrimaryCtxRelease_v2", "ctx_create": "cuCtxCreate_v2",
	"ctx_create3": "cuCtxCreate_v3", "ctx_destroy": "cuCtxDestroy_v2",
	"alloc": "cuMemAlloc_v2", "pitch": "cuMemAllocPitch_v2", "managed": "cuMemAllocManaged",
	"mfree": "cuMemFree_v2", "create": "cuMemCreate", "mrelease": "cuMemRelease",
	"map": "cuMemMap", "unmap": "cuMemUnmap",
	"array_create": "cuArrayCreate_v2", "array_destroy": "cuArrayDestroy",
	"alloc_async": "cuMemAllocAsync", "free_async": "cuMemFreeAsync",
	"alloc_pool": "cuMemAllocFromPoolAsync", "pool_create": "cuMemPoolCreate",
	"pool_destroy": "cuMemPoolDestroy", "pool_trim": "cuMemPoolTrimTo",
	"pool_set": "cuMemPoolSetAttribute", "stream_sync": "cuStreamSynchronize",
	"ctx_sync": "cuCtxSynchronize", "mem_info": "cuMemGetInfo_v2",
	"total_mem": "cuDeviceTotalMem_v2", "launch": "cuLaunchKernel",
	"launch_ex": "cuLaunchKernelEx", "launch_coop": "cuLaunchCooperativeKernel",
	"graph_launch": "cuGraphLaunch", "ctx_attach": "cuCtxAttach", "ctx_detach": "cuCtxDetach",
	"array3d_create": "cuArray3DCreate_v2", "mipmap_create": "cuMipmappedArrayCreate",
	"mipmap_destroy": "cuMipmappedArrayDestroy", "graph_instantiate": "cuGraphInstantiateWithFlags",
	"graph_exec_destroy": "cuGraphExecDestroy", "launch_legacy": "cuLaunch",
	"launch_grid": "cuLaunchGrid", "launch_grid_async": "cuLaunchGridAsync",
	"launch_multi": "cuLaunchCooperativeKernelMultiDevice",
}

var perThread = map[string]bool{"alloc_async": true, "free_async": true, "alloc_pool": true,
	"stream_sync": true, "launch": true, "launch_ex": true, "launch_coop": true, "graph_launch": true}

// Entry points libvgpu leaves alone: they must come back as the driver's own.
var notHooked = []string{"set_current", "reserve", "addr_free", "set_access",
	"pool_get", "module_load", "get_function", "stream_create", "set_block_shape"}

// checkHooks verifies a "HOOKS vgpu=field:symbol,... driver=field,..." line.
func checkHooks(t *testing.T, h map[string]string, ptsz bool) {
	t.Helper()
	got := map[string]string{}
	for _, e := range strings.Split(h["vgpu"], ",") {
		if field, sym, ok := strings.Cut(e, ":"); ok {
			got[field] = sym
		}
	}
	driver := map[string]bool{}
	for _, e := range strings.Split(h["driver"], ",") {
		driver[e] = true
	}
	for field, sym := range hookOf {
		if ptsz && perThread[field] {
			sym += "_ptsz"
		}
		if g, ok := got[field]; ok {
			require.Equal(t, sym, g, "%s resolved to the wrong hook", field)
		} else {
			require.False(t, driver[field], "%s resolved to the driver, bypassing libvgpu", field)
		}
	}
	for _, field := range []string{"init", "alloc", "mfree", "launch", "graph_launch",
		"ctx_attach", "ctx_detach", "array3d_create", "mipmap_create", "mipmap_destroy",
		"launch_legacy", "launch_grid", "launch_grid_async", "launch_multi"} {
		require.Contains(t, got, field, "%s not hooked", field)
	}
	for _, field := range notHooked {
		require.True(t, driver[field], "%s should be the driver's own (vgpu=%s)", field, h["vgpu"])
	}
}

// TestEveryPathChargesAndCredits runs each allocation API through each
// interception path (and, for the stream-ordered ones, the per-thread stream
// variants; and for the non-linked paths also from a program not linked to the
// driver at all) and checks at every phase that libvgpu's charge — the slice
// counter and the process's slot — equals what the simulated driver says the
// process holds: the context's footprint, then 3 chunks more, then back.
func TestEveryPathChargesAndCredits(t *testing.T) {
	type tc struct {
		prog, path, api string
		ptsz            bool
		ctx             string
	}
	var cases []tc
	for _, api := range apis {
		for _, path := range paths {
			if !onPath(api, path) {
				continue
			}
			cases = append(cases, tc{"alloc", path, api, false, "primary"})
			if streamOrdered(api) {
				cases = append(cases, tc{"alloc", path, api, true, "primary"})
			}
			if path == "dlsym" || path == "gpaself" {
				cases = append(cases, tc{"dl_alloc", path, api, streamOrdered(api), "primary"})
			}
		}
	}
	for _, path := range paths {
		cases = append(cases, tc{"alloc", path, "alloc", false, "create"})
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/%s/%s/ctx=%s/ptsz=%v", c.prog, c.path, c.api, c.ctx, c.ptsz)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const ovh = 256 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh})
			args := []string{"--path", c.path, "--api", c.api, "--count", "3", "--chunk", "64MiB",
				"--ctx", c.ctx, "--step", "--launch"}
			if c.ptsz {
				args = append(args, "--ptsz")
			}
			p := start(t, f.env(), c.prog, args...)
			pid := p.pid()
			checkHooks(t, p.expect("HOOKS"), c.ptsz)

			p.phase("ready")
			f.requireAgree(pid, ovh, "context held")
			require.Equal(t, ovh, f.used())
			s, ok := f.slotOf(pid)
			require.True(t, ok, "pid %d has no slot", pid)
			require.Equal(t, uint64(1), s.Contexts)
			p.next()

			res := p.expect("RESULT")
			require.Equal(t, "3", res["count"], "%v", res)
			launched := num(t, p.expect("LAUNCHED"), "n")
			p.phase("allocated")
			f.requireAgree(pid, ovh+3*chunk, "3 chunks held")
			require.Equal(t, ovh+3*chunk, f.used())
			require.Equal(t, launched, f.simProc(0, pid).Launches,
				"every launch went through its hook to the driver")
			p.next()

			p.phase("freed")
			if c.api == "pooltrim" {
				// The pool keeps its reservation (release threshold): still charged.
				f.requireAgree(pid, ovh+3*chunk, "freed into a pool that keeps its memory")
				p.next()
				p.phase("trimmed")
			}
			f.requireAgree(pid, ovh, "all freed")
			require.Equal(t, ovh, f.used())
			p.next()

			p.phase("released")
			f.requireAgree(pid, 0, "context released")
			require.Equal(t, uint64(0), f.used())
			p.next()
			p.waitOK()
			require.Equal(t, uint64(0), f.used())
			require.Empty(t, f.sl.Usage.Slots(), "a clean exit frees the slot")
		})
	}
}

// TestDlsymOnEveryHandle: dlsym of a hooked name yields libvgpu's hook on a
// dlopen'ed driver handle (libcuda and libnvidia-ml), RTLD_DEFAULT and RTLD_NEXT;
// names libvgpu does not hook, and names the driver lacks, keep the answer they
// would have without libvgpu.
func TestDlsymOnEveryHandle(t *testing.T) {
	f := newFixture(t, fixtureOpts{ovh: 64 * MiB})
	want := map[string]string{ // handle/name -> object/symbol ("-/-": not found)
		"libcuda/cuMemAlloc_v2":           "libvgpu.so/cuMemAlloc_v2",
		"libcuda/cuGetProcAddress_v2":     "libvgpu.so/cuGetProcAddress_v2",
		"libcuda/cuLaunchKernel_ptsz":     "libvgpu.so/cuLaunchKernel_ptsz",
		"libcuda/cuCtxSetCurrent":         "libcuda.so.1/cuCtxSetCurrent",
		"libcuda/cuCtxCreate_v4":          "-/-",
		"libcuda/cuNoSuchFunction":        "-/-",
		"nvml/nvmlDeviceGetMemoryInfo_v2": "libvgpu.so/nvmlDeviceGetMemoryInfo_v2",
		"nvml/nvmlDeviceGetCount_v2":      "libnvidia-ml.so.1/nvmlDeviceGetCount_v2",
		"default/cuMemAlloc_v2":           "libvgpu.so/cuMemAlloc_v2",
		"default/cuCtxSetCurrent":         "libcuda.so.1/cuCtxSetCurrent",
		"next/cuMemFree_v2":               "libvgpu.so/cuMemFree_v2",
		"next/cuStreamSynchronize":        "libvgpu.so/cuStreamSynchronize",
	}
	lines, stderr, code := run(t, f.env(), "dlsym_handles")
	require.Equal(t, 0, code, "stderr:\n%s", stderr)
	got := map[string]string{}
	for _, l := range lines {
		if strings.HasPrefix(l, "DLSYM ") {
			m := fields(l)
			got[m["handle"]+"/"+m["name"]] = m["obj"] + "/" + m["sym"]
		}
	}
	require.Equal(t, want, got)
}

// TestMustShowChunksStopAtOOM: a program allocating 64 MiB chunks in a 2 GiB
// slice, through each path and each API, stops with exactly
// CUDA_ERROR_OUT_OF_MEMORY having been admitted no more than the slice (context
// included) and no less than fits, and the simulated driver's own per-process
// figure equals libvgpu's charge.
func TestMustShowChunksStopAtOOM(t *testing.T) {
	for _, api := range capAPIs() {
		for _, path := range paths {
			if !onPath(api, path) {
				continue
			}
			t.Run(api+"/"+path, func(t *testing.T) {
				t.Parallel()
				const ovh = 256 * MiB
				f := newFixture(t, fixtureOpts{ovh: ovh, limit: 2 * GiB, physical: 8 * GiB})
				p := start(t, f.env(), "alloc", "--path", path, "--api", api, "--until-oom",
					"--chunk", "64MiB", "--step")
				pid := p.pid()
				p.phase("ready")
				p.next()
				res := p.expect("RESULT")
				require.Equal(t, "2", res["err"], "stopped with %v", res)
				require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
				admitted := num(t, res, "admitted")
				require.LessOrEqual(t, admitted+ovh, f.limit, "admitted past the slice")
				require.Greater(t, admitted+ovh+chunk, f.limit,
					"refused although another chunk fit (%s admitted)", mib(admitted))
				p.phase("allocated")
				f.requireAgree(pid, admitted+ovh, "at OOM")
				require.Equal(t, admitted+ovh, f.used())
				require.Equal(t, admitted+ovh, f.simStatus().Devices[0].Used,
					"the node holds exactly what the slice charged")
				require.GreaterOrEqual(t, f.sl.Usage.Device(0).RefusedAllocs, uint64(1))
				p.next()
				p.phase("freed")
				p.next()
				p.phase("released")
				p.next()
				p.waitOK()
				require.Equal(t, uint64(0), f.used())
			})
		}
	}
}

// sampler records the highest value of the slice counter while it runs.
type sampler struct {
	once    sync.Once
	stop    chan struct{}
	done    chan struct{}
	max     atomic.Uint64
	samples atomic.Uint64
}

func startSampler(f *fixture) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	// Stopped before the fixture unmaps the slice, also when the test fails early
	// (cleanups run last-registered first).
	f.t.Cleanup(func() { s.finish() })
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			if v := f.used(); v > s.max.Load() {
				s.max.Store(v)
			}
			s.samples.Add(1)
			// No sleep: the point is to catch a momentary excess. Yield so the
			// programs being watched still get the CPU.
			runtime.Gosched()
		}
	}()
	return s
}

func (s *sampler) finish() (max, samples uint64) {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.max.Load(), s.samples.Load()
}

// TestMustShowFourProcessesShareTheSlice: four such processes at once never
// exceed the slice together, fill it (nothing is refused that fit), and each
// one's charge equals the driver's figure for it.
func TestMustShowFourProcessesShareTheSlice(t *testing.T) {
	type tc struct{ path, api string }
	var cases []tc
	for _, path := range paths {
		cases = append(cases, tc{path, "alloc"})
	}
	for i, api := range capAPIs()[1:] {
		path := paths[(i+1)%len(paths)]
		if !onPath(api, path) {
			path = "gpaself"
		}
		cases = append(cases, tc{path, api})
	}
	for _, c := range cases {
		t.Run(c.api+"/"+c.path, func(t *testing.T) {
			t.Parallel()
			const ovh = 256 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh, limit: 2 * GiB, physical: 8 * GiB})
			var ps []*proc
			for i := 0; i < 4; i++ {
				ps = append(ps, start(t, f.env(), "alloc", "--path", c.path, "--api", c.api,
					"--until-oom", "--chunk", "64MiB", "--step"))
			}
			// All contexts first: a context is admitted like memory, so one process
			// filling the slice first would (correctly) starve the others' contexts.
			for _, p := range ps {
				p.phase("ready")
			}
			require.Equal(t, 4*ovh, f.used())
			smp := startSampler(f)
			for _, p := range ps {
				p.next()
			}
			var total uint64
			for _, p := range ps {
				res := p.expect("RESULT")
				require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"], "%v", res)
				total += num(t, res, "admitted")
				p.phase("allocated")
			}
			max, samples := smp.finish()
			require.LessOrEqual(t, total+4*ovh, f.limit, "four processes together past the slice")
			require.Greater(t, total+4*ovh+chunk, f.limit, "the slice was not filled")
			require.Equal(t, total+4*ovh, f.used())
			require.LessOrEqual(t, max, f.limit, "over the limit at a sample (%d samples)", samples)
			require.LessOrEqual(t, f.sl.Usage.Device(0).PeakBytes, f.limit)
			require.Equal(t, f.used(), f.simStatus().Devices[0].Used)
			for _, p := range ps {
				f.requireAgree(p.pid(), f.slotUsed(p.pid()), "per process")
				require.Equal(t, f.simProc(0, p.pid()).UsedBytes, f.slotUsed(p.pid()))
			}
			for _, p := range ps {
				p.next()
				p.phase("freed")
				p.next()
				p.phase("released")
				p.next()
				p.waitOK()
			}
			require.Equal(t, uint64(0), f.used())
			require.Empty(t, f.sl.Usage.Slots())
		})
	}
}

// TestConcurrentHammer: 8 processes (2 threads each) allocate and free random
// sizes on one slice — plain allocations, and stream-ordered ones growing and
// shrinking each process's default pool from both threads at once. The counter,
// sampled from here while they run, never exceeds the limit; after they all exit
// cleanly it is 0 and every slot is free.
func TestConcurrentHammer(t *testing.T) {
	for _, mode := range []string{"plain", "async"} {
		t.Run(mode, func(t *testing.T) {
			const ovh = 64 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh, limit: 2 * GiB, physical: 16 * GiB})
			smp := startSampler(f)
			var ps []*proc
			for i := 0; i < 8; i++ {
				args := []string{"--iters", "100000", "--threads", "2", "--live", "6",
					"--min", "1MiB", "--max", "192MiB", "--seed", fmt.Sprint(1000 + i)}
				if mode == "async" {
					args = append(args, "--async")
				}
				ps = append(ps, start(t, f.env(), "hammer", args...))
			}
			var refused uint64
			for _, p := range ps {
				res := p.expect("RESULT")
				require.Equal(t, res["allocs"], res["frees"], "%v", res)
				refused += num(t, res, "refused")
				p.waitOK()
			}
			max, samples := smp.finish()
			require.LessOrEqual(t, max, f.limit, "over the limit at a sample (%d samples)", samples)
			require.Greater(t, samples, uint64(1000), "the sampler barely ran")
			require.LessOrEqual(t, f.sl.Usage.Device(0).PeakBytes, f.limit)
			require.Greater(t, refused, uint64(0), "no contention: the test did not load the slice")
			require.Equal(t, uint64(0), f.used(), "charges left after every process exited")
			require.Empty(t, f.sl.Usage.Slots(), "slots left after every process exited")
			require.Equal(t, uint64(0), f.simStatus().Devices[0].Used)
		})
	}
}

// TestManySmallAllocations: more live allocations than the table's initial
// capacity (4096) — the table grows on the slow path and every one of them is
// still credited exactly.
func TestManySmallAllocations(t *testing.T) {
	const ovh = 64 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh})
	p := start(t, f.env(), "alloc", "--api", "alloc", "--count", "20000", "--chunk", "4KiB", "--step")
	p.phase("ready")
	p.next()
	p.phase("allocated")
	f.requireAgree(p.pid(), ovh+20000*4096, "20000 blocks held")
	p.next()
	p.phase("freed")
	f.requireAgree(p.pid(), ovh, "all freed")
	p.next()
	p.phase("released")
	p.next()
	p.waitOK()
	require.Equal(t, uint64(0), f.used())
}

// TestForkChildGetsItsOwnSlot: a forked child claims a slot of its own, its
// allocations are charged to it, and the parent's charge does not move — not even
// when the child frees the parent's pointer (which the driver refuses).
func TestForkChildGetsItsOwnSlot(t *testing.T) {
	const ovh = 256 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh})
	p := start(t, f.env(), "forker", "--parent", "64MiB", "--child", "128MiB")
	child := p.expect("CHILD")
	require.Equal(t, "CUDA_ERROR_INVALID_VALUE", child["name"],
		"the child's free of the parent's pointer must get the driver's own error")
	par := p.expect("PARENT")
	ppid, cpid := int(num(t, par, "pid")), int(num(t, par, "child"))
	require.Equal(t, num(t, child, "pid"), uint64(cpid))
	p.phase("both")

	ps, ok := f.slotOf(ppid)
	require.True(t, ok, "parent has no slot")
	cs, ok := f.slotOf(cpid)
	require.True(t, ok, "child has no slot")
	require.NotEqual(t, ps.Index, cs.Index)
	for _, s := range []shm.SlotInfo{ps, cs} {
		// The identity the enforcer judges liveness by: pid namespace and start
		// time as /proc reports them.
		id, err := enforcer.ProcessIdentity(s.PID)
		require.NoError(t, err)
		require.Equal(t, id.StartTime, s.StartTime, "start time of pid %d", s.PID)
		require.Equal(t, id.PIDNamespace, s.PIDNamespace, "pid namespace of pid %d", s.PID)
		require.False(t, s.Claiming)
		require.True(t, enforcer.ProcessAlive(s.SlotIdentity))
	}
	require.Equal(t, uint64(1), ps.Contexts)
	require.Equal(t, uint64(1), cs.Contexts)
	f.requireAgree(ppid, ovh+64*MiB, "parent")
	f.requireAgree(cpid, ovh+128*MiB, "child")
	require.Equal(t, 2*ovh+192*MiB, f.used())
	p.next()

	p.phase("child_gone")
	_, ok = f.slotOf(cpid)
	require.False(t, ok, "the child's clean exit frees its slot")
	f.requireAgree(ppid, ovh+64*MiB, "parent after the child left")
	require.Equal(t, ovh+64*MiB, f.used())
	p.next()
	p.expect("DONE")
	p.waitOK()
	require.Equal(t, uint64(0), f.used())
	require.Empty(t, f.sl.Usage.Slots())
}

// TestSigkillThenReclaim: a process killed while holding memory leaves its
// charge; the enforcer's Reclaim with the real liveness check returns exactly
// that charge and frees the slot.
func TestSigkillThenReclaim(t *testing.T) {
	const ovh = 256 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh})
	other := start(t, f.env(), "alloc", "--api", "alloc", "--count", "1", "--step")
	other.phase("ready")
	other.next()
	other.phase("allocated")

	p := start(t, f.env(), "alloc", "--api", "managed", "--count", "5", "--step")
	pid := p.pid()
	p.phase("ready")
	p.next()
	p.phase("allocated")
	held := ovh + 5*chunk
	f.requireAgree(pid, held, "before the kill")
	p.kill()

	require.Equal(t, held+ovh+chunk, f.used(), "a killed process keeps its charge")
	s, ok := f.slotOf(pid)
	require.True(t, ok, "the killed process's slot is still owned")
	require.False(t, enforcer.ProcessAlive(s.SlotIdentity))

	rep, err := f.sl.Usage.Reclaim(enforcer.ProcessAlive)
	require.NoError(t, err)
	require.Len(t, rep.Slots, 1, "only the dead process is reclaimed")
	require.Equal(t, pid, rep.Slots[0].PID)
	require.Equal(t, held, rep.Freed(0))
	_, ok = f.slotOf(pid)
	require.False(t, ok, "the slot is free after reclaim")
	require.Equal(t, ovh+chunk, f.used(), "only the live process's charge remains")
	f.requireAgree(other.pid(), ovh+chunk, "the live process is untouched")

	other.next()
	other.phase("freed")
	other.next()
	other.phase("released")
	other.next()
	other.waitOK()
	require.Equal(t, uint64(0), f.used())
}

// TestExecTakesOverItsStaleSlot: exec runs no destructor, so the slot of the
// image before exec is still owned by the same pid and start time; the new image
// takes it over and returns its stale charge (the driver dropped that memory with
// the old address space) instead of leaving a slot no one would ever release.
func TestExecTakesOverItsStaleSlot(t *testing.T) {
	const ovh = 128 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh})
	p := start(t, f.env(), "execer")
	first := p.expect("FIRST")
	second := p.expect("SECOND")
	require.Equal(t, first["pid"], second["pid"])
	p.phase("second")
	slots := f.sl.Usage.Slots()
	require.Len(t, slots, 1, "one slot for the one process")
	require.Equal(t, p.pid(), slots[0].PID)
	require.Equal(t, ovh+chunk, slots[0].UsedBytes[0], "only the new image's charge")
	require.Equal(t, ovh+chunk, f.used())
	require.Equal(t, uint64(1), f.sl.Usage.AttachCount(), "a takeover is not a new attach")
	// The simulated driver, like the real one, dropped the first image's memory
	// at exec: its figure agrees with libvgpu's.
	f.requireAgree(p.pid(), ovh+chunk, "after exec")
	p.next()
	p.waitOK()
	require.Equal(t, uint64(0), f.used())
	require.Empty(t, f.sl.Usage.Slots())
}

// TestExitWhileHoldingReturnsEverything: a clean exit without freeing anything
// (the driver frees it all) returns every charge and the slot.
func TestExitWhileHoldingReturnsEverything(t *testing.T) {
	for _, api := range []string{"alloc", "vmm", "array", "async", "pool", "array3d", "mipmap",
		"graphmem"} {
		t.Run(api, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fixtureOpts{ovh: 128 * MiB})
			lines, stderr, code := run(t, f.env(), "alloc", "--api", api, "--count", "4", "--no-free")
			require.Equal(t, 0, code, "stderr:\n%s", stderr)
			require.Equal(t, "4", lineWith(t, lines, "RESULT")["count"])
			require.Equal(t, uint64(0), f.used())
			require.Empty(t, f.sl.Usage.Slots())
			require.Equal(t, uint64(1), f.sl.Usage.AttachCount())
		})
	}
}

// TestDestroyingAContextCreditsItsAllocations: the driver frees what was
// allocated in a context when the context goes (destroyed, or its last primary
// reference released) — memory, arrays, mipmapped arrays and executable graphs
// with their graph memory; the charge follows, while the process lives on.
func TestDestroyingAContextCreditsItsAllocations(t *testing.T) {
	for _, api := range []string{"alloc", "pitch", "managed", "array", "array3d", "mipmap",
		"graphmem"} {
		for _, ctx := range []string{"primary", "create"} {
			t.Run(api+"/"+ctx, func(t *testing.T) {
				t.Parallel()
				const ovh = 256 * MiB
				f := newFixture(t, fixtureOpts{ovh: ovh})
				p := start(t, f.env(), "alloc", "--path", "gpa2:12000", "--api", api, "--count", "3",
					"--ctx", ctx, "--drop-ctx", "--step")
				p.phase("ready")
				p.next()
				p.phase("allocated")
				f.requireAgree(p.pid(), ovh+3*chunk, "held")
				p.next()
				p.phase("released")
				f.requireAgree(p.pid(), 0, "context gone with its allocations")
				require.Equal(t, uint64(0), f.used())
				p.next()
				p.waitOK()
			})
		}
	}
}

// TestPoolDestroyedWithBlocksOut: a pool destroyed while blocks are still out
// gives back its idle reservation at once and each block as it is freed, exactly
// like the driver.
func TestPoolDestroyedWithBlocksOut(t *testing.T) {
	const ovh = 256 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh})
	p := start(t, f.env(), "alloc", "--path", "dlsym", "--api", "pool", "--count", "3",
		"--destroy-pool-first", "--step")
	p.phase("ready")
	p.next()
	p.phase("allocated")
	f.requireAgree(p.pid(), ovh+3*chunk, "held")
	p.next()
	p.phase("pool_destroyed")
	f.requireAgree(p.pid(), ovh+3*chunk, "blocks of a destroyed pool still count")
	p.next()
	p.phase("freed")
	f.requireAgree(p.pid(), ovh, "blocks returned")
	p.next()
	p.phase("released")
	p.next()
	p.waitOK()
	require.Equal(t, uint64(0), f.used())
}

// TestUntrackedFreeGoesToTheDriver: memory libvgpu never saw (allocated behind
// its back) is freed by the driver when the hooked cuMemFree is called on it, and
// nothing is credited; a pointer nobody allocated gets the driver's own error.
func TestUntrackedFreeGoesToTheDriver(t *testing.T) {
	const ovh = 256 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh})
	p := start(t, f.env(), "badfree", "--size", "64MiB")
	p.expect("BYPASS")
	p.phase("bypassed")
	require.Equal(t, ovh, f.slotUsed(p.pid()), "libvgpu charged only the context")
	require.Equal(t, ovh+64*MiB, f.simProc(0, p.pid()).UsedBytes, "the driver holds both")
	p.next()
	res := p.expect("RESULT")
	require.Equal(t, "0", res["bypass_free"], "the driver must have freed the untracked block")
	require.Equal(t, "1", res["invalid_free"], "the driver's own CUDA_ERROR_INVALID_VALUE")
	p.phase("freed")
	f.requireAgree(p.pid(), ovh, "after the untracked frees")
	require.Equal(t, ovh, f.used())
	p.next()
	p.waitOK()
	require.Equal(t, uint64(0), f.used())
}

// TestDeviceOutsideTheSlice: the slice names its device by UUID; a process whose
// CUDA ordinal 0 is that device (CUDA_VISIBLE_DEVICES) is charged there, one
// whose ordinal 0 is another device gets no memory on it, not even a context.
func TestDeviceOutsideTheSlice(t *testing.T) {
	const ovh = 128 * MiB
	f := newFixture(t, fixtureOpts{devices: 2, ovh: ovh, uuid: true, sliceDev: 1})

	e := f.env("CUDA_VISIBLE_DEVICES=1")
	p := start(t, e, "alloc", "--api", "alloc", "--count", "2", "--step")
	p.phase("ready")
	p.next()
	p.phase("allocated")
	require.Equal(t, ovh+2*chunk, f.slotUsed(p.pid()))
	require.Equal(t, ovh+2*chunk, f.simProc(1, p.pid()).UsedBytes, "node device 1 holds it")
	require.Equal(t, ovh+2*chunk, f.used())
	p.next()
	p.phase("freed")
	p.next()
	p.phase("released")
	p.next()
	p.waitOK()

	_, stderr, code := run(t, f.env(), "alloc", "--api", "alloc", "--count", "1")
	require.Equal(t, 1, code, "stderr:\n%s", stderr)
	require.Contains(t, stderr, "a->retain(&ctx, 0) = 2 (CUDA_ERROR_OUT_OF_MEMORY)")
	lines := vgpuLines(stderr)
	require.Len(t, lines, 1, "stderr:\n%s", stderr)
	require.Contains(t, lines[0], "CUDA device 0 is not part of slice")
	require.Equal(t, uint64(0), f.used())
	require.Equal(t, uint64(0), f.simStatus().Devices[0].Used)
}

// runQuery starts the query program and returns a function reading one round.
func runQuery(t *testing.T, e env, args ...string) (*proc, func() map[string]uint64) {
	p := start(t, e, "query", args...)
	first := true
	return p, func() map[string]uint64 {
		t.Helper()
		if !first {
			p.next()
		}
		first = false
		raw := p.expect("QUERY")
		out := map[string]uint64{}
		for k := range raw {
			out[k] = num(t, raw, k)
		}
		return out
	}
}

// TestQueriesReportTheSlice: cuMemGetInfo, cuDeviceTotalMem and
// nvmlDeviceGetMemoryInfo(_v2) (linked and through dlsym, as go-nvml does) show
// the slice: its limit as total, its usage as used, and a free figure clamped
// both by the real device (another tenant filling the GPU) and at zero (a limit
// lowered below usage), never another tenant's usage.
func TestQueriesReportTheSlice(t *testing.T) {
	for _, nvmlPath := range []string{"linked", "dlsym"} {
		t.Run("nvml="+nvmlPath, func(t *testing.T) {
			t.Parallel()
			const ovh = 256 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh, limit: 2 * GiB, physical: 8 * GiB})
			args := []string{"--alloc", "512MiB"}
			if nvmlPath == "dlsym" {
				args = append(args, "--nvml-dlsym")
			}
			p, query := runQuery(t, f.env(), args...)
			used := ovh + 512*MiB

			q := query()
			for _, k := range []string{"cu_total", "totalmem", "nvml_total", "nvml2_total"} {
				require.Equal(t, f.limit, q[k], k)
			}
			for _, k := range []string{"cu_free", "nvml_free", "nvml2_free"} {
				require.Equal(t, f.limit-used, q[k], k)
			}
			require.Equal(t, used, q["nvml_used"])
			require.Equal(t, used, q["nvml2_used"])
			require.Equal(t, uint64(0), q["nvml2_reserved"])

			// Another tenant, outside the slice, fills most of the physical device.
			hog := start(t, f.bare(), "alloc", "--api", "alloc", "--count", "27", "--chunk", "256MiB",
				"--step")
			hog.phase("ready")
			hog.next()
			hog.phase("allocated")
			dev := f.simStatus().Devices[0]
			realFree := dev.Total - dev.Used
			require.Less(t, realFree, f.limit-used, "the hog must leave less than the slice's free")
			q = query()
			for _, k := range []string{"cu_free", "nvml_free", "nvml2_free"} {
				require.Equal(t, realFree, q[k], "%s: free is what the device really has", k)
			}
			require.Equal(t, f.limit, q["cu_total"])
			require.Equal(t, used, q["nvml_used"], "another tenant's usage must not leak in")
			require.Equal(t, used, q["nvml2_used"])
			hog.next()
			hog.phase("freed")
			hog.next()
			hog.phase("released")
			hog.next()
			hog.waitOK()

			// The limit is lowered below what the slice uses.
			b, err := shm.OpenBudget(f.slice+"/budget", true)
			require.NoError(t, err)
			defer b.Close()
			require.NoError(t, b.SetMemoryLimit(0, 512*MiB))
			q = query()
			for _, k := range []string{"cu_free", "nvml_free", "nvml2_free"} {
				require.Equal(t, uint64(0), q[k], "%s must clamp at 0, not wrap", k)
			}
			require.Equal(t, 512*MiB, q["cu_total"])
			require.Equal(t, 512*MiB, q["nvml_total"])
			require.Equal(t, used, q["nvml_used"])
			p.waitOK()
		})
	}
}

// TestQueriesNeverExceedTheCard: a slice whose limit is larger than the card
// (misconfigured, or deliberately unlimited) reports the card's own total, and
// free never more than the card has.
func TestQueriesNeverExceedTheCard(t *testing.T) {
	const ovh = 256 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh, limit: 64 * GiB, physical: 4 * GiB})
	p, query := runQuery(t, f.env(), "--alloc", "512MiB")
	q := query()
	for _, k := range []string{"cu_total", "totalmem", "nvml_total", "nvml2_total"} {
		require.Equal(t, 4*GiB, q[k], "%s: the card's total, not the 64 GiB limit", k)
	}
	for _, k := range []string{"cu_free", "nvml_free", "nvml2_free"} {
		require.Equal(t, 4*GiB-ovh-512*MiB, q[k], k)
	}
	p.waitOK()
}

// corruption damages a freshly created slice; want is what libvgpu's one line
// must say.
type corruption struct {
	name   string
	damage func(t *testing.T, slice string)
	want   string
	// usageIntact: the usage file is still valid, so the test can check nothing
	// was charged to it.
	usageIntact bool
}

func corruptions() []corruption {
	return []corruption{
		{"budget-bad-magic", func(t *testing.T, s string) { patch(t, s+"/budget", 0, []byte("NOTVGPU!")) },
			"budget: bad magic", true},
		{"usage-bad-magic", func(t *testing.T, s string) { patch(t, s+"/usage", 0, []byte("NOTVGPU!")) },
			"usage: bad magic", false},
		{"budget-abi-major", func(t *testing.T, s string) { patch(t, s+"/budget", 8, []byte{2, 0}) },
			"budget: ABI version 2.", true}, // any minor
		{"usage-abi-major", func(t *testing.T, s string) { patch(t, s+"/usage", 8, []byte{9, 0}) },
			"usage: ABI version 9.", false},
		{"usage-truncated", func(t *testing.T, s string) { truncate(t, s+"/usage", 1000) },
			"usage: truncated: file has 1000 bytes", false},
		{"budget-truncated-header", func(t *testing.T, s string) { truncate(t, s+"/budget", 10) },
			"budget: truncated: 10 bytes", true},
		{"budget-oversized", func(t *testing.T, s string) { grow(t, s+"/budget", 4096) },
			"budget: oversized", true},
		{"budget-missing", func(t *testing.T, s string) { require.NoError(t, removeFile(s+"/budget")) },
			"No such file or directory", true},
	}
}

// TestCorruptRegions: a bad region makes libvgpu say so in one stderr line and
// then pass through (default: the program runs as if libvgpu were absent) or,
// with VGPU_FAIL_MODE=refuse, refuse (cuInit: CUDA_ERROR_NOT_PERMITTED, every
// allocation: CUDA_ERROR_OUT_OF_MEMORY).
func TestCorruptRegions(t *testing.T) {
	for _, c := range corruptions() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			const ovh = 128 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh})
			c.damage(t, f.slice)

			lines, stderr, code := run(t, f.env(), "alloc", "--api", "alloc", "--count", "2")
			require.Equal(t, 0, code, "passthrough must let the program run; stderr:\n%s", stderr)
			vl := vgpuLines(stderr)
			require.Len(t, vl, 1, "exactly one line from libvgpu; stderr:\n%s", stderr)
			require.Contains(t, vl[0], c.want)
			require.Contains(t, vl[0], "passing through")
			require.Equal(t, "2", lineWith(t, lines, "RESULT")["count"])
			if c.usageIntact {
				require.Equal(t, uint64(0), f.used(), "passthrough charges nothing")
				require.Empty(t, f.sl.Usage.Slots())
			}

			lines, stderr, code = run(t, f.env("VGPU_FAIL_MODE=refuse"), "alloc", "--api", "alloc",
				"--count", "2", "--ignore-init")
			require.Equal(t, 4, code, "stderr:\n%s", stderr)
			vl = vgpuLines(stderr)
			require.Len(t, vl, 1, "stderr:\n%s", stderr)
			require.Contains(t, vl[0], c.want)
			require.Contains(t, vl[0], "refusing CUDA (VGPU_FAIL_MODE=refuse)")
			require.Equal(t, "CUDA_ERROR_NOT_PERMITTED", lineWith(t, lines, "INIT")["name"])
			require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", lineWith(t, lines, "RESULT")["name"])
		})
	}
}

// TestNoSlice: without a slice libvgpu says so once and passes through by
// default; refuses with VGPU_FAIL_MODE=refuse, and fails closed on a value it does
// not know.
func TestNoSlice(t *testing.T) {
	const ovh = 128 * MiB
	f := newFixture(t, fixtureOpts{ovh: ovh})
	e := f.env()
	e.slice = ""

	lines, stderr, code := run(t, e, "alloc", "--api", "async", "--count", "3")
	require.Equal(t, 0, code, "stderr:\n%s", stderr)
	vl := vgpuLines(stderr)
	require.Len(t, vl, 1, "the message comes once, however many hooked calls; stderr:\n%s", stderr)
	require.True(t, strings.HasPrefix(vl[0], "vgpu: no slice"), vl[0])
	require.Contains(t, vl[0], "passing through")
	require.Equal(t, "3", lineWith(t, lines, "RESULT")["count"])

	for _, mode := range []string{"refuse", "bogus"} {
		e.extra = []string{"VGPU_FAIL_MODE=" + mode}
		lines, stderr, code = run(t, e, "alloc", "--api", "alloc", "--count", "1", "--ignore-init")
		require.Equal(t, 4, code, "stderr:\n%s", stderr)
		vl = vgpuLines(stderr)
		require.Len(t, vl, 1, "stderr:\n%s", stderr)
		require.Contains(t, vl[0], "refusing CUDA")
		require.Equal(t, "800", lineWith(t, lines, "INIT")["err"])
		require.Equal(t, "2", lineWith(t, lines, "RESULT")["err"])
	}
	require.Equal(t, uint64(0), f.used())
}

// TestLogLevel: VGPU_LOG_LEVEL decides which of libvgpu's lines are written,
// never what it does: without a slice the pass-through warning shows at the
// default level, at warn and at debug (with what initialization found), not at
// error or off; the refusal (an error) shows at error but not at off; an
// unknown level says so and keeps the default.
func TestLogLevel(t *testing.T) {
	f := newFixture(t, fixtureOpts{ovh: 128 * MiB})
	e := f.env()
	e.slice = ""
	for _, c := range []struct {
		level, mode string
		lines       int
		code        int
	}{
		{"", "passthrough", 1, 0},
		{"warn", "passthrough", 1, 0},
		{"debug", "passthrough", 2, 0}, // plus what initialization found
		{"error", "passthrough", 0, 0},
		{"off", "passthrough", 0, 0},
		{"error", "refuse", 1, 4},
		{"off", "refuse", 0, 4},
		{"loud", "passthrough", 2, 0},
	} {
		e.extra = []string{"VGPU_LOG_LEVEL=" + c.level, "VGPU_FAIL_MODE=" + c.mode}
		args := []string{"--api", "alloc", "--count", "1"}
		if c.mode == "refuse" {
			args = append(args, "--ignore-init")
		}
		_, stderr, code := run(t, e, "alloc", args...)
		require.Equal(t, c.code, code, "level %q mode %s; stderr:\n%s", c.level, c.mode, stderr)
		vl := vgpuLines(stderr)
		require.Len(t, vl, c.lines, "level %q mode %s; stderr:\n%s", c.level, c.mode, stderr)
		if c.level == "loud" {
			require.Contains(t, vl[0], "VGPU_LOG_LEVEL=loud")
		}
	}
}
