package integration

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/shm"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

// Elastic memory (ABI 1.3, vgpu_shm.h above VGPU_ELASTIC_WAIT_MS_DEFAULT): an
// allocation over the slice's limit but within its ceiling posts a request and
// waits for vgpud's answer. These tests play vgpud themselves (fakeVgpud), with
// the same shm calls vgpud makes.

// elasticFixture is a fixture whose slice has memory_max and the given flags.
func elasticFixture(t *testing.T, flags uint32, limit, max uint64) *fixture {
	t.Helper()
	return elasticFixtureOvh(t, flags, limit, max, 0)
}

// elasticFixtureOvh is elasticFixture with a context footprint (sim and budget).
func elasticFixtureOvh(t *testing.T, flags uint32, limit, max, ovh uint64) *fixture {
	t.Helper()
	r := root(t)
	_, err := os.Stat(filepath.Join(r, "build/test/elastic"))
	require.NoError(t, err, "run `make build` first")
	dir := t.TempDir()
	f := &fixture{t: t, root: r, node: filepath.Join(dir, "node"),
		slice: filepath.Join(dir, "slice"), limit: limit, ovh: ovh}
	ctxMem := ovh
	require.NoError(t, simgpu.Init(f.node, simgpu.Config{
		Devices: 1, Memory: 8 * GiB, SMs: 4, ContextMemory: &ctxMem}))
	require.NoError(t, shm.CreateSlice(f.slice, shm.SliceSpec{
		ID: "elastic", Flags: flags, Slots: 16,
		Devices: []shm.DeviceBudget{{Index: 0, MemoryLimit: limit, MemoryGuaranteed: limit,
			MemoryMax: max, ContextOverhead: ovh, ComputeShareBP: 10000}}}))
	sl, err := shm.OpenSlice(f.slice)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sl.Close() })
	f.sl = sl
	return f
}

// futexWait blocks while *w == val, up to timeout (FUTEX_WAIT, shared: libvgpu
// rings the doorbell from another process).
func futexWait(w *uint32, val uint32, timeout time.Duration) {
	ts := unix.NsecToTimespec(timeout.Nanoseconds())
	const futexWaitOp = 0 // FUTEX_WAIT (linux/futex.h)
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWaitOp,
		uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// seen is one request the fake vgpud saw, and when.
type seen struct {
	req shm.ElasticRequest
	at  time.Time
}

// fakeVgpud answers device 0's requests with decide(request, limit) -> new limit,
// woken by the doorbell (and polling every 20 ms, as vgpud does).
type fakeVgpud struct {
	mu   sync.Mutex
	seen []seen
	stop chan struct{}
	done chan struct{}
}

func startFakeVgpud(t *testing.T, f *fixture, decide func(req shm.ElasticRequest, limit uint64) uint64) *fakeVgpud {
	t.Helper()
	b, err := shm.OpenBudget(filepath.Join(f.slice, shm.BudgetFile), true)
	require.NoError(t, err)
	u, err := shm.OpenUsage(filepath.Join(f.slice, shm.UsageFile))
	require.NoError(t, err)
	v := &fakeVgpud{stop: make(chan struct{}), done: make(chan struct{})}
	last := u.ElasticRequest(0).Seq
	bell := u.ElasticDoorbell(0)
	go func() {
		defer close(v.done)
		for {
			select {
			case <-v.stop:
				return
			default:
			}
			futexWait(bell, uint32(last), 20*time.Millisecond)
			req := u.ElasticRequest(0)
			if req.Seq == last {
				continue
			}
			last = req.Seq
			v.mu.Lock()
			v.seen = append(v.seen, seen{req: req, at: time.Now()})
			v.mu.Unlock()
			if err := b.AnswerElastic(0, decide(req, b.MemoryLimit(0)), req.Seq); err != nil {
				t.Errorf("answer: %v", err)
			}
		}
	}()
	t.Cleanup(func() {
		close(v.stop)
		<-v.done
		_ = b.Close()
		_ = u.Close()
	})
	return v
}

func (v *fakeVgpud) requests() []seen {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]seen(nil), v.seen...)
}

// grant raises the limit to what was asked; deny leaves it.
func grant(req shm.ElasticRequest, _ uint64) uint64  { return req.Bytes }
func deny(_ shm.ElasticRequest, limit uint64) uint64 { return limit }

// runElastic runs build/test/elastic and returns its RESULT fields, the
// program's stderr and the wall time of the allocation it timed.
func runElastic(t *testing.T, f *fixture, extra []string, args ...string) (map[string]string, string, time.Duration) {
	t.Helper()
	lines, stderr, code := run(t, f.env(extra...), "elastic", args...)
	require.Equal(t, 0, code, "elastic %v: stdout %q stderr %q", args, lines, stderr)
	res := lineWith(t, lines, "RESULT")
	return res, stderr, time.Duration(num(t, res, "ns"))
}

// (a) A granted request: the allocation succeeds, the request asked for what the
// slice uses plus the allocation, and the limit is what vgpud granted.
func TestElasticGrantAdmits(t *testing.T) {
	for _, api := range []string{"alloc", "async"} {
		t.Run(api, func(t *testing.T) {
			f := elasticFixture(t, shm.BudgetFlagElastic, 1*GiB, 2*GiB)
			v := startFakeVgpud(t, f, grant)
			res, stderr, took := runElastic(t, f, []string{"VGPU_ELASTIC_WAIT_MS=2000"},
				"--api", api, "--base", "768MiB", "--alloc", "512MiB")
			require.Equal(t, "CUDA_SUCCESS", res["name"], "stderr: %s", stderr)
			reqs := v.requests()
			require.Len(t, reqs, 1, "one request")
			require.Equal(t, uint64(1), reqs[0].req.Seq)
			require.Equal(t, 768*MiB+512*MiB, reqs[0].req.Bytes, "used + the allocation")
			require.Equal(t, 768*MiB+512*MiB, f.sl.Budget.MemoryLimit(0))
			require.Equal(t, uint64(1), f.sl.Budget.ElasticGrantSeq(0))
			d := f.sl.Usage.Device(0)
			require.Zero(t, d.RefusedAllocs)
			require.Equal(t, 768*MiB+512*MiB, d.PeakBytes)
			require.Zero(t, d.UsedBytes, "everything freed")
			require.Empty(t, vgpuLines(stderr))
			t.Logf("%s: allocation with a grant took %v (post to success, in the program)", api, took)
			require.Less(t, took, 500*time.Millisecond, "sanity bound (loaded CI)")
		})
	}
}

// (b) An answer that does not raise the limit: OOM at once, well before the wait
// bound.
func TestElasticDeniedRefusesPromptly(t *testing.T) {
	f := elasticFixture(t, shm.BudgetFlagElastic, 1*GiB, 2*GiB)
	v := startFakeVgpud(t, f, deny)
	res, stderr, took := runElastic(t, f, []string{"VGPU_ELASTIC_WAIT_MS=2000"},
		"--base", "768MiB", "--alloc", "512MiB")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
	require.Len(t, v.requests(), 1, "asked once: a no is final")
	require.Equal(t, 1*GiB, f.sl.Budget.MemoryLimit(0))
	require.Equal(t, uint64(1), f.sl.Usage.Device(0).RefusedAllocs)
	require.Empty(t, vgpuLines(stderr), "an answered request is not a timeout")
	t.Logf("denied allocation refused after %v", took)
	require.Less(t, took, time.Second, "refused on the answer, not at the 2 s bound")
}

// (c) Nobody answers: OOM after VGPU_ELASTIC_WAIT_MS, counted, one log line.
func TestElasticUnansweredTimesOut(t *testing.T) {
	f := elasticFixture(t, shm.BudgetFlagElastic, 1*GiB, 2*GiB)
	res, stderr, took := runElastic(t, f, []string{"VGPU_ELASTIC_WAIT_MS=200"},
		"--base", "768MiB", "--alloc", "512MiB")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
	d := f.sl.Usage.Device(0)
	require.Equal(t, uint64(1), d.RefusedAllocs)
	require.Equal(t, uint64(1), d.ElasticRequestSeq)
	require.Equal(t, 768*MiB+512*MiB, d.ElasticRequestBytes)
	require.Equal(t, 1*GiB, f.sl.Budget.MemoryLimit(0))
	lines := vgpuLines(stderr)
	require.Len(t, lines, 1, "stderr: %s", stderr)
	require.Contains(t, lines[0], "elastic request for 1342177280 bytes on device 0 not answered in 200 ms")
	t.Logf("unanswered allocation refused after %v", took)
	require.GreaterOrEqual(t, took, 200*time.Millisecond)
	require.Less(t, took, 2*time.Second)
}

// (d) Beyond memory_max no grant can help: refused at once, nothing asked.
// (e) Without VGPU_BUDGET_F_ELASTIC, or with VGPU_ELASTIC_WAIT_MS=0, nothing is
// asked either.
func TestElasticNoRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
		wait  string
		alloc string
	}{
		{"above-max", shm.BudgetFlagElastic, "2000", "1400MiB"}, // 768 + 1400 > 2048
		{"not-elastic", 0, "2000", "512MiB"},
		{"wait-0", shm.BudgetFlagElastic, "0", "512MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := elasticFixture(t, tc.flags, 1*GiB, 2*GiB)
			v := startFakeVgpud(t, f, grant)
			res, stderr, took := runElastic(t, f, []string{"VGPU_ELASTIC_WAIT_MS=" + tc.wait},
				"--base", "768MiB", "--alloc", tc.alloc)
			require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
			d := f.sl.Usage.Device(0)
			require.Zero(t, d.ElasticRequestSeq, "no request posted")
			require.Zero(t, d.ElasticRequestBytes)
			require.Empty(t, v.requests())
			require.Equal(t, uint64(1), d.RefusedAllocs)
			require.Equal(t, 1*GiB, f.sl.Budget.MemoryLimit(0))
			require.Empty(t, vgpuLines(stderr))
			require.Less(t, took, time.Second, "refused at once")
		})
	}
}

// (f) A tenant that forges: it scribbles over its usage request words (they are
// only requests) and tries to write the grant word and its limit in the budget
// mapping (read-only: the writes fault, mprotect is refused). It gains nothing:
// with an old grant on record (seq 5) and its request seq reset below it,
// libvgpu's retry finds the limit unchanged and refuses at once.
func TestElasticForgeryGainsNothing(t *testing.T) {
	f := elasticFixture(t, shm.BudgetFlagElastic, 1*GiB, 2*GiB)
	b, err := shm.OpenBudget(filepath.Join(f.slice, shm.BudgetFile), true)
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, b.AnswerElastic(0, 1*GiB, 5))
	lines, stderr, code := run(t, f.env("VGPU_ELASTIC_WAIT_MS=2000"), "elastic",
		"--forge", "--base", "768MiB", "--alloc", "512MiB")
	require.Equal(t, 0, code, "stdout %q stderr %q", lines, stderr)
	fg := lineWith(t, lines, "FORGE")
	require.Equal(t, "11", fg["limit_sig"], "writing memory_limit must fault (SIGSEGV)")
	require.Equal(t, "11", fg["grant_sig"], "writing elastic_grant_seq must fault (SIGSEGV)")
	require.Equal(t, "13", fg["mprotect_errno"], "the budget mapping cannot be made writable (EACCES)")
	require.Equal(t, uint64(1*GiB), num(t, fg, "limit"))
	res := lineWith(t, lines, "RESULT")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
	took := time.Duration(num(t, res, "ns"))
	require.Less(t, took, time.Second, "refused on the (stale) answer")
	require.Equal(t, 1*GiB, f.sl.Budget.MemoryLimit(0))
	require.Equal(t, uint64(5), f.sl.Budget.ElasticGrantSeq(0))
	d := f.sl.Usage.Device(0)
	require.Equal(t, uint64(1), d.RefusedAllocs)
	require.Equal(t, uint64(1), d.ElasticRequestSeq, "libvgpu posted once after the forgery")
	require.Empty(t, vgpuLines(stderr))
}

// Two processes of one slice: one waits for its request while the other's grant
// is answered; both end up admitted if vgpud grants each request (absolute
// requests: each asks for the slice's use plus its own allocation).
func TestElasticTwoProcesses(t *testing.T) {
	f := elasticFixture(t, shm.BudgetFlagElastic, 1*GiB, 3*GiB)
	v := startFakeVgpud(t, f, func(req shm.ElasticRequest, limit uint64) uint64 {
		if req.Bytes > limit {
			return req.Bytes
		}
		return limit
	})
	e := f.env("VGPU_ELASTIC_WAIT_MS=2000")
	a := start(t, e, "elastic", "--step", "--base", "512MiB", "--alloc", "512MiB")
	bp := start(t, e, "elastic", "--step", "--base", "256MiB", "--alloc", "512MiB")
	a.phase("ready")
	bp.phase("ready")
	a.next()
	bp.next()
	ra := a.expect("RESULT")
	rb := bp.expect("RESULT")
	require.Equal(t, "CUDA_SUCCESS", ra["name"])
	require.Equal(t, "CUDA_SUCCESS", rb["name"])
	a.phase("allocated")
	bp.phase("allocated")
	// Both hold their memory now: the limit covers all of it.
	t.Logf("two processes: %s and %s ns; limit now %s after %d requests", ra["ns"], rb["ns"],
		mib(f.sl.Budget.MemoryLimit(0)), len(v.requests()))
	require.Equal(t, 1792*MiB, f.used())
	require.GreaterOrEqual(t, f.sl.Budget.MemoryLimit(0), 1792*MiB)
	require.Zero(t, f.sl.Usage.Device(0).RefusedAllocs)
	a.next()
	bp.next()
	a.waitOK()
	bp.waitOK()
}

// Every charging path asks: the context's own footprint (primary and created),
// plain, pitch, managed, VMM, arrays, stream-ordered and pool allocations, graph
// memory. The slice starts below one context's footprint and is granted what
// each refused admission asks for.
func TestElasticEveryPath(t *testing.T) {
	type tc struct{ api, ctx string }
	var cases []tc
	for _, api := range capAPIs() {
		cases = append(cases, tc{api, "primary"})
	}
	cases = append(cases, tc{"alloc", "create"})
	for _, c := range cases {
		t.Run(c.api+"/ctx="+c.ctx, func(t *testing.T) {
			t.Parallel()
			const ovh = 64 * MiB
			f := elasticFixtureOvh(t, shm.BudgetFlagElastic, 32*MiB, 1*GiB, ovh)
			v := startFakeVgpud(t, f, func(req shm.ElasticRequest, limit uint64) uint64 {
				return max(req.Bytes, limit)
			})
			lines, stderr, code := run(t, f.env("VGPU_ELASTIC_WAIT_MS=5000"), "alloc",
				"--path", "linked", "--api", c.api, "--ctx", c.ctx, "--count", "3", "--chunk", "64MiB")
			require.Equal(t, 0, code, "stdout %q stderr %q", lines, stderr)
			res := lineWith(t, lines, "RESULT")
			require.Equal(t, "3", res["count"], "%v", res)
			d := f.sl.Usage.Device(0)
			require.Zero(t, d.RefusedAllocs)
			require.Equal(t, ovh+3*chunk, d.PeakBytes)
			require.Equal(t, ovh+3*chunk, f.sl.Budget.MemoryLimit(0), "granted as asked, no more")
			reqs := v.requests()
			require.GreaterOrEqual(t, len(reqs), 2, "the context and at least one chunk asked")
			require.Equal(t, ovh, reqs[0].req.Bytes, "the context's footprint asked first")
			require.Empty(t, vgpuLines(stderr))
		})
	}
}

// Where futexes fail (ENOSYS: a seccomp filter in the program), libvgpu waits in
// 1 ms sleeps: a grant (found by vgpud's poll) still admits, no answer still
// refuses after VGPU_ELASTIC_WAIT_MS.
func TestElasticWithoutFutex(t *testing.T) {
	t.Run("granted", func(t *testing.T) {
		f := elasticFixture(t, shm.BudgetFlagElastic, 1*GiB, 2*GiB)
		v := startFakeVgpud(t, f, grant)
		res, stderr, took := runElastic(t, f, []string{"VGPU_ELASTIC_WAIT_MS=2000"},
			"--no-futex", "--base", "768MiB", "--alloc", "512MiB")
		require.Equal(t, "CUDA_SUCCESS", res["name"], "stderr: %s", stderr)
		require.Len(t, v.requests(), 1)
		require.Equal(t, 768*MiB+512*MiB, f.sl.Budget.MemoryLimit(0))
		t.Logf("granted without futexes after %v (vgpud polls every 20 ms)", took)
		require.Less(t, took, time.Second)
	})
	t.Run("unanswered", func(t *testing.T) {
		f := elasticFixture(t, shm.BudgetFlagElastic, 1*GiB, 2*GiB)
		res, stderr, took := runElastic(t, f, []string{"VGPU_ELASTIC_WAIT_MS=200"},
			"--no-futex", "--base", "768MiB", "--alloc", "512MiB")
		require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", res["name"])
		require.Equal(t, uint64(1), f.sl.Usage.Device(0).RefusedAllocs)
		require.Len(t, vgpuLines(stderr), 1, "stderr: %s", stderr)
		t.Logf("unanswered without futexes: refused after %v", took)
		require.GreaterOrEqual(t, took, 200*time.Millisecond)
		require.Less(t, took, 2*time.Second)
	})
}
