/*
 * marker.c — completion markers (vgpu_shm.h, VGPU_MARKER_STRIDE).
 *
 * The token bucket (throttle.c) knows what a slice has launched, not what the
 * device has run. A launch whose ticket crosses a multiple of VGPU_MARKER_STRIDE
 * (one launch in ~2 ms of nominal device time, found by one comparison on the hot
 * path) is a marker launch: the launch hook records a begin event on the launch's
 * own stream before it and an end event after it, and pushes {begin, end,
 * ticket_end, cost} onto a small ring per slice device. Later marker paths retire
 * completed entries with cuEventQuery, never blocking:
 *   token_done       raised to ticket_end (atomic max, never above token_spent):
 *                    the slice's work up to there has run;
 *   sampled_ns/_tokens  the launch's span (cuEventElapsedTime) and its cost.
 * From the samples the process keeps an estimate of the device-ns one nominal
 * token (VGPU_TOKEN_WAVE_NS per wave) buys: an EWMA, clipped against outliers.
 *
 * Two uses of that estimate here:
 *   in-flight bound  a marker path whose slice has more than VGPU_INFLIGHT_MS
 *                    (default 50 ms) of estimated device time launched but not done
 *                    sleeps (100 us .. 1 ms steps, never spinning, never
 *                    cuEventSynchronize — it may spin in a real driver) until the
 *                    markers show it drained, at most until its own ring is empty.
 *                    A queue kept short means a rate change (vgpud) or another
 *                    tenant takes effect within the bound, not after whatever the
 *                    driver queue holds (seconds). Approximation: a process sees
 *                    its own markers only, but token_spent and token_done are the
 *                    slice's: in a multi-process slice each process waits on the
 *                    slice's in-flight work as far as its own markers advanced
 *                    token_done — conservative (it may wait longer), never unbounded.
 *   daemonless cost  without VGPU_BUDGET_F_MANAGED nobody corrects a static rate
 *                    (share * 1e9 tokens/s) for what a wave really costs, so a wave
 *                    is charged the learnt device-ns (vgpu_wave_tokens): tokens
 *                    become device-ns and the share holds whatever the kernel's
 *                    real speed. Managed slices keep the nominal cost: vgpud's
 *                    controller scales their rates.
 *
 * A span includes the time the launch queued behind other processes' work (the
 * begin event completes when the stream's previous work did), so under contention
 * the estimate is high; samples above twice the estimate count as twice it.
 *
 * Events belong to the context current at the launch that created them: a ring is
 * bound to one context; a marker launch in another context rebinds an empty ring
 * (its events destroyed, new ones created lazily) and is skipped while the ring
 * still holds markers. A stream that is being captured gets no marker (the events
 * would become nodes of the application's graph). Nothing here allocates on a
 * launch: the events of a ring are made once per binding.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "vgpu_internal.h"

#define RING 16u
#define DEFAULT_INFLIGHT_MS 50ull
#define MIN_POLL_NS 100000ull
#define MAX_POLL_NS 1000000ull
/* A wait on markers that do not complete (a hung kernel) ends after this long:
 * the launch goes on, the next marker path waits again. */
#define MAX_WAIT_NS 2000000000ull
#define Q 16 /* fixed point of the ns-per-token estimate */
#define ONE_Q (1ull << Q)

enum { E_FREE = 0, E_RECORDING, E_READY, E_DEAD };

struct ent {
    CUevent begin, end; /* made once per ring binding */
    _Atomic int state;
    uint64_t ticket_end, cost, nominal;
};

struct ring {
    pthread_mutex_t mu;
    CUcontext ctx;       /* the events' context; NULL: unbound */
    uint32_t head, tail; /* head: next to fill; tail: oldest (under mu) */
    struct ent e[RING];
};

static struct ring rings[VGPU_MAX_DEVICES] = {
    [0 ... VGPU_MAX_DEVICES - 1] = {.mu = PTHREAD_MUTEX_INITIALIZER},
};
_Atomic uint64_t vgpu_wave_tokens = VGPU_TOKEN_WAVE_NS;
static _Atomic uint64_t est_q;  /* device-ns per nominal token << Q; 0: no sample */
static _Atomic int managed = 1; /* nominal costs until the budget was read */
static uint64_t inflight_ns = DEFAULT_INFLIGHT_MS * 1000000ull; /* 0: no bound */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t est_or_nominal(void)
{
    uint64_t q = atomic_load_explicit(&est_q, memory_order_relaxed);
    return q ? q : ONE_Q;
}

static void publish_wave_tokens(void)
{
    uint64_t w = VGPU_TOKEN_WAVE_NS;
    if (!atomic_load_explicit(&managed, memory_order_relaxed)) {
        w = (uint64_t)(((unsigned __int128)est_or_nominal() * VGPU_TOKEN_WAVE_NS) >> Q);
        if (!w)
            w = 1;
    }
    atomic_store_explicit(&vgpu_wave_tokens, w, memory_order_relaxed);
}

void vgpu_marker_set_managed(bool m)
{
    if (atomic_exchange_explicit(&managed, m, memory_order_relaxed) != (int)m)
        publish_wave_tokens();
}

/* One sample: ns of device time for `nominal` nominal tokens. */
static void learn(uint64_t ns, uint64_t nominal)
{
    if (!ns || !nominal)
        return;
    unsigned __int128 s128 = ((unsigned __int128)ns << Q) / nominal;
    /* Absurd (over 1 ms per nominal token: 10 s per wave) or too fine to count. */
    if (s128 == 0 || s128 > (unsigned __int128)1000000 << Q)
        return;
    uint64_t s = (uint64_t)s128;
    uint64_t cur = atomic_load_explicit(&est_q, memory_order_relaxed), next;
    do {
        if (!cur) {
            next = s;
        } else {
            uint64_t x = s > 2 * cur ? 2 * cur : s; /* queued-behind-others spans */
            next = cur - cur / 8 + x / 8;           /* EWMA, weight 1/8 */
            if (!next)
                next = 1;
        }
    } while (!atomic_compare_exchange_weak_explicit(&est_q, &cur, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    publish_wave_tokens();
}

/* ------------------------------------------------------------------ the ring */

static void raise_done(struct vgpu_usage_device *ud, uint64_t to)
{
    uint64_t spent = __atomic_load_n(&ud->token_spent, __ATOMIC_RELAXED);
    if ((int64_t)(to - spent) > 0)
        to = spent; /* repaired counters (vgpud): never claim more than was spent */
    uint64_t cur = __atomic_load_n(&ud->token_done, __ATOMIC_RELAXED);
    while ((int64_t)(to - cur) > 0 &&
           !__atomic_compare_exchange_n(&ud->token_done, &cur, to, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
        ;
}

static float elapsed_ms(CUevent a, CUevent b, CUresult *r)
{
    float ms = 0;
    if (vgpu_real.cuEventElapsedTime)
        *r = vgpu_real.cuEventElapsedTime(&ms, a, b);
    else if (vgpu_real.cuEventElapsedTime_v2)
        *r = vgpu_real.cuEventElapsedTime_v2(&ms, a, b);
    else
        *r = CUDA_ERROR_NOT_FOUND;
    return ms;
}

/* Retires the completed markers at the ring's tail (mu held). Returns the
 * markers still pending. */
static uint32_t retire(int sd, struct ring *rg)
{
    struct vgpu_usage_device *ud = &vgpu_g.usage->dev[sd];
    while (rg->tail != rg->head) {
        struct ent *e = &rg->e[rg->tail % RING];
        int st = atomic_load_explicit(&e->state, memory_order_acquire);
        if (st == E_RECORDING)
            break; /* its launch is still being made: in order, later ones wait */
        if (st == E_READY) {
            CUresult q = vgpu_real.cuEventQuery(e->end);
            if (q == CUDA_ERROR_NOT_READY)
                break;
            if (q == CUDA_SUCCESS) {
                raise_done(ud, e->ticket_end);
                CUresult r;
                float ms = elapsed_ms(e->begin, e->end, &r);
                if (r == CUDA_SUCCESS && ms > 0 && ms < 1e6f) {
                    uint64_t ns = (uint64_t)((double)ms * 1e6);
                    __atomic_fetch_add(&ud->sampled_ns, ns, __ATOMIC_RELAXED);
                    __atomic_fetch_add(&ud->sampled_tokens, e->cost, __ATOMIC_RELAXED);
                    learn(ns, e->nominal);
                }
            }
            /* Any other answer: the events are gone (a context reset); drop it. */
        }
        atomic_store_explicit(&e->state, E_FREE, memory_order_relaxed);
        rg->tail++;
    }
    return rg->head - rg->tail;
}

/* Estimated device-ns of the slice's launched-but-not-done work. */
static uint64_t inflight(int sd)
{
    struct vgpu_usage_device *ud = &vgpu_g.usage->dev[sd];
    uint64_t spent = __atomic_load_n(&ud->token_spent, __ATOMIC_RELAXED);
    uint64_t done = __atomic_load_n(&ud->token_done, __ATOMIC_RELAXED);
    if ((int64_t)(spent - done) <= 0)
        return 0;
    /* Tokens are charged at vgpu_wave_tokens per wave; the estimate is per nominal
     * token (VGPU_TOKEN_WAVE_NS per wave). */
    uint64_t w = atomic_load_explicit(&vgpu_wave_tokens, memory_order_relaxed);
    unsigned __int128 ns =
        (unsigned __int128)(spent - done) * est_or_nominal() * VGPU_TOKEN_WAVE_NS / (w ? w : 1);
    ns >>= Q;
    return ns > UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)ns;
}

/* Retires what completed and, over the in-flight bound, sleeps until the markers
 * show the work drained (at most until this ring is empty). */
static void check(int sd, struct ring *rg)
{
    pthread_mutex_lock(&rg->mu);
    uint32_t pending = retire(sd, rg);
    pthread_mutex_unlock(&rg->mu);
    if (!inflight_ns || !pending)
        return;
    uint64_t over = inflight(sd);
    if (over <= inflight_ns)
        return;
    uint64_t start = now_ns(), t = start;
    while (pending && over > inflight_ns && t - start < MAX_WAIT_NS) {
        uint64_t ns = over - inflight_ns;
        ns = ns < MIN_POLL_NS ? MIN_POLL_NS : ns > MAX_POLL_NS ? MAX_POLL_NS : ns;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ns};
        clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
        pthread_mutex_lock(&rg->mu);
        pending = retire(sd, rg);
        pthread_mutex_unlock(&rg->mu);
        over = inflight(sd);
        t = now_ns();
    }
    __atomic_fetch_add(&vgpu_g.usage->dev[sd].inflight_waited_ns, t - start, __ATOMIC_RELAXED);
}

/* Makes rg's events belong to ctx (mu held, ring empty): the old context's are
 * destroyed, the new ones made as entries are reserved. */
static void bind(struct ring *rg, CUcontext ctx)
{
    for (uint32_t i = 0; i < RING; i++) {
        if (rg->e[i].begin && vgpu_real.cuEventDestroy_v2)
            vgpu_real.cuEventDestroy_v2(rg->e[i].begin);
        if (rg->e[i].end && vgpu_real.cuEventDestroy_v2)
            vgpu_real.cuEventDestroy_v2(rg->e[i].end);
        rg->e[i].begin = rg->e[i].end = NULL;
    }
    rg->ctx = ctx;
}

static bool capturing(CUstream s)
{
    int status = 0;
    if (!vgpu_real.cuStreamIsCapturing)
        return false; /* a driver without stream capture */
    return vgpu_real.cuStreamIsCapturing(s, &status) != CUDA_SUCCESS || status != 0;
}

/* Reserves the ring's next entry for a marker launch in ctx (mu held). */
static struct ent *reserve(struct ring *rg, CUcontext ctx)
{
    if (rg->ctx != ctx) {
        if (rg->head != rg->tail)
            return NULL; /* markers of another context still pending */
        bind(rg, ctx);
    }
    if (rg->head - rg->tail >= RING)
        return NULL; /* full: this launch goes untimed */
    struct ent *e = &rg->e[rg->head % RING];
    /* Events with timing (default flags), made once per binding. */
    if (!e->begin && vgpu_real.cuEventCreate(&e->begin, 0) != CUDA_SUCCESS)
        e->begin = NULL;
    if (!e->end && vgpu_real.cuEventCreate(&e->end, 0) != CUDA_SUCCESS)
        e->end = NULL;
    if (!e->begin || !e->end)
        return NULL;
    atomic_store_explicit(&e->state, E_RECORDING, memory_order_relaxed);
    rg->head++;
    return e;
}

bool vgpu_marker_begin(struct vgpu_mark *mk, CUstream stream)
{
    mk->slot = -1;
    mk->stream = stream;
    if (mk->sd < 0 || mk->sd >= (int)vgpu_g.ndev || !vgpu_real.cuEventQuery)
        return false;
    struct ring *rg = &rings[mk->sd];
    check(mk->sd, rg);
    if (!(mk->flags & VGPU_MARK_RECORD) || !vgpu_real.cuEventCreate || !vgpu_real.cuEventRecord ||
        !vgpu_real.cuCtxGetCurrent || capturing(stream))
        return false;
    CUcontext ctx = NULL;
    if (vgpu_real.cuCtxGetCurrent(&ctx) != CUDA_SUCCESS || !ctx)
        return false;
    pthread_mutex_lock(&rg->mu);
    struct ent *e = reserve(rg, ctx);
    pthread_mutex_unlock(&rg->mu);
    if (!e)
        return false;
    e->ticket_end = mk->ticket_end;
    e->cost = mk->cost;
    e->nominal = mk->nominal;
    mk->slot = (int)(e - rg->e);
    if (vgpu_real.cuEventRecord(e->begin, stream) != CUDA_SUCCESS) {
        atomic_store_explicit(&e->state, E_DEAD, memory_order_release);
        mk->slot = -1;
        return false;
    }
    return true;
}

void vgpu_marker_end(struct vgpu_mark *mk, CUresult launched)
{
    if (mk->slot < 0)
        return;
    struct ent *e = &rings[mk->sd].e[mk->slot];
    int st = E_DEAD;
    if (launched == CUDA_SUCCESS && vgpu_real.cuEventRecord(e->end, mk->stream) == CUDA_SUCCESS)
        st = E_READY;
    atomic_store_explicit(&e->state, st, memory_order_release);
}

void vgpu_marker_ctx_gone(CUcontext ctx)
{
    for (uint32_t sd = 0; sd < VGPU_MAX_DEVICES; sd++) {
        struct ring *rg = &rings[sd];
        pthread_mutex_lock(&rg->mu);
        if (rg->ctx == ctx) {
            /* The driver freed the events with the context: forget them. */
            for (uint32_t i = 0; i < RING; i++) {
                rg->e[i].begin = rg->e[i].end = NULL;
                atomic_store_explicit(&rg->e[i].state, E_FREE, memory_order_relaxed);
            }
            rg->head = rg->tail = 0;
            rg->ctx = NULL;
        }
        pthread_mutex_unlock(&rg->mu);
    }
}

/* ----------------------------------------------------------------- lifecycle */

static void marker_init(int mode)
{
    if (mode != VGPU_MODE_ENFORCE)
        return;
    const char *s = getenv("VGPU_INFLIGHT_MS");
    if (s && *s) {
        char *end;
        unsigned long long ms = strtoull(s, &end, 10);
        if (*end == '\0' && ms <= 600000)
            inflight_ns = ms * 1000000ull;
        else
            VGPU_LOG(VGPU_LOG_WARN,
                     "VGPU_INFLIGHT_MS=%s is not a number of ms (0..600000); "
                     "keeping %llu",
                     s, (unsigned long long)(inflight_ns / 1000000ull));
    }
}

static void marker_fork_child(int mode)
{
    (void)mode;
    /* The parent's contexts (and events) are not valid in the child. */
    for (uint32_t sd = 0; sd < VGPU_MAX_DEVICES; sd++) {
        struct ring *rg = &rings[sd];
        pthread_mutex_init(&rg->mu, NULL);
        for (uint32_t i = 0; i < RING; i++) {
            rg->e[i].begin = rg->e[i].end = NULL;
            atomic_store_explicit(&rg->e[i].state, E_FREE, memory_order_relaxed);
        }
        rg->head = rg->tail = 0;
        rg->ctx = NULL;
    }
}

const struct vgpu_module vgpu_module_marker = {
    .name = "marker",
    .init = marker_init,
    .fork_child = marker_fork_child,
};
