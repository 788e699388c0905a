package daemon

import (
	"errors"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The elastic doorbell: libvgpu FUTEX_WAKEs the low half of a device's
// elastic_request_seq after posting a request (vgpu_shm.h), and vgpud blocks
// in futex_waitv(2) (Linux 5.16+) on every elastic slice device's word at
// once, so a request is seen in microseconds rather than at the next tick.
// The goroutine never touches the regions' memory itself — it only passes
// their addresses to the kernel, which answers EFAULT for a region unmapped
// meanwhile — so a release racing with a wait cannot fault vgpud. Where
// futex_waitv is missing the regular tick still answers (within one enforcer
// interval).

// bellWord is one doorbell: the word's address and the value it holds while
// no request is pending (the low half of the seq last answered).
type bellWord struct {
	addr uintptr
	val  uint32
}

// futexWaitv mirrors struct futex_waitv.
type futexWaitv struct {
	val      uint64
	uaddr    uint64
	flags    uint32
	reserved uint32
}

const (
	// futexWaitvMax is FUTEX_WAITV_MAX: the most words one call waits on
	// (one of them the generation word). Slices beyond it are served by the
	// regular tick.
	futexWaitvMax = 128
	// futex2Size32 is FUTEX2_SIZE_U32; without futex2Private the words are
	// shared between processes, as the doorbells are.
	futex2Size32 = 0x02
	// futex2Private is FUTEX2_PRIVATE: the word is this process's own.
	futex2Private = 128
	// futexWakeOp is FUTEX_WAKE, futexPrivateFlag FUTEX_PRIVATE_FLAG.
	futexWakeOp      = 1
	futexPrivateFlag = 128
	// bellRecheck bounds how long a changed set of doorbells waits to be
	// waited on (a new elastic slice), and how soon a stop is noticed.
	bellRecheck = 100 * time.Millisecond
	// bellGap is the least time between two rings passed on to the loop: a
	// tenant ringing in a loop costs vgpud at most one elastic step per gap.
	// A ring the loop did not answer (the words it waits on did not change:
	// a request vgpud cannot read, a doorbell rung with nothing posted)
	// doubles the gap, up to bellGapMax, until an answer comes.
	bellGap    = time.Millisecond
	bellGapMax = 64 * time.Millisecond
)

// doorbell waits on the published words and rings the loop.
type doorbell struct {
	words atomic.Pointer[[]bellWord]
	// gen counts publishes of a changed set of words; the waiter waits on it
	// too (a private futex word), so a new slice's doorbell is waited on at
	// once, not after the current wait times out.
	gen   uint32 // atomically; a plain word: its address is the futex
	ring  func()
	stop  chan struct{}
	done  chan struct{}
	rings atomic.Uint64
}

func newDoorbell(ring func()) *doorbell {
	d := &doorbell{ring: ring, stop: make(chan struct{}), done: make(chan struct{})}
	empty := []bellWord{}
	d.words.Store(&empty)
	return d
}

// publish replaces the words waited on (the loop, after each tick) and
// interrupts the current wait when they changed.
func (d *doorbell) publish(words []bellWord) {
	if slices.Equal(*d.words.Load(), words) {
		return
	}
	d.words.Store(&words)
	atomic.AddUint32(&d.gen, 1)
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(&d.gen)), futexWakeOp|futexPrivateFlag, 1, 0, 0, 0)
}

// run waits until stop is closed.
func (d *doorbell) run() {
	defer close(d.done)
	var ws [futexWaitvMax]futexWaitv
	gap, rangAt := bellGap, ^uint32(0)
	for {
		select {
		case <-d.stop:
			return
		default:
		}
		gen := atomic.LoadUint32(&d.gen)
		words := *d.words.Load()
		// Slot 0: the private generation word, so a publish interrupts the wait.
		ws[0] = futexWaitv{val: uint64(gen), uaddr: uint64(uintptr(unsafe.Pointer(&d.gen))),
			flags: futex2Size32 | futex2Private}
		n := 1 + min(len(words), futexWaitvMax-1)
		for i, w := range words[:n-1] {
			ws[1+i] = futexWaitv{val: uint64(w.val), uaddr: uint64(w.addr), flags: futex2Size32}
		}
		err := waitv(ws[:n], bellRecheck)
		if atomic.LoadUint32(&d.gen) != gen {
			continue // new words: wait on them
		}
		switch {
		case err == nil, errors.Is(err, unix.EAGAIN):
			// Woken, or a word already differs: a request is pending.
			if gen == rangAt {
				gap = min(2*gap, bellGapMax) // the last ring brought no answer
			} else {
				gap = bellGap
			}
			rangAt = gen
			d.rings.Add(1)
			d.ring()
			d.sleep(gap)
		case errors.Is(err, unix.ETIMEDOUT), errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ENOSYS):
			return // the regular tick answers
		default:
			d.sleep(bellRecheck) // EFAULT: a region went away; the loop republishes
		}
	}
}

func (d *doorbell) sleep(t time.Duration) {
	select {
	case <-d.stop:
	case <-time.After(t):
	}
}

// close stops the goroutine and waits for it (at most bellRecheck).
func (d *doorbell) close() {
	close(d.stop)
	<-d.done
}

// waitv blocks in futex_waitv until a word is woken or differs from its
// value, or timeout passes (ETIMEDOUT).
func waitv(ws []futexWaitv, timeout time.Duration) error {
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		return err
	}
	deadline := unix.NsecToTimespec(now.Nano() + timeout.Nanoseconds())
	_, _, e := unix.Syscall6(unix.SYS_FUTEX_WAITV, uintptr(unsafe.Pointer(&ws[0])), uintptr(len(ws)), 0,
		uintptr(unsafe.Pointer(&deadline)), uintptr(unix.CLOCK_MONOTONIC), 0)
	if e != 0 {
		return e
	}
	return nil
}
