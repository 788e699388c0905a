package shm

import (
	"math"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Elastic memory (ABI 1.3; the protocol is described in vgpu_shm.h above
// VGPU_ELASTIC_WAIT_MS_DEFAULT): libvgpu posts a request in the usage region
// and rings a futex doorbell; vgpud answers in the budget region and wakes the
// waiters. Nothing in the request is trusted: it only says what a tenant asks.

// ElasticWaitDefaultMs is VGPU_ELASTIC_WAIT_MS_DEFAULT: how long libvgpu waits
// for an answer unless VGPU_ELASTIC_WAIT_MS says otherwise.
const ElasticWaitDefaultMs = 100

// ElasticRequest is what a slice asks for on one device.
type ElasticRequest struct {
	// Bytes is what the slice asks to hold on the device: its use plus the
	// allocation that did not fit (absolute, not the excess).
	Bytes uint64
	// Seq counts the requests posted on the device.
	Seq uint64
}

// ElasticRequest reads device d's request (seq first: a request is written
// bytes-then-seq, so the bytes read after a seq are at least that new).
func (r *UsageRegion) ElasticRequest(d int) ElasticRequest {
	ud := r.dev(d)
	seq := atomic.LoadUint64(&ud.ElasticRequestSeq)
	return ElasticRequest{Bytes: atomic.LoadUint64(&ud.ElasticRequestBytes), Seq: seq}
}

// PostElasticRequest posts a request as libvgpu does (tests and tools that
// play the tenant): stores bytes, bumps the seq, rings the doorbell. It
// returns the request's seq.
func (r *UsageRegion) PostElasticRequest(d int, bytes uint64) uint64 {
	ud := r.dev(d)
	atomic.StoreUint64(&ud.ElasticRequestBytes, bytes)
	seq := atomic.AddUint64(&ud.ElasticRequestSeq, 1)
	futexWake(&ud.ElasticRequestSeq)
	return seq
}

// ElasticDoorbell is the address of device d's doorbell: the futex word
// (low half of elastic_request_seq) libvgpu wakes after posting a request.
// It stays valid while the region is mapped.
func (r *UsageRegion) ElasticDoorbell(d int) *uint32 {
	return futexWord(&r.dev(d).ElasticRequestSeq)
}

// ElasticGrantSeq is the last request seq vgpud answered on device d.
func (r *BudgetRegion) ElasticGrantSeq(d int) uint64 {
	return atomic.LoadUint64(&r.dev(d).ElasticGrantSeq)
}

// MemoryMax is device d's elastic ceiling (0 or <= the limit: none).
func (r *BudgetRegion) MemoryMax(d int) uint64 {
	return atomic.LoadUint64(&r.dev(d).MemoryMax)
}

// SetMemoryMax changes device d's elastic ceiling.
func (r *BudgetRegion) SetMemoryMax(d int, bytes uint64) error {
	return r.update("set memory ceiling", func() error {
		atomic.StoreUint64(&r.dev(d).MemoryMax, bytes)
		return nil
	})
}

// AnswerElastic sets device d's memory limit (raised by a grant, or left as
// it is: pass the current limit) and then marks request seq answered, and
// wakes the requesters waiting on it. The limit is stored before the seq, so a
// waiter that sees its seq answered sees the limit that answered it.
func (r *BudgetRegion) AnswerElastic(d int, limit, seq uint64) error {
	err := r.update("answer elastic request", func() error {
		if limit == 0 {
			return specErr("memory limit must be > 0")
		}
		bd := r.dev(d)
		atomic.StoreUint64(&bd.MemoryLimit, limit)
		atomic.StoreUint64(&bd.ElasticGrantSeq, seq)
		return nil
	})
	if err == nil {
		futexWake(&r.dev(d).ElasticGrantSeq)
	}
	return err
}

// futexWord is the low 32 bits of a 64-bit field: the futex word of the
// protocol on the little-endian ABIs the contract supports.
func futexWord(p *uint64) *uint32 { return (*uint32)(unsafe.Pointer(p)) }

// futexWakeOp is FUTEX_WAKE (linux/futex.h; x/sys/unix does not name it).
const futexWakeOp = 1

// futexWake wakes every waiter on the low half of *p. Shared (not
// FUTEX_PRIVATE): the waiters are other processes mapping the same file. An
// error (a kernel without futexes) only costs the waiters their poll period.
func futexWake(p *uint64) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(futexWord(p))),
		futexWakeOp, uintptr(math.MaxInt32), 0, 0, 0)
}
