package daemon

import (
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// ringWord stores v and wakes the word's waiters the way libvgpu rings its
// doorbell (a shared FUTEX_WAKE).
func ringWord(w *uint32, v uint32) {
	atomic.StoreUint32(w, v)
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWakeOp, 1, 0, 0, 0)
}

// The doorbell rings the loop when a published word is woken with a new
// value, and after a publish it waits on the new words; publishing the same
// words again does not interrupt the wait.
func TestDoorbellRings(t *testing.T) {
	rings := make(chan struct{}, 16)
	d := newDoorbell(func() { rings <- struct{}{} })
	go d.run()
	defer d.close()
	expectRing := func(what string) {
		t.Helper()
		select {
		case <-rings:
		case <-time.After(5 * time.Second):
			t.Fatalf("no ring: %s", what)
		}
	}
	// The words live in a shared mapping, as the usage regions' do (and
	// where no Go stack move can take them away from the published address).
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	defer unix.Munmap(mem)
	words := unsafe.Slice((*uint32)(unsafe.Pointer(&mem[0])), 2)
	d.publish([]bellWord{{addr: uintptr(unsafe.Pointer(&words[0])), val: 0}})
	gen := atomic.LoadUint32(&d.gen)
	d.publish([]bellWord{{addr: uintptr(unsafe.Pointer(&words[0])), val: 0}})
	require.Equal(t, gen, atomic.LoadUint32(&d.gen), "the same words: no interruption")
	time.Sleep(20 * time.Millisecond) // let it wait
	ringWord(&words[0], 1)
	expectRing("the published word")

	// A second word published: its request rings too.
	d.publish([]bellWord{{addr: uintptr(unsafe.Pointer(&words[0])), val: 1},
		{addr: uintptr(unsafe.Pointer(&words[1])), val: 0}})
	require.Equal(t, gen+1, atomic.LoadUint32(&d.gen))
	time.Sleep(20 * time.Millisecond)
	ringWord(&words[1], 1)
	expectRing("the newly published word")
	require.Positive(t, d.rings.Load())
}
