package shm

import (
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// futexWait blocks while *w == val, up to timeout (FUTEX_WAIT = 0, shared).
func futexWait(w *uint32, val uint32, timeout time.Duration) {
	ts := unix.NsecToTimespec(timeout.Nanoseconds())
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), 0, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// The request/grant round trip through two mappings of each file, as tenant
// (read-only budget, writable usage) and vgpud (writable budget) see them: a
// waiter blocked on the read-only budget's grant word is woken by the answer
// on vgpud's writable mapping, and sees the raised limit with its seq; vgpud
// blocked on the doorbell is woken by the post.
func TestElasticRequestAndAnswer(t *testing.T) {
	dir := t.TempDir()
	spec := testSpec()
	spec.Flags = BudgetFlagElastic
	spec.Devices[1].MemoryMax = 8 << 30
	require.NoError(t, CreateSlice(dir, spec))
	vgpud, err := OpenBudget(filepath.Join(dir, BudgetFile), true)
	require.NoError(t, err)
	defer vgpud.Close()
	tenant, err := OpenBudget(filepath.Join(dir, BudgetFile), false)
	require.NoError(t, err)
	defer tenant.Close()
	usage, err := OpenUsage(filepath.Join(dir, UsageFile))
	require.NoError(t, err)
	defer usage.Close()
	require.Equal(t, uint64(8<<30), tenant.MemoryMax(1))
	require.Equal(t, uint64(8<<30), tenant.Device(1).MemoryMax)

	// vgpud waits on the doorbell; the tenant posts.
	rang := make(chan ElasticRequest)
	bell := usage.ElasticDoorbell(1)
	go func() {
		futexWait(bell, 0, 5*time.Second)
		rang <- usage.ElasticRequest(1)
	}()
	time.Sleep(20 * time.Millisecond) // let it block
	seq := usage.PostElasticRequest(1, 6<<30)
	select {
	case req := <-rang:
		require.Equal(t, ElasticRequest{Bytes: 6 << 30, Seq: 1}, req)
	case <-time.After(2 * time.Second):
		t.Fatal("the doorbell did not wake vgpud's waiter")
	}

	// The tenant waits on the grant; vgpud answers.
	answered := make(chan [2]uint64)
	go func() {
		futexWait(futexWord(&tenant.dev(1).ElasticGrantSeq), 0, 5*time.Second)
		answered <- [2]uint64{tenant.ElasticGrantSeq(1), tenant.MemoryLimit(1)}
	}()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, vgpud.AnswerElastic(1, 6<<30, seq))
	select {
	case got := <-answered:
		require.Equal(t, [2]uint64{seq, 6 << 30}, got)
	case <-time.After(2 * time.Second):
		t.Fatal("the answer did not wake the tenant's waiter")
	}
	require.ErrorIs(t, vgpud.AnswerElastic(1, 0, seq+1), ErrInvalidSpec)
	require.Equal(t, seq, tenant.ElasticGrantSeq(1), "a refused answer changes nothing")
	require.ErrorIs(t, tenant.AnswerElastic(1, 1<<30, seq+1), ErrReadOnly)
}
