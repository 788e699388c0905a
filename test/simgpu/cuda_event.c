//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_event.c — events: cuEventCreate / Destroy(_v2) / Record / RecordWithFlags /
 * Query / Synchronize / ElapsedTime(_v2), and cuStreamWaitEvent.
 *
 * The simulated device is one FIFO timeline: a stream's queued work ends at the
 * stream's last_end. An event recorded on a stream completes when everything queued
 * on that stream before it has run: at max(the stream's last_end, now) at record
 * time. So a begin / end pair around a launch measures the launch's span on the
 * device, including the time it queued behind other processes' work — as
 * time-slicing stretches a kernel's span on a real GPU.
 *
 * Driver semantics kept (cuda.h): an event never recorded reads as complete
 * (Query and Synchronize succeed) but has no time (ElapsedTime:
 * CUDA_ERROR_INVALID_HANDLE); ElapsedTime of an unfinished event is
 * CUDA_ERROR_NOT_READY; an event made with CU_EVENT_DISABLE_TIMING has no time
 * either (CUDA_ERROR_INVALID_HANDLE); an event and the stream it is recorded on
 * must belong to one context (CUDA_ERROR_INVALID_HANDLE otherwise); a destroyed or
 * foreign handle, or one whose context was destroyed, is CUDA_ERROR_INVALID_HANDLE. Query, Synchronize and ElapsedTime
 * need no current context, Create and Record do (Record: the stream's context).
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

#define EVENT_MAGIC 0x45564e31u

#define CU_EVENT_BLOCKING_SYNC 0x1u
#define CU_EVENT_DISABLE_TIMING 0x2u
#define CU_EVENT_INTERPROCESS 0x4u
#define CU_EVENT_RECORD_EXTERNAL 0x1u

struct sim_event {
    uint32_t magic;
    bool alive;
    unsigned epoch;
    struct sim_ctx *ctx;
    unsigned flags;
    _Atomic int recorded;
    _Atomic uint64_t done_at; /* device timeline (CLOCK_MONOTONIC ns) */
};

static CUresult event_of(CUevent h, struct sim_event **out)
{
    struct sim_event *e = (struct sim_event *)h;
    if (e == NULL || e->magic != EVENT_MAGIC || !e->alive || e->epoch != G.epoch)
        return CUDA_ERROR_INVALID_HANDLE;
    /* The driver destroys a context's events with it (a primary context retained
     * again is the same object here: its old events read as valid again). */
    if (!ctx_live(e->ctx))
        return CUDA_ERROR_INVALID_HANDLE;
    *out = e;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventCreate(CUevent *ph, unsigned int flags)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (ph == NULL ||
        (flags & ~(CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS)))
        return CUDA_ERROR_INVALID_VALUE;
    /* An interprocess event must not time (cuda.h). */
    if ((flags & CU_EVENT_INTERPROCESS) && !(flags & CU_EVENT_DISABLE_TIMING))
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_event *e = calloc(1, sizeof *e);
    if (e == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = EVENT_MAGIC;
    e->alive = true;
    e->epoch = G.epoch;
    e->ctx = c;
    e->flags = flags;
    *ph = (CUevent)e;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventDestroy_v2(CUevent h)
{
    CHECK_INIT();
    struct sim_event *e;
    CUresult r = event_of(h, &e);
    if (r != CUDA_SUCCESS)
        return r;
    e->alive = false; /* kept allocated so a stale handle tests as invalid */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventDestroy(CUevent h) { return cuEventDestroy_v2(h); }

static CUresult event_record(CUevent h, CUstream s, unsigned flags, bool ptsz)
{
    CHECK_INIT();
    struct sim_event *e;
    CUresult r = event_of(h, &e);
    if (r != CUDA_SUCCESS)
        return r;
    if (flags & ~CU_EVENT_RECORD_EXTERNAL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    _Atomic uint64_t *end;
    r = resolve_stream(s, ptsz, &c, &end);
    if (r != CUDA_SUCCESS)
        return r;
    if (c != e->ctx)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!ctx_live(e->ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    uint64_t t = atomic_load(end);
    if (s == NULL && !ptsz) /* the legacy stream waits for every blocking stream */
        t = atomic_load(&c->last_end);
    uint64_t now = sim_now_ns();
    atomic_store(&e->done_at, t > now ? t : now);
    atomic_store_explicit(&e->recorded, 1, memory_order_release);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent h, CUstream s) { return event_record(h, s, 0, false); }
EXPORT CUresult cuEventRecord_ptsz(CUevent h, CUstream s) { return event_record(h, s, 0, true); }
EXPORT CUresult cuEventRecordWithFlags(CUevent h, CUstream s, unsigned int flags)
{
    return event_record(h, s, flags, false);
}
EXPORT CUresult cuEventRecordWithFlags_ptsz(CUevent h, CUstream s, unsigned int flags)
{
    return event_record(h, s, flags, true);
}

EXPORT CUresult cuEventQuery(CUevent h)
{
    CHECK_INIT();
    struct sim_event *e;
    CUresult r = event_of(h, &e);
    if (r != CUDA_SUCCESS)
        return r;
    if (!atomic_load_explicit(&e->recorded, memory_order_acquire))
        return CUDA_SUCCESS; /* nothing to wait for */
    return atomic_load(&e->done_at) > sim_now_ns() ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}

EXPORT CUresult cuEventSynchronize(CUevent h)
{
    CHECK_INIT();
    struct sim_event *e;
    CUresult r = event_of(h, &e);
    if (r != CUDA_SUCCESS)
        return r;
    if (!atomic_load_explicit(&e->recorded, memory_order_acquire))
        return CUDA_SUCCESS;
    uint64_t t = atomic_load(&e->done_at);
    if (t > sim_now_ns())
        sim_sleep_until(t);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end)
{
    CHECK_INIT();
    if (ms == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_event *a, *b;
    CUresult r = event_of(start, &a);
    if (r == CUDA_SUCCESS)
        r = event_of(end, &b);
    if (r != CUDA_SUCCESS)
        return r;
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING)
        return CUDA_ERROR_INVALID_HANDLE;
    if (a->ctx != b->ctx)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!atomic_load_explicit(&a->recorded, memory_order_acquire) ||
        !atomic_load_explicit(&b->recorded, memory_order_acquire))
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t ta = atomic_load(&a->done_at), tb = atomic_load(&b->done_at);
    uint64_t now = sim_now_ns();
    if (ta > now || tb > now)
        return CUDA_ERROR_NOT_READY;
    /* Milliseconds, signed: an end recorded before the start reads negative. */
    *ms = (float)((double)((int64_t)(tb - ta)) / 1e6);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent start, CUevent end)
{
    return cuEventElapsedTime(ms, start, end);
}

/* Later work on s starts after the event: on the one FIFO timeline that is the
 * stream's end moving to the event's completion (work queued later starts later
 * anyway; what changes is what synchronizing the stream waits for). */
static CUresult stream_wait_event(CUstream s, CUevent h, unsigned flags, bool ptsz)
{
    CHECK_INIT();
    struct sim_event *e;
    CUresult r = event_of(h, &e);
    if (r != CUDA_SUCCESS)
        return r;
    if (flags & ~1u) /* CU_EVENT_WAIT_DEFAULT / CU_EVENT_WAIT_EXTERNAL */
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    _Atomic uint64_t *end;
    r = resolve_stream(s, ptsz, &c, &end);
    if (r != CUDA_SUCCESS)
        return r;
    if (!atomic_load_explicit(&e->recorded, memory_order_acquire))
        return CUDA_SUCCESS;
    uint64_t t = atomic_load(&e->done_at);
    atomic_max_u64(end, t);
    atomic_max_u64(&c->last_end, t);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamWaitEvent(CUstream s, CUevent h, unsigned int flags)
{
    return stream_wait_event(s, h, flags, false);
}
EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream s, CUevent h, unsigned int flags)
{
    return stream_wait_event(s, h, flags, true);
}
